"""``metrics.jsonl``: the append-only source of truth every other metrics file can be rebuilt from."""

from __future__ import annotations

from ..derived.digest import MetricsDigest
from ..folder.fileio import JsonlAppender, durable_writes, json_line, keep_jsonl_before
from ..folder.records import MetricRecord
from .base import Sink, SinkContext


class MetricsJsonlSink(Sink):
    name = "jsonl"

    def __init__(self) -> None:
        self._appender: JsonlAppender | None = None
        self._moved_aside = 0
        self._lost: list[int] = []
        self.digest: MetricsDigest | None = None

    def open(self, context: SinkContext) -> None:
        path = context.layout.metrics_jsonl
        if context.resume_step is not None and path.exists():
            kept, self._moved_aside = keep_jsonl_before(path, context.resume_step, moved_to=context.moved_aside_to)
            # Lightning logs a batch's values just after the checkpoint its end saved: a kill in between
            # loses that one record, and the resume (from that checkpoint) never logs it again. Say so.
            restart = context.resume_step - 1
            if restart > 0 and kept and not any(r.get("step") == restart for r in kept[-64:]):
                self._lost = [restart]
        self._appender = JsonlAppender(path)

    @property
    def moved_aside(self) -> int:
        return self._moved_aside

    @property
    def lost_steps(self) -> list[int]:
        return self._lost

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

    def sync(self) -> None:
        """On disk, not only in the page cache: a checkpoint written next must find these records."""
        if self._appender is not None:
            self._appender.fsync()

    def close(self, status: str, reason: str | None = None) -> None:
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


SINK = MetricsJsonlSink
