"""The one interface every metrics sink implements, with every hook declared here.

A sink is opened once by the background writer, receives batches of records there (never on the
training thread), is flushed about once a second and closed with the run's final status, one of
:data:`lightning_track.vocabulary.FINAL_STATUSES` (never Lightning's words). The writer calls the
hooks below and nothing else; a hook a sink does not need keeps the default here.
"""

from __future__ import annotations

import inspect
import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..folder.layout import RunLayout
from ..folder.media import MediaRecord
from ..folder.records import MetricRecord

__all__ = ["Sink", "SinkContext", "ErrorReport", "lower_priority", "lowest_priority", "SINK_LANE_NICE"]

ErrorReport = Callable[[str, BaseException], None]  # (where, exception) -> None


def lower_priority(by: int) -> None:
    """Lower the calling thread's priority ``by`` nice steps below what it inherited (at most nice 19), so it
    takes only what training leaves of the cores. Linux only, where nice is per thread; elsewhere it would
    lower the whole process (the sink host's main thread too, which must answer ``Close`` at once), so nothing.

    The one rule for the sinks' threads; each caller says how far: :data:`SINK_LANE_NICE` or :func:`lowest_priority`.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        os.nice(by)  # relative to the inherited value: a training started at nice 10 keeps its lead
    except OSError:
        pass


SINK_LANE_NICE = 5
"""The sink host's lane of format sinks (TensorBoard, SwanLab): lowered, not idle, because a checkpoint's flush
(``Flush`` with a token) and the end of the run wait for it."""


def lowest_priority() -> None:
    """Nice 19, for work that nothing waits on while training runs: a tracker's client imported (seconds of CPU)
    and its periodic passes, in the sink host."""
    lower_priority(19)


@dataclass
class SinkContext:
    """What a sink may need to know about the run when it opens."""

    layout: RunLayout
    dataset: str
    method: str
    config: dict[str, Any] = field(default_factory=dict)  # already redacted
    # Set on resume: the first step logged after the restart. Records at or after it from the
    # interrupted attempt are hidden (TensorBoard purge_step) or moved aside (metrics.jsonl).
    resume_step: int | None = None
    resume_count: int = 0
    # Where a sink moves the records it takes out on a resume (never deleted); None: nowhere to move.
    moved_aside_to: Path | None = None
    # Settings of one sink, by its name: {"swanlab": {"mode": "local"}} (RunLogger(swanlab_mode=...)).
    options: dict[str, dict[str, Any]] = field(default_factory=dict)


class Sink(ABC):
    """A destination for metrics. Subclasses set ``name`` and implement ``write``."""

    name: ClassVar[str] = ""
    # True: its close waits for what finalize writes after the sinks are closed (summary.json), so it runs
    # only in the sink host, which finishes in the background; on the writer thread finalize would wait on it.
    hosted_only: ClassVar[bool] = False

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Raise :class:`ConfigError` on a setting of this sink that cannot work (RunLogger calls it before
        the run folder exists, so bad input leaves nothing behind)."""

    @classmethod
    def warm_up(cls) -> None:  # noqa: B027 - optional hook
        """Import the format's library ahead of the first record (the sink host calls it at start)."""

    def report_errors_to(self, report: ErrorReport) -> None:  # noqa: B027 - optional hook
        """Errors that arrive outside the writer's calls (another process's) go to ``report``."""

    def open(self, context: SinkContext) -> None:  # noqa: B027 - optional hook
        """Create files or start the SDK. Called on the writer thread before the first write."""

    def log_config(self, config: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """The (redacted) config changed; record it if the format has a place for it."""

    @abstractmethod
    def write(self, records: list[MetricRecord]) -> None:
        """Record a batch of metric records, in step order of arrival."""

    def write_media(self, records: list[MediaRecord]) -> None:  # noqa: B027 - optional hook
        """Record images, text and histograms (encoded, with the file each is kept in under ``media/``)."""

    def flush(self) -> None:  # noqa: B027 - optional hook
        """Hand everything written so far to the OS, for readers (called about once a second)."""

    def sync(self) -> None:  # noqa: B027 - optional hook
        """Return only once everything written so far is on disk (an explicit ``RunLogger.flush()``).

        ``flush`` may only start the work (another process's); this waits for it.
        """

    def close(self, status: str, reason: str | None = None) -> None:  # noqa: B027 - optional hook
        """Flush and release; ``status`` is the run's final status (completed, failed, interrupted),
        ``reason`` one line on why it failed or stopped (None when it completed or nobody knows)."""

    def discard(self) -> None:  # noqa: B027 - optional hook
        """Release without having opened (the run was handed to another process: ddp_spawn)."""

    def close_with(self, status: str, reason: str | None) -> None:
        """Call :meth:`close`, also on a sink written before ``close`` took a ``reason``."""
        try:
            takes_reason = len(inspect.signature(self.close).parameters) >= 2
        except (TypeError, ValueError):
            takes_reason = True
        if takes_reason:
            self.close(status, reason)
        else:
            self.close(status)  # type: ignore[call-arg]

    @property
    def lost_steps(self) -> list[int]:
        """Steps a resume found missing from this sink's record (see MetricsJsonlSink)."""
        return []

    @property
    def moved_aside(self) -> int:
        """Records this sink took out of its file when it opened on a resume (0 for most formats)."""
        return 0
