"""logs.txt's lines: cleaning (ANSI, carriage returns, cut lines), the time prefix and secret masking, without
processes."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from lightning_track.folder.consolelog import CUT_MARK, ConsoleLog, LineCleaner, read_console_log, render_line
from lightning_track.run.console_relay import Relay
from lightning_track.vocabulary import parse_iso_time


def feed_all(cleaner: LineCleaner, chunks: list[tuple[float, bytes]]) -> list[str]:
    out: list[str] = []
    for when, data in chunks:
        out += cleaner.feed(data, when)
    return out


def test_plain_lines_pass_unchanged_and_partial_lines_wait() -> None:
    cleaner = LineCleaner()
    assert cleaner.feed(b"one\ntw", 0.0) == ["one"]
    assert cleaner.feed(b"o\nthree", 0.1) == ["two"]
    assert cleaner.feed(b"\n\n", 0.2) == ["three", ""]
    assert cleaner.finish() == []


def test_ansi_colours_and_cursor_moves_are_stripped_also_across_chunks() -> None:
    cleaner = LineCleaner()
    text = b"\x1b[1;32mgreen\x1b[0m \x1b]0;title\x07plain \x1b[2Kcleared\n"
    out = []
    for i in range(len(text)):  # one byte at a time: every sequence is cut somewhere
        out += cleaner.feed(text[i:i + 1], 0.0)
    assert out == ["green plain cleared"]


def test_utf8_split_across_chunks_is_kept() -> None:
    cleaner = LineCleaner()
    data = "température ✓\n".encode()
    assert cleaner.feed(data[:3], 0) + cleaner.feed(data[3:], 0) == ["température ✓"]


def test_carriage_return_bar_collapses_to_one_update_a_second_and_its_last_state() -> None:
    cleaner = LineCleaner(update_interval=1.0)
    chunks = [(i * 0.1, f"\rstep {i:3d}/100 |{'#' * (i // 10):10s}|".encode()) for i in range(100)]
    out = feed_all(cleaner, chunks)
    out += cleaner.feed(b"\n", 10.0)
    # 10 s of updates: about one state a second, then the final state once
    assert 8 <= len(out) <= 11, out
    assert out[-1] == "step  99/100 |######### |"
    assert all(line.startswith("step ") for line in out)
    assert len(set(out)) == len(out)


def test_a_short_bar_is_one_line() -> None:
    cleaner = LineCleaner()
    out = feed_all(cleaner, [(0.009 * i, f"\r{i}%".encode()) for i in range(101)])
    assert out == [] and cleaner.feed(b"\n", 1.02) == ["100%"]


def test_render_line_is_what_a_terminal_shows() -> None:
    assert render_line("abcdef\rXY") == "XYcdef"
    assert render_line("done\r\n".rstrip("\n")) == "done"
    assert render_line("no carriage return  ") == "no carriage return  "


def test_a_line_cut_by_the_end_of_the_output_is_marked() -> None:
    cleaner = LineCleaner()
    assert cleaner.feed(b"whole\nhalf a li", 0.0) == ["whole"]
    assert cleaner.finish() == ["half a li" + CUT_MARK]


def test_runaway_line_is_split_not_kept_forever() -> None:
    cleaner = LineCleaner()
    out = cleaner.feed(b"x" * 200_000, 0.0)
    assert out and all(len(line) <= 1 << 16 for line in out)


def test_console_log_prefixes_each_line_with_its_time_and_reads_back(tmp_path: Path) -> None:
    log = ConsoleLog(tmp_path / "logs.txt")
    log.write([(1_800_000_000.25, "first"), (1_800_000_001.5, "second  with  spaces")])
    log.close()
    raw = (tmp_path / "logs.txt").read_text().splitlines()
    stamp, _, text = raw[0].partition(" ")
    assert parse_iso_time(stamp) == pytest.approx(1_800_000_000.25) and text == "first"
    assert "+" in stamp or "-" in stamp[19:]  # aware: the UTC offset is there
    assert list(read_console_log(tmp_path / "logs.txt")) == [
        (pytest.approx(1_800_000_000.25), "first"), (pytest.approx(1_800_000_001.5), "second  with  spaces")]


def test_the_relay_masks_known_secrets_in_the_file_and_passes_the_terminal_bytes_unchanged(tmp_path: Path) -> None:
    """A token split across two reads is still one line, masked whole; the terminal copy is byte for byte."""
    data_r, data_w = os.pipe()
    term_r, term_w = os.pipe()
    relay = Relay([(data_r, term_w)], tmp_path / "logs.txt", secrets=["hf_abcdef123456", "sk-xyz7"])
    thread = threading.Thread(target=relay.run)
    thread.start()
    os.write(data_w, b"login hf_abcdef")
    os.write(data_w, b"123456 ok, key sk-xyz7; max_new_tokens 64\n")
    os.close(data_w)
    thread.join(10)
    os.close(term_w)
    assert os.read(term_r, 1 << 16) == b"login hf_abcdef123456 ok, key sk-xyz7; max_new_tokens 64\n"
    assert [text for _, text in read_console_log(tmp_path / "logs.txt")] == [
        "login ***REDACTED*** ok, key ***REDACTED***; max_new_tokens 64"]


def test_the_relay_process_runs_without_site_packages_on_the_standard_library_and_this_package(tmp_path: Path) -> None:
    """The relay starts beside every run's training as ``python -S`` (its interpreter start is all it costs there):
    started exactly as a capture starts it, it relays a line to its terminal and into logs.txt, and nothing it
    imports comes from outside the standard library and lightning_track."""
    import subprocess
    import sys

    from lightning_track.run import console

    data_r, data_w = os.pipe()
    control_r, control_w = os.pipe()
    ack_r, ack_w = os.pipe()
    package = str(Path(console.__file__).resolve().parents[2])
    report = ("import atexit, os, sys; atexit.register(lambda: None); "
              "_exit = os._exit; "
              "os._exit = lambda code: (print('NOT-STDLIB', sorted({m.split('.')[0] for m in sys.modules} "
              "- set(sys.stdlib_module_names) - {'lightning_track', '__main__'}), file=sys.stderr, flush=True), "
              "_exit(code)); ")
    relay = subprocess.Popen([sys.executable, "-S", "-c", report + console._RELAY_COMMAND, package,
                              "--log", str(tmp_path / "logs.txt"), "--control", str(control_r), "--ack", str(ack_w),
                              "--stream", f"{data_r}:1"], pass_fds=(data_r, control_r, ack_w),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=""))
    for fd in (data_r, control_r, ack_w):
        os.close(fd)
    os.write(data_w, b"a line through the relay\n")
    os.close(data_w)
    os.close(control_w)
    out, err = relay.communicate(timeout=60)
    os.close(ack_r)
    assert relay.returncode == 0, err
    assert out == b"a line through the relay\n"
    assert [text for _, text in read_console_log(tmp_path / "logs.txt")] == ["a line through the relay"]
    assert "NOT-STDLIB []" in err.decode(), err
