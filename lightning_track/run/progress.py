"""Progress, not just life: when the training step last advanced, and how fast steps go.

Why apart from the heartbeat: the writer thread beats while the training thread is stuck (a rank
blocked in an all-reduce whose peer was partitioned away), so a fresh heartbeat says nothing about
training. The clock is read off the training thread (the writer's heartbeat reads the step counter),
so tracking adds nothing to a step; its resolution is the heartbeat interval. Readers judge the
result with :func:`lightning_track.vocabulary.stalled_for`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from ..vocabulary import STALL_FACTOR, STALL_FLOOR_S, iso_time

__all__ = ["ProgressClock"]


class ProgressClock:
    """The last step seen, when it was first seen, and the recent time per step.

    ``source``: reads the step counter (for :meth:`beat`); ``stall_factor``, ``stall_floor``: the run's
    stall rule, written beside the progress so every reader judges alike; ``window``: how many advances
    the step time is averaged over (recent, so a run that slows down gets a longer limit soon).
    """

    def __init__(self, source: Callable[[], int | None] = lambda: None, stall_factor: float = STALL_FACTOR,
                 stall_floor: float = STALL_FLOOR_S, window: int = 8) -> None:
        self.source = source
        self.rule = {"factor": float(stall_factor), "floor_s": float(stall_floor)}
        self._seen: deque[tuple[float, int]] = deque(maxlen=window + 1)
        self.step: int | None = None
        self.time: float | None = None

    def start(self, step: int | None, now: float) -> dict[str, Any]:
        """An attempt starts: its start counts as progress (a run stuck before its first step is judged
        by the floor), the previous attempt's pace is forgotten. ``summary.json``'s fields."""
        self._seen.clear()
        self.step, self.time = step, now
        return {"stall_rule": self.rule, "progress": self.record()}

    def beat(self, now: float) -> dict[str, Any] | None:
        """Read the step counter (the writer thread's heartbeat); ``progress`` when it moved, else None."""
        try:
            step = self.source()
        except Exception:  # noqa: BLE001 - a trainer being torn down: no reading this time
            return None
        return self.record() if self.observe(step, now) else None

    def observe(self, step: int | None, now: float) -> bool:
        """The step counter read at ``now``; True when it moved since the last reading."""
        if step is None or step == self.step:
            return False
        if self.step is not None and step < self.step:
            self._seen.clear()  # went back (a rewind): the pace so far says nothing
        self._seen.append((now, step))  # the pace starts at the first advance seen: start-up time is not a step
        self.step, self.time = step, now
        return True

    @property
    def step_time(self) -> float | None:
        """Seconds per step over the recent advances (None before two were seen)."""
        if len(self._seen) < 2:
            return None
        (t0, s0), (t1, s1) = self._seen[0], self._seen[-1]
        return (t1 - t0) / (s1 - s0) if s1 > s0 else None

    def record(self) -> dict[str, Any]:
        """``summary.json``'s ``progress``: ``{"step", "time", "step_time_s"}``."""
        step_time = self.step_time
        return {"step": self.step, "time": iso_time(self.time) if self.time is not None else None,
                "step_time_s": round(step_time, 6) if step_time is not None else None}
