"""The stall watchdog: a daemon thread that notices when no step has finished for too long.

Why a thread: a truly stuck step (a hung collective, a dead data loader worker) never returns to
Lightning, so no hook can notice it. The thread only reads a timestamp and calls back; it never
touches CUDA (a stuck device would block it too). What a stall means for the run (the signal,
``summary.json``, the exit) is the caller's: :class:`~lightning_track.callbacks.health.guard.HealthGuard`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["StallWatchdog"]


class StallWatchdog(threading.Thread):
    """Calls ``on_stall(waited)`` once no step finished for ``timeout`` s, then ``on_grace_over()``
    if it was not stopped within ``grace`` s more (the stuck step never came back)."""

    def __init__(self, timeout: float, grace: float, *, last_beat: Callable[[], float],
                 on_stall: Callable[[float], None], on_grace_over: Callable[[], None]) -> None:
        super().__init__(name="lightning_track-stall-watchdog", daemon=True)
        self.timeout, self.grace = timeout, grace
        self._last_beat, self._on_stall, self._on_grace_over = last_beat, on_stall, on_grace_over
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        poll = min(1.0, self.timeout / 4)
        while not self._stop_event.wait(poll):
            waited = time.monotonic() - self._last_beat()
            if waited >= self.timeout:
                self._on_stall(waited)
                if not self._stop_event.wait(self.grace):
                    self._on_grace_over()
                return
