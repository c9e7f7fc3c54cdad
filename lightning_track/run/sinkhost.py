"""The sink host: the format sinks (TensorBoard, SwanLab, ...) in a separate process per RunLogger.

Why a process: TensorBoard's writer (a protobuf per event) and SwanLab's SDK (~200 µs a call) are
Python code. On the writer *thread* they hold the GIL the training thread needs;
in their own process they only use a spare core. ``metrics.jsonl`` (cheap, the source of truth) stays
on the writer thread in the training process.

Which sinks go where: sinks given by **name** (``"tensorboard"``, ``"swanlab"``, any module in
``lightning_track.sinks``) run here; ``Sink`` **instances** passed to ``RunLogger(sinks=...)`` stay on
the writer thread, because their class may live in a module the host cannot import (a test, the user's
``__main__``).

How it is started and talked to: ``subprocess.Popen([python, "-c", <import this package's main>, ...])``
(never multiprocessing: spawn re-imports the user's ``__main__``, fork is unsafe with torch threads),
over a dedicated ``os.pipe()`` pair passed with ``pass_fds``; stdout/stderr are inherited so users still
see SwanLab's messages. Each message is a 4-byte little-endian length and a pickle of one of the types in
:mod:`.messages`: parent -> host ``Open``, ``SetConfig``, ``Write``, ``WriteMedia``, ``Flush``, ``Close``;
host -> parent ``Opened``, ``Failed``, ``Flushed``, ``Closing``, ``Closed``. The host process's side is
:mod:`.hostprocess`.

Closing without waiting: finalize waits only for ``Closing`` (the host's last system sample is in
``system.jsonl``, so ``summary.json`` counts it); the host then closes TensorBoard and SwanLab on its own,
as it would after a SIGKILL, while the training process goes on. :func:`wait_for_hosts`
(``RunLogger.wait()``) and the interpreter's exit (a non-daemon thread per finishing host) wait for it; a
later host on the same folder opens only once the earlier one is done, and at most
:data:`MAX_FINISHING` finish at once.

The host ignores SIGINT/SIGTERM (a Ctrl-C or ``scancel`` reaches the whole process group): its life
follows its parent. When the parent goes away without closing it (SIGKILL, OOM killer), the host sees
end-of-file on its pipe (or a new parent pid), closes every sink cleanly with status ``failed``
(SwanLab: finished as crashed) and exits, so what it received is complete on disk.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import SinkHostError, one_line
from ..folder.media import MediaRecord
from ..folder.records import MetricRecord
from ..sinks.base import Sink, SinkContext
from .messages import (
    Close,
    Closed,
    Closing,
    Failed,
    Flush,
    Flushed,
    MessageReader,
    Open,
    SetConfig,
    ToHost,
    Write,
    WriteMedia,
    send_message,
)

__all__ = ["SinkHost", "MAX_FINISHING", "main", "wait_for_hosts"]


def main(argv: list[str] | None = None) -> int:
    """The host process's entry point (:func:`.hostprocess.main`), under its documented name."""
    from .hostprocess import main as host_main

    return host_main(argv)


_HOST_COMMAND = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "
                 "from lightning_track.run.hostprocess import main; sys.exit(main())")


# -- the parent's side --------------------------------------------------------------------------
MAX_FINISHING = 4
"""Hosts that may finish their files in the background at once: a sweep's next trial waits for the oldest."""

_finishing: list[SinkHost] = []  # hosts closing their sinks after their run's finalize returned, oldest first
_finishing_lock = threading.Lock()


def wait_for_hosts(run_dir: str | os.PathLike[str] | None = None, timeout: float | None = None) -> bool:
    """Wait until the sink hosts still finishing ``run_dir``'s viewer files (every run's when None) are
    done and gone; False when ``timeout`` ran out first."""
    key = None if run_dir is None else os.path.abspath(run_dir)
    deadline = None if timeout is None else time.monotonic() + timeout
    with _finishing_lock:
        hosts = [host for host in _finishing if key is None or host.run_dir == key]
    for host in hosts:
        if not host.wait_finished(None if deadline is None else max(0.0, deadline - time.monotonic())):
            return False
    return True


def _bound_finishing() -> None:
    """At most :data:`MAX_FINISHING` hosts finishing at once (100 short trials in one process)."""
    while True:
        with _finishing_lock:
            if len(_finishing) < MAX_FINISHING:
                return
            oldest = _finishing[0]
        oldest.wait_finished(None)  # bounded by its close_timeout


class SinkHost(Sink):
    """Stands in the writer thread's sink list for the sinks running in the host process.

    Its methods only send messages (the writer thread never waits on the host), except ``sync``
    (an explicit ``RunLogger.flush()``). ``close`` waits only for :class:`Closing` (the system record
    final); the host then finishes the sinks' files on its own while this process goes on, as it would
    after a SIGKILL: :func:`wait_for_hosts` (``RunLogger.wait()``) and the interpreter's exit (a
    non-daemon thread) wait for it, and a later host on the same folder opens only once it is done.
    Errors the host reports are handed to ``report`` (the writer's error slot) by a small reader thread,
    so they surface on the training thread exactly like an in-process sink's error; those after
    :class:`Closing` go to ``on_late_error`` (one line) and stderr.
    """

    name = "sink host"

    def __init__(self, specs: Sequence[str], close_timeout: float = 120.0,
                 system_interval: float = 0.0, on_late_error: Callable[[str], None] | None = None) -> None:
        self.specs = list(specs)
        self.close_timeout = close_timeout
        self.system_interval = system_interval  # the host samples system metrics of its parent (0: off)
        self.on_late_error = on_late_error
        self.run_dir: str | None = None
        self._report: Callable[[str, BaseException], None] | None = None
        self._replies = threading.Condition()
        self._flushed: set[int] = set()
        self._next_token = 0
        self._closing = False
        self._closed = False
        self._gone = False
        self._stopping = False
        self._finisher: threading.Thread | None = None
        _bound_finishing()
        to_child_r, self._out = os.pipe()
        self._in, to_parent_w = os.pipe()
        warm = ",".join(self.specs)
        package_parent = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH", "")) if p)
        try:
            self._proc = subprocess.Popen(
                # Not ``-m``: that puts the working directory first on sys.path, and a lightning_track checkout
                # there would answer with other messages than this process sends. This package comes first.
                [sys.executable, "-c", _HOST_COMMAND, package_parent, "--in", str(to_child_r),
                 "--out", str(to_parent_w), "--warm", warm],
                pass_fds=(to_child_r, to_parent_w), stdin=subprocess.DEVNULL, env=env,
            )
        finally:
            os.close(to_child_r)
            os.close(to_parent_w)
        self._reader = threading.Thread(target=self._read_replies, name="lightning_track-sinkhost-reader",
                                        daemon=True)
        self._reader.start()

    def report_errors_to(self, report: Callable[[str, BaseException], None]) -> None:
        self._report = report

    def _error(self, where: str, exc: BaseException) -> None:
        if self._closing:  # finalize has returned: nobody checks the writer any more
            text = f"lightning_track: {self.run_dir}: {where} failed while finishing its files: {one_line(exc)}"
            print(text, file=sys.stderr)
            if self.on_late_error is not None:
                self.on_late_error(f"{where}: {one_line(exc)}")
        elif self._report is not None:
            self._report(where, exc)

    def _read_replies(self) -> None:
        reader = MessageReader(self._in)
        while True:
            try:
                message = reader.read()
            except Exception as exc:  # noqa: BLE001 - a torn reply: the host is gone
                self._error("sink host", SinkHostError(f"unreadable reply: {exc!r}"))
                message = None
            if message is None:
                break
            with self._replies:
                match message:
                    case Failed(where, text, pickled):
                        self._error(where, pickle.loads(pickled) if pickled is not None else SinkHostError(text))
                    case Flushed(token):
                        self._flushed.add(token)
                    case Closing():
                        self._closing = True
                    case Closed():
                        self._closed = True
                self._replies.notify_all()
        with self._replies:
            self._gone = True
            self._replies.notify_all()
        if not self._closed and (self._closing or not self._stopping):  # also while finishing after finalize
            code = self._proc.wait()
            self._error("sink host", SinkHostError(f"the sink host process exited unexpectedly (code {code})"))

    def _send(self, message: ToHost) -> None:
        try:
            send_message(self._out, message)
        except OSError as exc:  # the host died: the reader thread reports why
            raise SinkHostError(f"the sink host process is gone ({exc.strerror or exc})") from None

    def open(self, context: SinkContext) -> None:
        self.run_dir = os.path.abspath(context.layout.run_dir)
        # One host writes a folder at a time: an earlier run's host (a resumed attempt, logging after fit)
        # may still be finishing its files there. This one has warmed up meanwhile.
        wait_for_hosts(self.run_dir)
        self._send(Open(
            run_dir=self.run_dir, dataset=context.dataset, method=context.method,
            config=context.config, resume_step=context.resume_step, resume_count=context.resume_count,
            sinks=self.specs, system_interval=self.system_interval,
            options=context.options))

    def log_config(self, config: dict[str, Any]) -> None:
        self._send(SetConfig(config))

    def write(self, records: list[MetricRecord]) -> None:
        self._send(Write.of(records))

    def write_media(self, records: list[MediaRecord]) -> None:
        if records:
            self._send(WriteMedia(records))

    def flush(self) -> None:
        self._send(Flush())

    def sync(self, timeout: float = 30.0) -> None:
        """Wait until the host has written and flushed everything sent so far."""
        with self._replies:
            token = self._next_token = self._next_token + 1
        self._send(Flush(token))
        with self._replies:
            self._replies.wait_for(lambda: token in self._flushed or self._gone, timeout)
            self._flushed.discard(token)

    def close(self, status: str, reason: str | None = None) -> None:
        """Send ``Close`` and return once the host's system record is final; the sinks finish in the
        background (:func:`wait_for_hosts`)."""
        try:
            self._send(Close(status, reason))
        except BaseException:
            self._shutdown()
            raise
        with self._replies:
            self._replies.wait_for(lambda: self._closing or self._gone, self.close_timeout)
            self._closing = True  # from here on a host's error is late: finalize no longer checks
        self._stopping = True
        self._close_pipe()
        if not threading.main_thread().is_alive():  # the interpreter is exiting (an atexit finalize): wait here
            self._finish()
            return
        self._finisher = threading.Thread(target=self._finish, name="lightning_track-sinkhost-finish",
                                          daemon=False)  # the interpreter's exit waits for it
        with _finishing_lock:
            _finishing.append(self)
        self._finisher.start()

    def wait_finished(self, timeout: float | None = None) -> bool:
        """Whether the host is done (its files finished, the process reaped), waiting up to ``timeout``."""
        finisher = self._finisher
        if finisher is None:
            return True
        finisher.join(timeout)
        return not finisher.is_alive()

    def _finish(self) -> None:
        try:
            with self._replies:
                done = self._replies.wait_for(lambda: self._closed or self._gone, self.close_timeout)
            if not done:
                print(f"lightning_track: {self.run_dir}: the sink host (pid {self._proc.pid}) has not finished the"
                      f" viewers' files (TensorBoard, SwanLab) in {self.close_timeout:.0f} s; stopping it",
                      file=sys.stderr)
            self._reap()
        finally:
            with _finishing_lock:
                if self in _finishing:
                    _finishing.remove(self)

    def discard(self) -> None:
        """Stop the host without opening anything (ddp_spawn hands the run to the workers)."""
        self._shutdown()

    def _close_pipe(self) -> None:
        try:
            os.close(self._out)  # end-of-file: a host that has not closed its sinks closes them now
        except OSError:
            pass

    def _shutdown(self) -> None:
        self._stopping = True
        self._close_pipe()
        self._reap()

    def _reap(self) -> None:
        try:
            self._proc.wait(self.close_timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reader.join(5.0)
        if not self._reader.is_alive():
            os.close(self._in)
