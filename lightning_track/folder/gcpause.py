"""The cyclic garbage collector off while a burst of short-lived objects is alive: the one rule for every pause.

Why: each young collection during such a burst finds its objects still referenced and moves them (and
whatever else is young) to the oldest generation, where they count toward the next *full* collection,
which walks every object of the process: a fifth to a quarter of ``lt ls``'s CPU over 10,000 runs, and
0.15-0.2 s in a training process that imported torch and Lightning (see benchmarks/results/logger.md).
Paused, the burst counts as one young collection, which then finds its objects already dead. Objects
still die by reference counting meanwhile. So the burst must be unreachable when the pause ends (let go in
a function called inside it, or cleared): the collection that the allocations made during the pause trigger
runs at once, and it moves whatever is still referenced to an older generation.

Thread-aware: pauses on several threads overlap (a run's finalize and its plot thread); the collector
comes back when the last one ends, and only if it was on when the first began.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["collector_paused"]

_lock = threading.Lock()
_depth = 0
_was_on = False


@contextmanager
def collector_paused() -> Iterator[None]:
    """``with collector_paused():`` the collector is off inside, as it was before after the last pause ends."""
    global _depth, _was_on
    with _lock:
        if _depth == 0:
            _was_on = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_on:
                gc.enable()
