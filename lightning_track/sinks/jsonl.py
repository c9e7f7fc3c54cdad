"""``metrics.jsonl``: the append-only source of truth every other metrics file can be rebuilt from."""

from __future__ import annotations

import os

from ..fileio import JsonlAppender, atomic_open, durable_writes, iter_jsonl, json_line
from ..metrics import MetricRecord, MetricsDigest
from .base import Sink, SinkContext


class MetricsJsonlSink(Sink):
    name = "jsonl"

    def __init__(self) -> None:
        self._appender: JsonlAppender | None = None
        self.purged = 0
        self.digest: MetricsDigest | None = None

    def open(self, context: SinkContext) -> None:
        path = context.layout.metrics_jsonl
        if context.resume_step is not None and path.exists():
            self.purged = drop_steps_from(path, context.resume_step)
        self._appender = JsonlAppender(path)

    def keep_digest(self) -> MetricsDigest:
        """From now on also feed :attr:`digest`, for ``post_process(..., metrics=sink.digest)``.

        Complete only when ``metrics.jsonl`` is still empty (a migration, not a resume).
        """
        assert self._appender is not None, "sink not opened"
        self.digest = MetricsDigest()
        if self._appender.path.stat().st_size:
            self.digest.abandon()
        return self.digest

    def write(self, records: list[MetricRecord]) -> None:
        assert self._appender is not None, "sink not opened"
        self._appender.write_lines(
            [json_line({"step": r.step, "time": _round6(r.time), "metrics": r.metrics}) for r in records]
        )
        if self.digest is not None:
            self.digest.add(records)

    def close(self, status: str) -> None:
        if self._appender is not None:
            if durable_writes():
                self._appender.fsync()
            self._appender.close()
            self._appender = None


def _round6(when: float) -> float:
    """``round(when, 6)``, which costs ~0.8 us (a decimal round trip), skipped where it changes nothing.

    A float that is a whole number of 1/64 s (every time a tracker writes in halves or quarters
    of a second) has at most six decimals, exactly: rounding to six gives it back.
    """
    if type(when) is float and (when * 64.0).is_integer():
        return when
    return round(when, 6)


def drop_steps_from(path: os.PathLike[str] | str, first_step: int) -> int:
    """Rewrite ``path`` atomically without records at ``first_step`` or later; returns how many went.

    Used on resume: those steps are trained again from the checkpoint, so keeping them would
    duplicate them. Unreadable lines (a torn last line of the killed run) are dropped too.
    """
    kept: list[str] = []
    dropped = 0
    problems: list = []
    for _, obj in iter_jsonl(path, problems):
        step = obj.get("step")
        if isinstance(step, int) and step >= first_step:
            dropped += 1
        else:
            kept.append(json_line(obj))
    dropped += len(problems)
    if dropped:
        with atomic_open(path, "w") as handle:
            handle.write("".join(kept))
    return dropped


SINK = MetricsJsonlSink
