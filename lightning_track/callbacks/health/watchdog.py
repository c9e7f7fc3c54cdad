"""The stall watchdog: a daemon thread that notices when no step has finished for too long.

Why a thread: a truly stuck step (a hung collective, a dead data loader worker) never returns to
Lightning, so no hook can notice it. The thread only reads the time and count of the last finished
step and calls back; it never touches CUDA (a stuck device would block it too). What a stall means
for the run (the signal, ``summary.json``, the exit) is the caller's:
:class:`~lightning_track.callbacks.health.guard.HealthGuard`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ...run.progress import ProgressClock

__all__ = ["StallWatchdog"]


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
