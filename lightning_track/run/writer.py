"""The background writer: the training thread only enqueues; this thread feeds the sinks.

Why a thread: TensorBoard's writer, SwanLab's SDK and disk I/O cost hundreds of microseconds per
call. Lightning calls ``log_metrics`` and ``save`` on every logging step, so doing the work inline
would slow training. Records are written in batches at least every ``flush_interval`` seconds, so
a killed process loses at most about that much.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from itertools import islice
from typing import Any

from ..errors import WriterError
from ..folder.gcpause import collector_paused
from ..folder.records import MetricRecord
from ..sinks.base import Sink, SinkContext
from .messages import Close, SetConfig, Stop, Sync

__all__ = ["BackgroundWriter"]

_RECORD = object()  # in the queue: the next three items are one record's step, time and metrics


class BackgroundWriter:
    """Owns the sinks and a daemon thread that writes to them.

    Sinks are opened lazily when the first record arrives, because on resume the first step
    logged after the restart decides what the interrupted attempt left that must be hidden.
    """

    def __init__(
        self,
        sinks: list[Sink],
        context: SinkContext,
        *,
        resuming: bool = False,
        flush_interval: float = 0.5,
        heartbeat_interval: float = 5.0,
        on_heartbeat: Callable[[], None] | None = None,
        on_open: Callable[[SinkContext, list[Sink]], None] | None = None,
    ) -> None:
        self.sinks = sinks
        self.context = context
        self.resuming = resuming
        self.flush_interval = flush_interval
        self.heartbeat_interval = heartbeat_interval
        self.on_heartbeat = on_heartbeat
        self.on_open = on_open
        # Records go on a deque without waking the writer: waking a thread on every step makes it
        # fight the training thread for the GIL (measured: +24 % on a tiny-MLP fit). The writer
        # wakes on its timer, or at once through _wake for the rare commands (flush, close).
        self._items: deque[Any] = deque()
        self._wake = threading.Event()
        self._error: BaseException | None = None
        self._error_where = ""
        self._opened = False
        self._config: dict[str, Any] | None = None
        self._encoder: Any = None  # MediaEncoder, made at the first image, text or histogram
        for sink in sinks:
            sink.report_errors_to(self._fail)  # errors from elsewhere (the sink host's reader thread)
        self._thread = threading.Thread(target=self._loop, name="lightning_track-writer", daemon=True)
        self._thread.start()

    # -- training thread -----------------------------------------------------------------------
    def put(self, step: int, when: float, metrics: dict[str, float]) -> None:
        # Queued as three plain items after a marker, never as one record object: the records wait here up to a
        # flush interval, and a young garbage collection meanwhile would move every waiting record object to the
        # oldest generation (1,176 of them in one 2,000-step fit), towards a full collection of the training
        # process (0.2 s with torch loaded). A number and a dict of floats are not tracked by the collector.
        # One ``extend``: the writer thread sees all four items or none (deque.extend holds the GIL throughout).
        self._items.extend((_RECORD, step, when, metrics))

    def put_media(self, item: Any) -> None:
        """An image, text or histogram (:class:`~lightning_track.run.media.MediaItem`), encoded on this thread."""
        self._items.append(item)

    def put_config(self, config: dict[str, Any]) -> None:
        self._command(SetConfig(config))

    def _command(self, item: SetConfig | Sync | Stop) -> None:
        self._items.append(item)
        self._wake.set()

    def check(self) -> None:
        """Raise the writer thread's error, if any, on the caller's thread."""
        if self._error is not None:
            raise WriterError(f"lightning_track writer failed in {self._error_where}: {self._error!r}") from self._error

    def flush(self, timeout: float = 30.0) -> None:
        done = threading.Event()
        self._command(Sync(done))
        done.wait(timeout)
        self.check()

    def close(self, status: str, reason: str | None = None, timeout: float = 120.0) -> None:
        """Write everything, close every sink with ``status`` (and ``reason``), stop the thread."""
        if self._thread.is_alive():
            self._items.append(Close(status, reason))
            self._command(Stop())
            self._thread.join(timeout)
        self.check()

    @property
    def opened(self) -> bool:
        """Whether any sink was opened (files or a SwanLab run exist)."""
        return self._opened

    def abandon(self, timeout: float = 30.0) -> None:
        """Stop the thread without opening or closing any sink (the run is handed to another process)."""
        if self._thread.is_alive():
            self._command(Stop())
            self._thread.join(timeout)
        for sink in self.sinks:
            sink.discard()

    # -- writer thread -------------------------------------------------------------------------
    def _fail(self, where: str, exc: BaseException) -> None:
        if self._error is None:
            self._error, self._error_where = exc, where

    def _open(self, first_step: int | None) -> None:
        self._opened = True
        if self.resuming and self.context.resume_step is None and first_step is not None:
            self.context.resume_step = first_step  # else the step training restarted from, already known
        for sink in list(self.sinks):
            try:
                sink.open(self.context)
            except Exception as exc:  # noqa: BLE001 - surfaced on the training thread
                self._fail(f"opening sink {sink.name!r}", exc)
                self.sinks.remove(sink)
        if self.on_open is not None:
            try:
                self.on_open(self.context, self.sinks)
            except Exception as exc:  # noqa: BLE001
                self._fail("on_open", exc)
        if self._config is not None:
            self._send_config()

    def _send_config(self) -> None:
        for sink in list(self.sinks):
            try:
                sink.log_config(dict(self._config or {}))
            except Exception as exc:  # noqa: BLE001
                self._fail(f"sink {sink.name!r} log_config", exc)

    def _call_all(self, what: str, call: Callable[[Sink], object]) -> None:
        """``call`` on every sink; a sink that fails is reported (``what`` it was doing) and dropped."""
        for sink in list(self.sinks):
            try:
                call(sink)
            except Exception as exc:  # noqa: BLE001
                self._fail(f"sink {sink.name!r} {what}", exc)
                self.sinks.remove(sink)

    def _write(self, rows: list[Any]) -> None:
        """Write the records queued as flat ``step, time, metrics`` items (:meth:`put`)."""
        if not rows:
            return
        if not self._opened:
            self._open(rows[0])
        with collector_paused():  # the records and their encodings are a burst, gone before the pause ends
            self._write_records(rows)

    def _write_records(self, rows: list[Any]) -> None:
        records = [MetricRecord(rows[i], rows[i + 1], rows[i + 2]) for i in range(0, len(rows), 3)]
        self._call_all("write", lambda sink: sink.write(records))

    def _write_media(self, items: list[Any]) -> None:
        if not items:
            return
        from .media import MediaEncoder

        if not self._opened:
            self._open(items[0].step)
        if self._encoder is None:
            self._encoder = MediaEncoder(self.context.layout.run_dir)
        records = []
        for item in items:
            try:
                records.append(self._encoder.encode(item))
            except Exception as exc:  # noqa: BLE001 - surfaced on the training thread
                self._fail(f"encoding {item.kind} {item.key!r}", exc)
        self._call_all("write_media", lambda sink: sink.write_media(records))

    def _heartbeat(self) -> None:
        if self.on_heartbeat is not None:
            try:
                self.on_heartbeat()
            except Exception as exc:  # noqa: BLE001
                self._fail("heartbeat", exc)

    def _loop(self) -> None:
        pending: list[Any] = []  # records as flat step, time, metrics items (see put)
        media: list[Any] = []
        now = time.monotonic()
        next_flush, next_beat = now + self.flush_interval, now + self.heartbeat_interval
        while True:
            self._wake.wait(max(0.0, min(next_flush, next_beat) - time.monotonic()))
            self._wake.clear()  # before draining: a command appended from here on sets it again
            items = []
            while self._items:
                items.append(self._items.popleft())
            queued = iter(items)
            for item in queued:
                if item is _RECORD:  # the hot path: checked first
                    pending += islice(queued, 3)
                    continue
                if isinstance(item, Stop):
                    return
                if not isinstance(item, (SetConfig, Sync, Close)):  # an image, text or histogram
                    media.append(item)
                    continue
                self._write(pending)  # a command acts after everything queued before it
                self._write_media(media)
                pending, media = [], []
                self._act(item)
            now = time.monotonic()
            if now >= next_flush:
                self._write(pending)
                self._write_media(media)
                pending, media = [], []
                if self._opened:
                    self._call_all("flush", lambda sink: sink.flush())
                next_flush = now + self.flush_interval
            if now >= next_beat:
                self._heartbeat()
                next_beat = now + self.heartbeat_interval

    def _act(self, command: SetConfig | Sync | Close) -> None:
        match command:
            case SetConfig(config):
                self._config = config
                if self._opened:
                    self._send_config()
            case Sync(done):
                if self._opened:
                    self._call_all("flush", lambda sink: sink.flush())
                    self._call_all("sync", lambda sink: sink.sync())
                done.set()
            case Close(status, reason):
                if not self._opened:
                    self._open(None)
                self._call_all("close_with", lambda sink: sink.close_with(status, reason))
                self.sinks = []
