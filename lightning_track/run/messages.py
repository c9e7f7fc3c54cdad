"""The messages between the training process's writer and its sinks: one small type per kind.

Two channels carry them, and each side dispatches on the type (``match``), so a new kind is a new class
here that the type checker and a reader can follow to every place that handles it:

* the writer thread's queue (:mod:`.writer`), in the training process: :class:`SetConfig`, :class:`Sync`,
  :class:`Close`, :class:`Stop` beside the records themselves (``MetricRecord``, ``MediaItem``), which stay
  bare because they are the hot path;
* the sink host's pipe (:mod:`.sinkhost`), each message framed as a 4-byte length and a pickle:
  parent -> host :data:`ToHost` (:class:`Open`, :class:`SetConfig`, :class:`Write`, :class:`WriteMedia`,
  :class:`Flush`, :class:`Close`); host -> parent :data:`ToParent` (:class:`Opened`, :class:`Failed`,
  :class:`Flushed`, :class:`Closing`, :class:`Closed`).
"""

from __future__ import annotations

import os
import pickle
import select
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..folder.media import MediaRecord
from ..folder.records import MetricRecord

__all__ = ["Open", "SetConfig", "Write", "WriteMedia", "Flush", "Sync", "Close", "Stop", "Opened", "Failed",
           "Flushed", "Closing", "Closed", "ToHost", "ToParent", "send_message", "MessageReader"]


@dataclass(frozen=True)
class Open:
    """Open the named sinks on this run (and sample the parent's system metrics every ``system_interval`` s)."""

    run_dir: str
    dataset: str
    method: str
    config: dict[str, Any]
    resume_step: int | None
    resume_count: int
    sinks: list[str]
    system_interval: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SetConfig:
    """The run's config, for every sink (again whenever it changes)."""

    config: dict[str, Any]


@dataclass(frozen=True)
class Write:
    """Metric records, as plain ``(step, time, metrics)`` rows: the cheapest shape to pickle."""

    rows: list[tuple[int, float, dict[str, float]]]

    @classmethod
    def of(cls, records: list[MetricRecord]) -> Write:
        return cls([(r.step, r.time, r.metrics) for r in records])

    def records(self) -> list[MetricRecord]:
        return [MetricRecord(step, when, metrics) for step, when, metrics in self.rows]


@dataclass(frozen=True)
class WriteMedia:
    """Encoded images, text and histograms (their files are already on disk)."""

    records: list[MediaRecord]


@dataclass(frozen=True)
class Flush:
    """Flush every sink; a ``token`` asks for a :class:`Flushed` reply once done."""

    token: int | None = None


@dataclass(frozen=True)
class Sync:
    """The writer thread: write and flush everything queued so far, wait for the sinks, then set ``done``."""

    done: threading.Event


@dataclass(frozen=True)
class Close:
    """Write everything, close every sink with the run's ``status`` (and ``reason``)."""

    status: str
    reason: str | None = None


@dataclass(frozen=True)
class Stop:
    """The writer thread: stop now (after a :class:`Close`, or without opening anything)."""


@dataclass(frozen=True)
class Opened:
    """The host opened the sinks it could (each failure came as a :class:`Failed` before)."""


@dataclass(frozen=True)
class Failed:
    """A sink failed in the host: ``where``, the exception's ``text``, and the exception pickled when it can be."""

    where: str
    text: str
    pickled: bytes | None = None

    @classmethod
    def of(cls, where: str, exc: BaseException) -> Failed:
        try:
            pickled: bytes | None = pickle.dumps(exc)
            pickle.loads(pickled)
        except Exception:  # noqa: BLE001 - an exception that does not survive pickling travels as its repr
            pickled = None
        return cls(where, repr(exc), pickled)


@dataclass(frozen=True)
class Flushed:
    """The :class:`Flush` with this ``token`` is done."""

    token: int


@dataclass(frozen=True)
class Closing:
    """The host took :class:`Close`: its system record is final (``system.jsonl`` complete, so the parent's
    ``summary.json`` can count it); the sinks close on their own from here."""


@dataclass(frozen=True)
class Closed:
    """Every sink is closed; the host exits."""


ToHost = Open | SetConfig | Write | WriteMedia | Flush | Close
ToParent = Opened | Failed | Flushed | Closing | Closed


# -- on the sink host's pipe: a 4-byte little-endian length, then the pickle ------------------------
_LENGTH = struct.Struct("<I")


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
