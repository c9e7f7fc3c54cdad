"""The one small interface every metrics sink implements.

A sink is opened once by the background writer, receives batches of records there (never on the
training thread), and is flushed about once a second and closed with the run's final status.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..layout import RunLayout
from ..metrics import MetricRecord

__all__ = ["Sink", "SinkContext"]


@dataclass
class SinkContext:
    """What a sink may need to know about the run when it opens."""

    layout: RunLayout
    dataset: str
    method: str
    config: dict[str, Any] = field(default_factory=dict)  # already redacted
    # Set on resume: the first step logged after the restart. Records at or after it from the
    # interrupted attempt are hidden (TensorBoard purge_step) or dropped (metrics.jsonl).
    resume_step: int | None = None
    resume_count: int = 0


class Sink(ABC):
    """A destination for metrics. Subclasses set ``name`` and implement ``write``."""

    name: ClassVar[str] = ""

    def open(self, context: SinkContext) -> None:  # noqa: B027 - optional hook
        """Create files or start the SDK. Called on the writer thread before the first write."""

    def log_config(self, config: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """The (redacted) config changed; record it if the format has a place for it."""

    @abstractmethod
    def write(self, records: list[MetricRecord]) -> None:
        """Record a batch of metric records, in step order of arrival."""

    def flush(self) -> None:  # noqa: B027 - optional hook
        """Make everything written so far durable for readers."""

    def close(self, status: str) -> None:  # noqa: B027 - optional hook
        """Flush and release; ``status`` is the run's final status (success, failed, ...)."""
