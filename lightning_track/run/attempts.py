"""The attempts of a run in ``summary.json``: what an attempt's entry says when it starts and when it ends.

Why apart from :mod:`.lifecycle` (which starts the writer, the sinks and the captures, and writes the
files): these are pure rules on the summary's data, the same for every start and finalize; the
lifecycle only hands them the data it read and writes what they return.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

from ..derived.summary import attempt_training_time, attempts_of
from ..vocabulary import COMPLETED, CRASHED, RUNNING, iso_time, parse_iso_time

__all__ = ["begin_attempt", "end_attempt"]


def begin_attempt(previous: Mapping[str, Any], now: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The run's attempts so far and the entry of a new one starting ``now`` (not yet appended). A previous
    attempt still ``running`` never finalized (killed, OOM, lost node): its last heartbeat is its end."""
    attempts = attempts_of(previous)
    entry: dict[str, Any] = {"attempt": len(attempts) + 1, "start_time": now, "status": RUNNING,
                             "host": socket.gethostname(), "pid": os.getpid()}
    if attempts and attempts[-1].get("status") == RUNNING:
        attempts[-1].update(status=CRASHED, end_time=previous.get("heartbeat", attempts[-1].get("start_time")))
    return attempts, entry


def end_attempt(data: Mapping[str, Any], status: str, reason: str | None, *, start_time: float, end_time: float,
                error: BaseException | None = None) -> dict[str, Any]:
    """The summary fields of a run whose current (last) attempt ended at ``end_time`` with ``status``:
    the attempt's end, status, reason and training time in its entry, the run's totals at the top."""
    attempts = attempts_of(data)
    mine: dict[str, Any] = {"end_time": iso_time(end_time), "status": status,
                            "training_time_s": round(end_time - start_time, 3)}
    if reason:
        mine["reason"] = reason
    if isinstance(data.get("failure"), dict):
        mine["failure"] = data["failure"]  # recorded during this attempt (HealthGuard)
    if attempts:
        attempts[-1].update(mine)
    first_start = parse_iso_time(data["start_time"]) if data.get("start_time") else start_time
    training = sum(attempt_training_time(a) for a in attempts)
    extra: dict[str, Any] = {
        "status": status, "end_time": mine["end_time"], "heartbeat": mine["end_time"], "attempts": attempts,
        "training_time_s": round(training, 3), "wall_span_s": round(end_time - first_start, 3),
    }
    if reason and status != COMPLETED:
        extra["reason"] = reason
    if error is not None:
        extra["error"] = repr(error)
    return extra
