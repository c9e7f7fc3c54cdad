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
host -> parent ``Opened``, ``Failed``, ``Flushed``, ``Closed``.

The host ignores SIGINT/SIGTERM (a Ctrl-C or ``scancel`` reaches the whole process group): its life
follows its parent. When the parent goes away without closing it (SIGKILL, OOM killer), the host sees
end-of-file on its pipe (or a new parent pid), closes every sink cleanly with status ``failed``
(SwanLab: finished as crashed) and exits, so what it received is complete on disk.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pickle
import queue
import select
import signal
import struct
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
from ..vocabulary import FAILED
from .messages import (
    Close,
    Closed,
    Closing,
    Failed,
    Flush,
    Flushed,
    Open,
    Opened,
    SetConfig,
    ToHost,
    ToParent,
    Write,
    WriteMedia,
)
from .system import start_system_recorder

__all__ = ["SinkHost", "MAX_FINISHING", "main", "wait_for_hosts"]

_LENGTH = struct.Struct("<I")
_HOST_COMMAND = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "
                 "from lightning_track.run.sinkhost import main; sys.exit(main())")



def send_message(fd: int, message: ToHost | ToParent) -> None:
    """Write one framed message (4-byte length + pickle) in full."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_LENGTH.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


class MessageReader:
    """Reads framed messages from a pipe; ``None`` at end-of-file (or when ``alive()`` turns false)."""

    def __init__(self, fd: int, alive: Callable[[], bool] | None = None) -> None:
        self.fd, self.alive, self._buffer = fd, alive, bytearray()

    def _fill(self, size: int) -> bool:
        while len(self._buffer) < size:
            if self.alive is not None:
                ready, _, _ = select.select([self.fd], [], [], 1.0)
                if not ready:
                    if not self.alive():
                        return False
                    continue
            chunk = os.read(self.fd, 1 << 16)
            if not chunk:
                return False
            self._buffer += chunk
        return True

    def read(self) -> Any:
        if not self._fill(_LENGTH.size):
            return None
        (size,) = _LENGTH.unpack_from(self._buffer)
        if not self._fill(_LENGTH.size + size):
            return None
        data = bytes(self._buffer[_LENGTH.size:_LENGTH.size + size])
        del self._buffer[:_LENGTH.size + size]
        return pickle.loads(data)


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


# -- the host process ---------------------------------------------------------------------------
class _Host:
    """Two lanes: the main thread reads messages and runs the system record (so ``Close`` is answered
    with :class:`Closing` at once, even while SwanLab is still being imported); a worker thread imports
    the sinks' libraries, then feeds the sinks every message in order."""

    def __init__(self, out_fd: int, warm: str) -> None:
        self.out_fd = out_fd
        self.sinks: list[Sink] = []
        self.opened = False
        self.last_step: int | None = None
        self.system: Any = None
        self._replying = threading.Lock()  # both threads reply; one framed message at a time
        self._work: queue.SimpleQueue[ToHost] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._sink_lane, args=(warm,), name="lightning_track-sinks",
                                        daemon=True)
        self._worker.start()

    def reply(self, message: ToParent) -> None:
        try:
            with self._replying:
                send_message(self.out_fd, message)
        except OSError:
            pass  # the parent is gone; keep writing the sinks regardless

    # -- the main thread: messages in, the system record ------------------------------------------
    def handle(self, message: ToHost) -> bool:
        """Act on one message; False once the run is closed (the sinks finish on the worker)."""
        match message:
            case Close():
                self.stop_system()  # its last sample is queued before the Close
                self.reply(Closing())
                self._work.put(message)
                return False
            case Open():
                self.opened = True
                self._work.put(message)  # before the system record's first sample
                self.start_system(message)
            case Write(rows):
                if rows:
                    self.last_step = max(self.last_step or 0, *(step for step, _, _ in rows))
                self._work.put(message)
            case SetConfig() | WriteMedia() | Flush():
                self._work.put(message)
            case _:
                raise SinkHostError(f"the sink host got a message of no known kind: {message!r}")
        return True

    def start_system(self, message: Open) -> None:
        if not message.system_interval:
            return
        from ..folder.layout import RunLayout

        self.system = start_system_recorder(
            RunLayout(message.run_dir), message.system_interval, pid=os.getppid(),
            attempt=message.resume_count + 1, step=lambda: self.last_step,
            on_record=lambda record: self._work.put(Write.of([record])),
            on_error=lambda text: print(f"lightning_track: {text}", file=sys.stderr))

    def stop_system(self) -> None:
        if self.system is not None:
            system, self.system = self.system, None
            system.close()

    def finish(self, status: str | None = None, reason: str | None = None) -> None:
        """Wait for the sinks to close; ``status``: close them first (the parent went away without Close)."""
        if status is not None:
            self.stop_system()
            self._work.put(Close(status, reason))
        self._worker.join()

    # -- the worker thread: the sinks ---------------------------------------------------------------
    def _sink_lane(self, warm: str) -> None:
        _warm_up(warm)
        while True:
            message = self._work.get()
            try:
                if not self._sink_message(message):
                    return
            except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
                self.reply(Failed.of("sink host", exc))

    def call_all(self, what: str, call: Callable[[Sink], object]) -> None:
        """``call`` on every sink; a sink that fails is reported (``what`` it was doing) and dropped."""
        for sink in list(self.sinks):
            try:
                call(sink)
            except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
                self.reply(Failed.of(f"sink {sink.name!r} {what}", exc))
                self.sinks.remove(sink)

    def open_sinks(self, message: Open) -> None:
        from ..folder.layout import RunLayout
        from ..sinks import load_sink

        context = SinkContext(layout=RunLayout(message.run_dir), dataset=message.dataset, method=message.method,
                              config=message.config, resume_step=message.resume_step,
                              resume_count=message.resume_count, options=message.options)
        for name in message.sinks:
            try:
                sink = load_sink(name)
                sink.open(context)
            except Exception as exc:  # noqa: BLE001
                self.reply(Failed.of(f"opening sink {name!r}", exc))
                continue
            self.sinks.append(sink)
        self.reply(Opened())

    def _sink_message(self, message: ToHost) -> bool:
        match message:
            case Open():
                self.open_sinks(message)
            case SetConfig(config):
                self.call_all("log_config", lambda sink: sink.log_config(dict(config)))
            case Write():
                records = message.records()
                self.call_all("write", lambda sink: sink.write(records))
            case WriteMedia(records):
                self.call_all("write_media", lambda sink: sink.write_media(records))
            case Flush(token):
                self.call_all("flush", lambda sink: sink.flush())
                if token is not None:
                    self.reply(Flushed(token))
            case Close(status, reason):
                self.call_all("close_with", lambda sink: sink.close_with(status, reason))
                self.sinks = []
                self.reply(Closed())
                return False
        return True


def _warm_up(names: str) -> None:
    """Import the sinks' libraries now, while the training process has not logged yet."""
    for name in filter(None, names.split(",")):
        try:
            module = importlib.import_module(f"lightning_track.sinks.{name}")
            module.SINK.warm_up()
        except Exception:  # noqa: BLE001 - the same failure is reported properly when the sink opens
            pass


class _TolerantStream:
    """stdout/stderr that never raise: the host shares the training process's terminal or pipe, which
    may be gone (``python train.py | head``, a closed terminal) exactly when the host must finish its
    files. A failed print must not make a sink's close fail."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except (OSError, ValueError):
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except (OSError, ValueError):
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main(argv: list[str] | None = None) -> int:
    sys.stdout = _TolerantStream(sys.stdout)  # before SwanLab is imported and binds its console
    sys.stderr = _TolerantStream(sys.stderr)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The main thread answers Close while the worker may still be importing SwanLab (pure Python, holding
    # the GIL): a short switch interval lets its system sample's many small reads through in milliseconds.
    sys.setswitchinterval(0.0005)
    try:
        os.nice(5)  # background work: where cores are contended, the training process goes first
    except OSError:
        pass
    parser = argparse.ArgumentParser(prog="python -m lightning_track.run.sinkhost")
    parser.add_argument("--in", dest="in_fd", type=int, required=True)
    parser.add_argument("--out", dest="out_fd", type=int, required=True)
    parser.add_argument("--warm", default="")
    args = parser.parse_args(argv)
    parent = os.getppid()
    reader = MessageReader(args.in_fd, alive=lambda: os.getppid() == parent)
    host = _Host(args.out_fd, args.warm)
    while True:
        message = reader.read()
        if message is None:  # the parent died without closing: finish what was received
            if host.opened:
                host.finish(FAILED, "the training process ended without closing the run (killed?)")
            break  # and skip the interpreter's atexit hooks: SwanLab's would mark an unclosed run finished
        if not host.handle(message):
            host.finish()  # whether or not the parent is still there: the files are finished either way
            break
    # Every sink is closed and the parent told: skip the interpreter's slow teardown (SwanLab's
    # atexit hooks have nothing left to do), after the last messages on stdout/stderr are out.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
