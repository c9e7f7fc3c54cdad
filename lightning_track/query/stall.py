"""Whether a live run is stalled: its heartbeat is fresh but its step stopped beyond its own rule.

Why apart from the heartbeat's verdict (:func:`lightning_track.query.runs.judge_status`): the writer
thread beats while the training thread waits in a collective on a lost or partitioned node, so only the
``progress`` the heartbeat records (step, when, recent time per step) says training stopped. The rule is
:func:`lightning_track.vocabulary.stalled_for`, with the run's ``stall_rule`` from ``summary.json``.
"""

from __future__ import annotations

from typing import Any

from ..vocabulary import STALL_FACTOR, STALL_FLOOR_S, parse_iso_time, stall_limit, stalled_for
from .format import format_duration

__all__ = ["stall_reason"]


def _time(text: Any) -> float | None:
    try:
        return parse_iso_time(text) if isinstance(text, str) and text else None
    except ValueError:
        return None


def _number(value: Any, default: float) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else default


def stall_reason(summary: dict[str, Any], *, now: float) -> str:
    """Why a live run counts as stalled under its own ``stall_rule`` (``""`` when it is moving, or has no
    ``progress`` record: a run written before progress was kept)."""
    progress = summary.get("progress")
    if not isinstance(progress, dict):
        return ""
    rule = summary.get("stall_rule") if isinstance(summary.get("stall_rule"), dict) else {}
    factor, floor = _number(rule.get("factor"), STALL_FACTOR), _number(rule.get("floor_s"), STALL_FLOOR_S)
    step_time = progress.get("step_time_s")
    step_time = float(step_time) if isinstance(step_time, (int, float)) and not isinstance(step_time, bool) else None
    waited = stalled_for(_time(progress.get("time")), now, step_time, factor, floor)
    if waited is None:
        return ""
    step = progress.get("step")
    after = f"after step {step}" if isinstance(step, int) else "since the start"
    limit = stall_limit(step_time, factor, floor)
    return (f"no step for {format_duration(waited)} {after} (limit {format_duration(limit)}); "
            "the process is alive but training does not move")
