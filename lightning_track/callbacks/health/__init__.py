"""HealthGuard: stop a run that is broken in its first minutes, and say so in signal files.

The package in layers, each using only those above it:

* :mod:`.checks`: the rules as plain decisions (numbers in, a failure record out), their
  priority across ranks, :func:`classify_exception`, and :class:`HealthCheckFailed`, the
  ``SystemExit`` that carries :data:`HEALTH_EXIT_CODE` (86) out of ``trainer.fit``;
* :mod:`.collectives`: the all-reduce and gather that make every rank decide alike;
* :mod:`.watchdog`: the stall watchdog thread;
* :mod:`.guard`: :class:`HealthGuard`, the Lightning callback that feeds the checks and acts.

Where its signals go is decided with the other callbacks' in :mod:`lightning_track.callbacks.targets`.
"""

from __future__ import annotations

from ...vocabulary import EXIT_HEALTH as HEALTH_EXIT_CODE  # the name HealthGuard users know
from .checks import HealthCheckFailed, classify_exception
from .guard import HealthGuard

__all__ = ["HealthGuard", "HealthCheckFailed", "HEALTH_EXIT_CODE", "classify_exception"]
