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

A sink with work for after the run (``after_close``: a tracker's last export, which must see the final
summary.json, metrics.csv and plots) keeps the host alive past ``Closed``: the parent's finalize writes
those files, then :meth:`SinkHost.release` closes the pipe, and the host runs ``after_run`` and exits. A
parent that dies releases it the same way (end-of-file).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import SinkHostError
from ..folder.media import MediaRecord
from ..folder.records import MetricRecord
from ..sinks.base import Sink, SinkContext
from ..vocabulary import FAILED
from .messages import (
    Close,
    Closed,
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

__all__ = ["SinkHost", "main"]

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
class SinkHost(Sink):
    """Stands in the writer thread's sink list for the sinks running in the host process.

    Its methods only send messages (the writer thread never waits on the host), except ``sync``
    (an explicit ``RunLogger.flush()``) and ``close``, which wait for the host's reply. Errors the
    host reports are handed to ``report`` (the writer's error slot) by a small reader thread, so they
    surface on the training thread exactly like an in-process sink's error.
    """

    name = "sink host"

    def __init__(self, specs: Sequence[str], close_timeout: float = 120.0,
                 system_interval: float = 0.0) -> None:
        self.specs = list(specs)
        self.close_timeout = close_timeout
        self.system_interval = system_interval  # the host samples system metrics of its parent (0: off)
        self._report: Callable[[str, BaseException], None] | None = None
        self._replies = threading.Condition()
        self._flushed: set[int] = set()
        self._next_token = 0
        self._closed = False
        self._lingering = False  # the host waits for release() to run its sinks' after_run
        self._released = False
        self._gone = False
        self._stopping = False
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
        if self._report is not None:
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
                    case Closed(lingering):
                        self._closed, self._lingering = True, lingering
                self._replies.notify_all()
        with self._replies:
            self._gone = True
            self._replies.notify_all()
        if not self._closed and not self._stopping:
            code = self._proc.wait()
            self._error("sink host", SinkHostError(f"the sink host process exited unexpectedly (code {code})"))

    def _send(self, message: ToHost) -> None:
        try:
            send_message(self._out, message)
        except OSError as exc:  # the host died: the reader thread reports why
            raise SinkHostError(f"the sink host process is gone ({exc.strerror or exc})") from None

    def open(self, context: SinkContext) -> None:
        self._send(Open(
            run_dir=os.path.abspath(context.layout.run_dir), dataset=context.dataset, method=context.method,
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
        try:
            self._send(Close(status, reason))
            with self._replies:
                self._replies.wait_for(lambda: self._closed or self._gone, self.close_timeout)
        finally:
            self._shutdown()

    def discard(self) -> None:
        """Stop the host without opening anything (ddp_spawn hands the run to the workers)."""
        self._shutdown()

    @property
    def lingering(self) -> bool:
        """Whether the closed host waits for :meth:`release` (a sink's work after the run)."""
        return self._lingering and not self._released

    def release(self, timeout: float | None = None) -> None:
        """The run's files are final: let a lingering host run its sinks' ``after_run``, and wait for it
        to exit (up to ``timeout`` s, default ``close_timeout``; then it is killed)."""
        if self._released:
            return
        self._released = True
        try:
            os.close(self._out)
        except OSError:
            pass
        self._reap(self.close_timeout if timeout is None else timeout)

    def _shutdown(self) -> None:
        self._stopping = True
        if self._lingering and self._closed:
            return  # the pipe stays open until release()
        self._released = True
        try:
            os.close(self._out)  # end-of-file: a host that has not closed its sinks closes them now
        except OSError:
            pass
        if self._closed:
            # Everything is on disk; the host is only exiting. Reap it without making finalize wait.
            threading.Thread(target=self._reap, name="lightning_track-sinkhost-reaper", daemon=True).start()
        else:
            self._reap()

    def _reap(self, timeout: float | None = None) -> None:
        try:
            self._proc.wait(self.close_timeout if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reader.join(5.0)
        if not self._reader.is_alive():
            os.close(self._in)


# -- the host process ---------------------------------------------------------------------------
class _Host:
    def __init__(self, out_fd: int) -> None:
        self.out_fd = out_fd
        self.sinks: list[Sink] = []
        self.after: list[Sink] = []  # closed sinks with work for after the run
        self.opened = False
        self.lock = threading.Lock()  # the sinks are called from the message loop and the system sampler
        self.last_step: int | None = None
        self.system: Any = None

    def reply(self, message: ToParent) -> None:
        try:
            send_message(self.out_fd, message)
        except OSError:
            pass  # the parent is gone; keep writing the sinks regardless

    def call_all(self, what: str, call: Callable[[Sink], object]) -> None:
        """``call`` on every sink; a sink that fails is reported (``what`` it was doing) and dropped."""
        with self.lock:
            for sink in list(self.sinks):
                try:
                    call(sink)
                except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
                    self.reply(Failed.of(f"sink {sink.name!r} {what}", exc))
                    self.sinks.remove(sink)

    def write(self, records: list[MetricRecord]) -> None:
        self.call_all("write", lambda sink: sink.write(records))

    def close(self, status: str, reason: str | None) -> None:
        self.stop_system()
        self.call_all("close_with", lambda sink: sink.close_with(status, reason))
        self.after = [sink for sink in self.sinks if sink.after_close]
        self.sinks = []

    def after_run(self) -> None:
        """The sinks' work once the run's files are final; a failure is printed (nobody is left to raise it)."""
        for sink in self.after:
            try:
                sink.after_run()
            except Exception as exc:  # noqa: BLE001
                print(f"lightning_track: sink {sink.name!r} after the run: {exc!r}", file=sys.stderr)
        self.after = []

    def open(self, message: Open) -> None:
        from ..folder.layout import RunLayout
        from ..sinks import load_sink

        self.opened = True
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
        if message.system_interval:
            self.system = start_system_recorder(
                context.layout, message.system_interval, pid=os.getppid(), attempt=message.resume_count + 1,
                step=lambda: self.last_step, on_record=lambda record: self.write([record]),
                on_error=lambda text: print(f"lightning_track: {text}", file=sys.stderr))
        self.reply(Opened())

    def handle(self, message: ToHost) -> bool:
        """Act on one message; False once the run is closed."""
        match message:
            case Open():
                self.open(message)
            case SetConfig(config):
                self.call_all("log_config", lambda sink: sink.log_config(dict(config)))
            case Write(rows):
                self.write(message.records())
                if rows:
                    self.last_step = max(self.last_step or 0, *(step for step, _, _ in rows))
            case WriteMedia(records):
                self.call_all("write_media", lambda sink: sink.write_media(records))
            case Flush(token):
                self.call_all("flush", lambda sink: sink.flush())
                if token is not None:
                    self.reply(Flushed(token))
            case Close(status, reason):
                self.close(status, reason)
                self.reply(Closed(lingering=bool(self.after)))
                return False
            case _:
                raise SinkHostError(f"the sink host got a message of no known kind: {message!r}")
        return True

    def stop_system(self) -> None:
        if self.system is not None:
            system, self.system = self.system, None
            system.close()


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
    _warm_up(args.warm)
    host = _Host(args.out_fd)
    while True:
        message = reader.read()
        if message is None:  # the parent died without closing: finish what was received
            if host.opened:
                host.close(FAILED, "the training process ended without closing the run (killed?)")
            break  # and skip the interpreter's atexit hooks: SwanLab's would mark an unclosed run finished
        if not host.handle(message):
            while host.after and reader.read() is not None:
                pass  # closed; lingering until the parent has finished the run's files and released us
            break
    host.after_run()
    # Every sink is closed and the parent told: skip the interpreter's slow teardown (SwanLab's
    # atexit hooks have nothing left to do), after the last messages on stdout/stderr are out.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
