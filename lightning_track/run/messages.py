"""The messages between the training process's writer and its sinks: one small type per kind.

Two channels carry them, and each side dispatches on the type (``match``), so a new kind is a new class
here that the type checker and a reader can follow to every place that handles it:

* the writer thread's queue (:mod:`.writer`), in the training process: :class:`SetConfig`, :class:`Sync`,
  :class:`Close`, :class:`Stop` beside the records themselves (``MetricRecord``, ``MediaItem``), which stay
  bare because they are the hot path;
* the sink host's pipe (:mod:`.sinkhost`), each message framed as a 4-byte length and a pickle:
  parent -> host :data:`ToHost` (:class:`Open`, :class:`SetConfig`, :class:`Write`, :class:`WriteMedia`,
  :class:`Flush`, :class:`Close`); host -> parent :data:`ToParent` (:class:`Opened`, :class:`Failed`,
  :class:`Flushed`, :class:`Closed`).
"""

from __future__ import annotations

import pickle
import threading
from dataclasses import dataclass, field
from typing import Any

from ..folder.media import MediaRecord
from ..folder.records import MetricRecord

__all__ = ["Open", "SetConfig", "Write", "WriteMedia", "Flush", "Sync", "Close", "Stop", "Opened", "Failed",
           "Flushed", "Closed", "ToHost", "ToParent"]


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
class Closed:
    """Every sink is closed; the host exits, or, ``lingering``, waits for :meth:`SinkHost.release` (end of
    its pipe) to run the sinks' :meth:`~lightning_track.sinks.Sink.after_run` first."""

    lingering: bool = False


ToHost = Open | SetConfig | Write | WriteMedia | Flush | Close
ToParent = Opened | Failed | Flushed | Closed
