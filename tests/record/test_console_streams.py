"""Which streams the console capture carries, without a process: the stream table (pure), and lt-run's capture
(:class:`LaunchConsole`, a relay thread) fed through the very descriptors a command gets for stdout and stderr.
The slow twins start real commands (test_console_processes.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lightning_track.folder.consolelog import read_console_log
from lightning_track.launch.console import LaunchConsole
from lightning_track.run.console import stream_groups

TTY, FILE_A, FILE_B = (0, 11), (0, 12), (0, 13)


@pytest.mark.parametrize(("out", "err", "groups"), [
    (TTY, TTY, [(1, 2)]),  # one terminal: one channel, so their order is kept
    (FILE_A, FILE_A, [(1, 2)]),  # 2>&1 into one file
    (FILE_A, FILE_B, [(1,), (2,)]),  # separate destinations: each keeps its own
    (None, FILE_B, [(2,)]),  # stdout closed: stderr is still captured
    (FILE_A, None, [(1,)]),
    (None, None, []),
])
def test_the_stream_table(out: tuple[int, int] | None, err: tuple[int, int] | None, groups: list) -> None:
    assert stream_groups(out, err) == groups


def capture(tmp_path: Path) -> tuple[LaunchConsole, int, int]:
    """lt-run's capture started, and copies of the descriptors a command gets as its stdout and stderr."""
    console = LaunchConsole()
    given = console.child_fds()
    assert given["stdout"] is not None and given["stderr"] is not None
    out_fd, err_fd = os.dup(given["stdout"]), os.dup(given["stderr"])  # what the command would write to
    console.started()
    return console, out_fd, err_fd


def finish(console: LaunchConsole, tmp_path: Path, *fds: int) -> list[str]:
    for fd in fds:
        os.close(fd)
    console.set_log(tmp_path / "logs.txt")
    written = console.finish(tmp_path / "fallback.logs.txt", grace=0.2)
    assert written == tmp_path / "logs.txt"
    return [text for _, text in read_console_log(written)]


def test_lt_run_captures_stderr_and_stdout_into_the_file_and_each_onto_its_own_stream(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    console, out_fd, err_fd = capture(tmp_path)  # under capfd, fds 1 and 2 are two files: two channels
    os.write(out_fd, b"epoch 1 done\n")
    os.write(err_fd, b"Traceback (most recent call last):\nRuntimeError: boom\n")
    lines = finish(console, tmp_path, out_fd, err_fd)
    assert sorted(lines) == sorted(["epoch 1 done", "Traceback (most recent call last):", "RuntimeError: boom"])
    out, err = capfd.readouterr()
    assert out == "epoch 1 done\n" and err == "Traceback (most recent call last):\nRuntimeError: boom\n"


def test_stderr_sharing_stdouts_file_is_captured_in_order(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    saved = os.dup(2)
    os.dup2(1, 2)  # 2>&1: one destination, so one channel carries both
    try:
        console, out_fd, err_fd = capture(tmp_path)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    os.write(out_fd, b"one\n")
    os.write(err_fd, b"two (stderr)\n")
    os.write(out_fd, b"three\n")
    assert finish(console, tmp_path, out_fd, err_fd) == ["one", "two (stderr)", "three"]
    assert capfd.readouterr().out == "one\ntwo (stderr)\nthree\n"
