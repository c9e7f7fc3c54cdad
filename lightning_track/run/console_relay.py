"""The console relay: copies what a process prints to its terminal, unchanged, and cleaned into ``logs.txt``.

Why a relay between the process and its terminal: capturing at the file-descriptor level (C and CUDA
messages, subprocesses, the interpreter's last traceback) means fds 1 and 2 must point at something we
read; what we read must then reach the real terminal at once, byte for byte, so the user sees what they
would see without us. Two places run it:

* its own process beside a training process (see :mod:`.console`; started as ``python -S``, so everything
  it imports is the standard library and this package), so a SIGKILL or an OOM kill of the training
  process loses nothing it printed (the relay reads the pipe to its end), and its work never takes the
  GIL from training.
* a thread in ``lt-run`` (:mod:`lightning_track.launch.runner`), reading the launched command's output.

Two threads: the *reader* copies bytes to the terminal as they arrive (never waiting on the disk);
the *writer* cleans them into lines (:class:`~lightning_track.folder.consolelog.LineCleaner`) and appends
them to the file. A failing file (full disk, no folder) is reported once on the terminal and the
terminal copy goes on; so does the training. Secret values the process knows (its config, command line and
environment: :func:`~lightning_track.redaction.secret_values`) are masked in the file, not on the terminal.
Before the file is known (``lt-run`` learns the run folder later) lines are kept in memory, the newest
:data:`EARLY_LINES`.

Control (only beside a training process): one byte ``s`` on ``--control`` asks for everything read so far
to be on the terminal and in the file; the relay answers one byte on ``--ack``. End-of-file on
``--control`` means the training process let go (or died): the relay then reads its inputs to their end
(other holders: the sink host, dataloader workers), for at most :data:`ORPHAN_GRACE` seconds of silence,
and exits.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import json
import os
import select
import signal
import sys
import termios
import threading
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path

from ..errors import one_line
from ..folder.consolelog import ConsoleLog, LineCleaner
from ..redaction import Masker
from ..vocabulary import ENV_MASK

__all__ = ["Relay", "main", "EARLY_LINES", "ORPHAN_GRACE"]

EARLY_LINES = 100_000  # lines kept in memory while the file is not known yet
ORPHAN_GRACE = 10.0  # seconds of silence after the training process let go before the relay exits
_CHUNK = 1 << 16


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except InterruptedError:
            continue
        except BlockingIOError:
            select.select([], [fd], [], 1.0)


class Relay:
    """Reads ``streams`` (``(input fd, terminal fd or None)`` pairs) until each ends; see the module doc.

    ``log_path`` may be None and given later (:meth:`set_log`). ``pty_sizes``: ``(pty master, terminal fd)``
    pairs whose window size follows the terminal's (a resized terminal resizes what the process sees).
    """

    def __init__(self, streams: list[tuple[int, int | None]], log_path: str | Path | None = None, *,
                 control_fd: int | None = None, ack_fd: int | None = None,
                 pty_sizes: list[tuple[int, int]] = (), update_interval: float = 1.0,
                 secrets: Iterable[str] = ()) -> None:
        self._mask = Masker(secrets)
        self._dest = dict(streams)
        self._cleaners = {fd: LineCleaner(update_interval) for fd, _ in streams}
        self._control, self._ack = control_fd, ack_fd
        self._pty_sizes = list(pty_sizes)
        self._sizes: dict[int, bytes] = {}
        self._chunks: deque[tuple[int, float, bytes | None]] = deque()  # (fd, time, bytes; None = its end)
        self._pending = threading.Condition()
        self._written = 0  # chunks the writer has handled
        self._queued = 0
        self._done = False
        self._early: deque[tuple[float, str]] = deque(maxlen=EARLY_LINES)
        self._early_dropped = 0
        self._log: ConsoleLog | None = None
        self._log_path = Path(log_path) if log_path is not None else None
        self._file_failed = False
        self._reported: set[str] = set()
        self._let_go_at: float | None = None
        self._grace = ORPHAN_GRACE
        self.lines = 0  # lines written to (or kept for) the file
        self._writer = threading.Thread(target=self._write_loop, name="lightning_track-console-writer", daemon=True)
        self._writer.start()

    # -- where the file goes ---------------------------------------------------------------------
    def set_log(self, path: str | Path) -> None:
        """Write to ``path`` from now on, starting with the lines kept until now."""
        with self._pending:
            self._log_path = Path(path)
            self._pending.notify_all()

    def _report(self, what: str, text: str) -> None:
        """One line on this process's stderr (the terminal's), once per kind of problem."""
        if what in self._reported:
            return
        self._reported.add(what)
        try:
            _write_all(2, f"lightning_track: {text}\n".encode("utf-8", "replace"))
        except OSError:
            pass

    def let_go(self, grace: float = ORPHAN_GRACE) -> None:
        """The owner is done (its process exited): end at the inputs' end, or after ``grace`` seconds
        without output (an orphan that holds the pipe open, a background job, is not waited for)."""
        self._grace = grace
        self._let_go_at = time.monotonic()

    def keep_early(self, path: str | Path) -> bool:
        """After the relay ended with lines no file took yet (the run folder was named only at the end,
        or never): write them to ``path``. True if any."""
        if self._writer.is_alive() or self._log is not None or not self._early:
            return False
        self._log_path = Path(path)
        self._store([])
        if self._log is not None:
            self._log.close()
        return self._log is not None

    @property
    def log_path(self) -> Path | None:
        """The file lines go to (None: not known yet)."""
        return self._log_path

    # -- the reader ------------------------------------------------------------------------------
    def run(self) -> None:
        """Relay until every input has ended (and, beside a training process, it let go)."""
        open_fds = set(self._dest)
        last_data = time.monotonic()
        while open_fds:
            watch = list(open_fds) + ([self._control] if self._control is not None else [])
            try:
                ready, _, _ = select.select(watch, [], [], 1.0)
            except InterruptedError:
                continue
            now = time.time()
            if not ready:
                self._follow_sizes()
                if self._let_go_at is not None and time.monotonic() - max(last_data, self._let_go_at) > self._grace:
                    break
                continue
            for fd in ready:
                if fd == self._control:
                    self._on_control(open_fds)
                    continue
                if self._relay_one(fd, now):
                    last_data = time.monotonic()
                else:
                    open_fds.discard(fd)
        for fd in list(self._dest):
            self._queue(fd, time.time(), None)
        self.close()

    def _relay_one(self, fd: int, now: float) -> bool:
        """Copy one chunk; False at the input's end."""
        try:
            data = os.read(fd, _CHUNK)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError as exc:
            if exc.errno != errno.EIO:  # EIO: every writer of a pseudo-terminal closed it (its end)
                self._report("read", f"console capture: reading the output failed ({one_line(exc)})")
            data = b""
        if not data:
            self._queue(fd, now, None)
            return False
        dest = self._dest.get(fd)
        if dest is not None:
            try:
                _write_all(dest, data)
            except OSError as exc:  # the terminal is gone (closed window, `| head`): keep the file going
                self._dest[fd] = None
                if exc.errno not in (errno.EPIPE, errno.EIO, errno.EBADF):
                    self._report("tee", f"console capture: the terminal copy stopped ({one_line(exc)})")
        self._queue(fd, now, data)
        return True

    def _on_control(self, open_fds: set[int]) -> None:
        try:
            command = os.read(self._control, 64)  # type: ignore[arg-type]
        except OSError:
            command = b""
        if not command:  # the training process let go (or died): read on to the inputs' end
            os.close(self._control)  # type: ignore[arg-type]
            self._control = None
            self.let_go()
            return
        if b"s" in command:
            self._drain(open_fds)
            self.wait_written()
            if self._ack is not None:
                try:
                    os.write(self._ack, b"k")
                except OSError:
                    pass

    def _drain(self, open_fds: set[int]) -> None:
        """Relay whatever can be read now, without waiting for more."""
        while open_fds:
            ready, _, _ = select.select(list(open_fds), [], [], 0)
            if not ready:
                return
            for fd in ready:
                if not self._relay_one(fd, time.time()):
                    open_fds.discard(fd)

    def _follow_sizes(self) -> None:
        for master, tty in self._pty_sizes:
            try:
                size = fcntl.ioctl(tty, termios.TIOCGWINSZ, b"\0" * 8)
                if self._sizes.get(master) != size:
                    self._sizes[master] = size
                    fcntl.ioctl(master, termios.TIOCSWINSZ, size)
            except OSError:
                pass

    # -- the writer ------------------------------------------------------------------------------
    def _queue(self, fd: int, now: float, data: bytes | None) -> None:
        with self._pending:
            self._chunks.append((fd, now, data))
            self._queued += 1
            self._pending.notify_all()

    def wait_written(self, timeout: float = 10.0) -> None:
        """Return once every chunk read so far is in the file (or kept for it)."""
        with self._pending:
            target = self._queued
            self._pending.wait_for(lambda: self._written >= target or not self._writer.is_alive(), timeout)

    def _write_loop(self) -> None:
        while True:
            with self._pending:
                self._pending.wait_for(lambda: self._chunks or self._done or
                                       (self._log is None and self._log_path is not None))
                batch = list(self._chunks)
                self._chunks.clear()
                done = self._done and not batch
            lines: list[tuple[float, str]] = []
            for fd, when, data in batch:
                cleaner = self._cleaners[fd]
                texts = cleaner.finish() if data is None else cleaner.feed(data, when)
                lines.extend((when, self._mask(text)) for text in texts)
            self._store(lines)
            with self._pending:
                self._written += len(batch)
                self._pending.notify_all()
            if done:
                return

    def _store(self, lines: list[tuple[float, str]]) -> None:
        self.lines += len(lines)
        if self._log is None and self._log_path is not None and not self._file_failed:
            try:
                self._log = ConsoleLog(self._log_path)
                if self._early_dropped:
                    first = self._early[0][0] if self._early else time.time()
                    self._early.appendleft((first, f"[lightning_track: {self._early_dropped} earlier lines not kept]"))
                lines = list(self._early) + lines
                self._early.clear()
            except OSError as exc:
                self._file_failed = True
                self._report("file", f"console capture: cannot write {self._log_path} ({one_line(exc)}); "
                                     "the terminal still gets everything")
        if self._log is None:
            if not self._file_failed:
                self._early_dropped += max(0, len(self._early) + len(lines) - EARLY_LINES)
                self._early.extend(lines)
            return
        try:
            self._log.write(lines)
        except OSError as exc:  # a full disk: these lines are lost to the file, not to the terminal
            self._report("file", f"console capture: cannot append to {self._log_path} ({one_line(exc)}); "
                                 "the terminal still gets everything")

    def close(self) -> None:
        """Finish the file (after every input ended)."""
        with self._pending:
            self._done = True
            self._pending.notify_all()
        self._writer.join(30.0)
        if self._log is not None:
            self._log.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lightning_track.run.console_relay")
    parser.add_argument("--log", required=True, help="the logs.txt to append to")
    parser.add_argument("--stream", action="append", default=[], metavar="IN:OUT",
                        help="an input fd and the terminal fd it is copied to (OUT -1: none)")
    parser.add_argument("--pty", action="append", default=[], metavar="MASTER:TTY",
                        help="a pseudo-terminal master whose window size follows the terminal TTY")
    parser.add_argument("--control", type=int, required=True)
    parser.add_argument("--ack", type=int, required=True)
    parser.add_argument("--update-interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    # Its life follows the training process's output, not the terminal's signals: a Ctrl+C, a SIGTERM to
    # the process group or a hang-up must not cut the file before the training process's last words.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    streams = []
    for spec in args.stream:
        fd_in, _, fd_out = spec.partition(":")
        streams.append((int(fd_in), None if int(fd_out) < 0 else int(fd_out)))
    ptys = [(int(a), int(b)) for a, _, b in (p.partition(":") for p in args.pty)]
    secrets = json.loads(os.environ.pop(ENV_MASK, "") or "[]")
    relay = Relay(streams, args.log, control_fd=args.control, ack_fd=args.ack, pty_sizes=ptys,
                  update_interval=args.update_interval, secrets=secrets)
    relay.run()
    os._exit(0)  # nothing left to tear down; skip the interpreter's


if __name__ == "__main__":
    sys.exit(main())
