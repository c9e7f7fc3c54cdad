"""The stall watchdog: a daemon thread that notices when no step has finished for too long.

Why a thread: a truly stuck step (a hung collective, a dead data loader worker) never returns to
Lightning, so no hook can notice it. The thread only reads the time and count of the last finished
step and calls back; it never touches CUDA (a stuck device would block it too). What a stall means
for the run (the signal, ``summary.json``, the exit) is the caller's:
:class:`~lightning_track.callbacks.health.guard.HealthGuard`.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections.abc import Callable

from ...run.progress import ProgressClock
from ...vocabulary import STALL_FACTOR, STALL_FLOOR_S, stall_limit
from .checks import waiting_in

__all__ = ["StallWatchdog", "stall_rule", "stuck_in"]


def stall_rule(timeout: float | str | None, factor: float | None, floor: float | None
               ) -> Callable[[float | None], float]:
    """The watchdog's limit as a function of the recent time per step: ``timeout`` seconds, or for
    ``"auto"`` the run's stall rule (``factor``/``floor``, else the vocabulary's defaults)."""
    if timeout != "auto":
        return lambda step_time: float(timeout)  # type: ignore[arg-type]
    factor, floor = factor or STALL_FACTOR, floor or STALL_FLOOR_S
    return lambda step_time: stall_limit(step_time, factor, floor)


def stuck_in(thread_id: int | None, distributed: bool) -> str | None:
    """What the (training) thread ``thread_id`` is stuck in, read from its stack (a collective, DDP's backward)."""
    frame = sys._current_frames().get(thread_id) if thread_id is not None else None
    if frame is None:
        return None
    return waiting_in([(f.filename, f.name) for f in reversed(traceback.extract_stack(frame))], distributed)


class StallWatchdog(threading.Thread):
    """Calls ``on_stall(waited, limit)`` once no step finished for ``limit(step_time)`` s, then
    ``on_grace_over()`` if it was not stopped within ``grace`` s more (the stuck step never came back).

    ``last_beat()``: ``(monotonic time, count)`` of the last finished step; the recent time per step is
    measured here, off the training thread, from how the count moves between polls.
    """

    def __init__(self, limit: Callable[[float | None], float], grace: float, *,
                 last_beat: Callable[[], tuple[float, int]],
                 on_stall: Callable[[float, float], None], on_grace_over: Callable[[], None]) -> None:
        super().__init__(name="lightning_track-stall-watchdog", daemon=True)
        self.limit, self.grace = limit, grace
        self._last_beat, self._on_stall, self._on_grace_over = last_beat, on_stall, on_grace_over
        self._stop_event = threading.Event()
        self.pace = ProgressClock()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        limit = self.limit(None)
        while not self._stop_event.wait(min(1.0, limit / 4)):
            beat, count = self._last_beat()
            self.pace.observe(count, beat)
            limit = self.limit(self.pace.step_time)
            waited = time.monotonic() - beat
            if waited >= limit:
                self._on_stall(waited, limit)
                if not self._stop_event.wait(self.grace):
                    self._on_grace_over()
                return
