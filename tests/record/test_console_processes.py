"""Console capture in real processes: logs.txt line by line after a SIGKILL, a crash and a normal exit;
a pseudo-terminal (isatty, live output); separate destinations; a dead relay; a full disk; torchrun ranks."""

from __future__ import annotations

import glob
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lightning_track.folder.consolelog import CUT_MARK, read_console_log

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).with_name("console_script.py")
ANSI = re.compile("\x1b")


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("LIGHTNING_TRACK_")}


def run_script(root: Path, end: str, *, merged: bool = True) -> subprocess.CompletedProcess:
    """Run the script; ``merged``: stderr into the same pipe as stdout (``2>&1``), else its own."""
    return subprocess.run([sys.executable, str(SCRIPT), str(root), end], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT if merged else subprocess.PIPE, text=True, timeout=240, env=env())


def logs_of(root: Path, name: str = "logs.txt", *, until: str | None = None, timeout: float = 30.0) -> list[str]:
    """The text of each line of the run's console log (waiting for ``until`` to appear: the relay
    outlives a killed process by the time it needs to read the pipe to its end)."""
    deadline = time.monotonic() + timeout
    while True:
        found = glob.glob(str(root / "*" / name))
        lines = [text for _, text in read_console_log(found[0])] if found else []
        if until is None or any(until in line for line in lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def ours(lines: list[str]) -> list[str]:
    """The lines the script printed itself (Lightning's own messages left out)."""
    keep = ("isatty=", "python-", "os-write", "c-level", "bar ", "LIVE", "half a line", "after the fit", "last words")
    return [line for line in lines if line.startswith(keep)]


def check_common(lines: list[str], merged: bool = True) -> None:
    mine = ours(lines)
    expected = ["isatty=False False", "python-print line", "python-stderr line", "os-write line",
                "c-level child stdout", "c-level child stderr"]
    if merged:  # one destination, one pipe: stdout and stderr keep their order
        assert mine[:6] == expected, mine
    else:  # two destinations: each stream keeps its own order
        assert sorted(mine[:6]) == sorted(expected), mine
        assert [m for m in mine[:6] if "stderr" not in m] == [e for e in expected if "stderr" not in e]
    bar = [line for line in mine if line.startswith("bar ")]
    # 2.5 s of updates at 10 a second: one state a second and the last one, never 26 lines
    assert 2 <= len(bar) <= 4 and bar[-1] == "bar 25/25 |" + "#" * 25 + "|", bar
    assert not any(ANSI.search(line) for line in lines)  # colours stripped in the file
    assert any(line.startswith("LIVE ") for line in mine)


def test_sigkill_keeps_every_line_and_marks_the_cut_one(tmp_path: Path) -> None:
    done = run_script(tmp_path, "kill")
    assert done.returncode == -9, done.stdout[-2000:]
    lines = logs_of(tmp_path, until=CUT_MARK)
    check_common(lines)
    assert lines[-1] == "half a line before SIGKILL" + CUT_MARK  # never written as if whole
    assert "before-the-run: not captured by a RunLogger" not in lines  # printed before the run started
    # each line carries the time it was printed: the LIVE line's own clock agrees within a second
    (found,) = glob.glob(str(tmp_path / "*" / "logs.txt"))
    when, text = next((w, t) for w, t in read_console_log(found) if t.startswith("LIVE "))
    assert abs(when - float(text.split()[1])) < 1.0


def test_crash_traceback_and_normal_exit_are_kept_to_the_last_line(tmp_path: Path) -> None:
    crashed = run_script(tmp_path / "crash", "crash")
    assert crashed.returncode == 1
    lines = logs_of(tmp_path / "crash")  # complete when the process has exited: it waited for the relay
    check_common(lines)
    assert lines[-1] == "RuntimeError: boom inside the fit" and "Traceback (most recent call last):" in lines

    started = time.monotonic()
    finished = run_script(tmp_path / "exit", "exit")
    wall = time.monotonic() - started
    assert finished.returncode == 0, finished.stdout[-2000:]
    lines = logs_of(tmp_path / "exit")
    check_common(lines)
    assert ours(lines)[-2:] == ["after the fit", "last words without a newline" + CUT_MARK]
    assert wall < 60
    # the terminal got the same, unchanged: colours and carriage returns included
    assert ("python-print line\npython-stderr line\nos-write line\nc-level child stdout\nc-level child stderr\n"
            in finished.stdout)
    assert "\x1b[32mbar 24/25\x1b[0m" in finished.stdout
    assert finished.stdout.endswith("after the fit\nlast words without a newline")


def test_separate_destinations_keep_their_own_stream(tmp_path: Path) -> None:
    done = run_script(tmp_path, "exit", merged=False)
    assert "python-stderr line" not in done.stdout and "python-print line" not in done.stderr
    assert "c-level child stderr" in done.stderr and "c-level child stdout" in done.stdout
    assert "python-print line\nos-write line\nc-level child stdout\n" in done.stdout
    check_common(logs_of(tmp_path), merged=False)


def test_pseudo_terminal_stays_a_terminal_and_output_is_live(tmp_path: Path) -> None:
    pid, master = pty.fork()
    if pid == 0:  # the child: the script on a terminal
        os.execve(sys.executable, [sys.executable, str(SCRIPT), str(tmp_path), "exit"], env())
    received, arrivals = b"", {}
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 60)
            if not ready:
                break
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            received += data
            for match in re.finditer(rb"LIVE (\d+\.\d+)", received):
                arrivals.setdefault(match.group(1), time.time())
    finally:
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, received[-2000:]
    text = received.decode(errors="replace")
    assert "isatty=True True" in text  # what the script saw
    assert "\x1b[32mbar 25/25\x1b[0m" in text  # the bar rendered with its colours
    (printed, arrived), = arrivals.items()
    assert arrived - float(printed) < 0.5  # live: not held back until a buffer fills
    lines = logs_of(tmp_path)
    assert "isatty=True True" in lines and "python-print line" in lines
    bar = [line for line in lines if line.startswith("bar ")]
    assert 2 <= len(bar) <= 4 and not any(ANSI.search(line) for line in lines)


def test_a_dead_relay_never_stops_training_or_the_terminal(tmp_path: Path) -> None:
    done = run_script(tmp_path, "relay-dies", merged=False)
    assert done.returncode == 0, done.stderr[-2000:]
    printed = [line for line in done.stdout.splitlines() if line.startswith("after the relay died")]
    assert len(printed) == 40_000  # every line reached the terminal, in order
    assert printed == sorted(printed)
    assert "relay-dies done" in done.stdout and "after the fit" in done.stdout
    assert done.stderr.count("console capture into") == 1  # said once
    assert "stopped: its relay process exited" in done.stderr


def test_full_disk_keeps_the_terminal_whole_lines_and_says_so_once(small_disk, tmp_path: Path) -> None:
    mount, prefix = small_disk
    copy = tmp_path / "copy"
    check = (f"import subprocess, sys, shutil, glob\n"
             f"done = subprocess.run([sys.executable, {str(SCRIPT)!r}, {str(mount / 'runs')!r}, 'flood'],"
             f" capture_output=True, text=True)\n"
             f"sys.stdout.write(done.stdout); sys.stderr.write(done.stderr)\n"
             f"shutil.copy(glob.glob({str(mount / 'runs')!r} + '/*/logs.txt')[0], {str(copy)!r})\n"
             f"sys.exit(done.returncode)\n")
    done = subprocess.run([*prefix, sys.executable, "-c", check], capture_output=True, text=True, timeout=240,
                          env=env())
    assert done.returncode == 0, done.stderr[-3000:]
    assert sum(line.startswith("flood ") for line in done.stdout.splitlines()) == 40_000  # the terminal: all
    assert done.stderr.count("lightning_track: console capture: cannot append to") == 1
    assert "No space left on device" in done.stderr
    data = copy.read_bytes()
    assert data.endswith(b"\n")  # whole lines only
    lines = [text for _, text in read_console_log(copy)]
    floods = [line for line in lines if line.startswith("flood ")]
    assert floods and len(floods) < 40_000 and all(len(line) == len(floods[0]) for line in floods)


def test_torchrun_keeps_every_ranks_output_beside_rank_zeros(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(SCRIPT), str(tmp_path), "ddp"], capture_output=True, text=True, timeout=240, env=env())
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rank0, rank1 = logs_of(tmp_path), logs_of(tmp_path, "logs.rank1.txt")
    assert "hello from rank 0" in rank0 and "rank 0 c-level child" in rank0
    assert "hello from rank 1" in rank1 and "rank 1 c-level child" in rank1
    assert "hello from rank 1" not in rank0 and "hello from rank 0" not in rank1
    assert "hello from rank 0" in done.stdout and "hello from rank 1" in done.stdout  # the terminal: both


# -- lt-run: the command's console from its first byte --------------------------------------------------
def lt_run(tmp_path: Path, *cmd: str, exp_id: str, merged: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lightning_track.cli.run", "--exp-id", exp_id, "--signals-dir",
                           str(tmp_path / "signals"), "--", *cmd], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT if merged else subprocess.PIPE, text=True, timeout=240, env=env())


def test_lt_run_keeps_what_was_printed_before_the_run_folder_existed_once(tmp_path: Path) -> None:
    done = lt_run(tmp_path, sys.executable, str(SCRIPT), str(tmp_path / "runs"), "crash", exp_id="early")
    assert done.returncode == 1, done.stdout[-3000:]
    lines = logs_of(tmp_path / "runs")
    assert lines[0] == "before-the-run: not captured by a RunLogger"  # printed before any RunLogger existed
    check_common(lines)
    assert lines[-1] == "RuntimeError: boom inside the fit"
    assert len(lines) == len(set(lines)) or lines.count("python-print line") == 1  # not captured twice
    assert lines.count("python-print line") == 1 and lines.count("c-level child stdout") == 1
    assert "before-the-run: not captured by a RunLogger" in done.stdout and "python-print line" in done.stdout
    # the terminal: the command's output first, then lt-run's verdict
    assert done.stdout.index("RuntimeError: boom inside the fit") < done.stdout.index("lt-run: exit code 1")


def test_lt_run_keeps_the_output_of_a_command_that_never_made_a_run(tmp_path: Path) -> None:
    done = lt_run(tmp_path, sys.executable, "-c", "print('about to fail'); import no_such_module_here",
                  exp_id="importfail")
    assert done.returncode == 1
    kept = tmp_path / "signals" / "importfail.logs.txt"
    lines = [text for _, text in read_console_log(kept)]
    assert lines[0] == "about to fail" and lines[-1] == "ModuleNotFoundError: No module named 'no_such_module_here'"
    assert "console output of the command kept in" in done.stdout
