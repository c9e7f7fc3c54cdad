"""The sink host process itself (``python -m lightning_track.sinkhost``): what runs on the other end of
:class:`~lightning_track.run.sinkhost.SinkHost`'s pipe. See :mod:`lightning_track.run.sinkhost` for why and how."""

from __future__ import annotations

import argparse
import importlib
import os
import queue
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from ..errors import SinkHostError
from ..sinks.base import SINK_LANE_NICE, Sink, SinkContext, lower_priority
from ..vocabulary import FAILED
from .messages import (
    Close,
    Closed,
    Closing,
    Failed,
    Flush,
    Flushed,
    MessageReader,
    Open,
    Opened,
    SetConfig,
    ToHost,
    ToParent,
    Write,
    WriteMedia,
    send_message,
)
from .system import start_system_recorder

__all__ = ["main"]


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
        lower_priority(SINK_LANE_NICE)  # this thread only: training and the answer to Close go first
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
