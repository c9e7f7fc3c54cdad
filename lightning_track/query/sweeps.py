"""The trials of a sweep ranked by their best metric: the table ``lt run --pipeline`` prints and writes
beside the pipeline state, and the sweep section of ``lt report``.

A trial's run records ``summary.json`` ``sweep: {name, trial, overrides, metric, mode}`` (see
:mod:`lightning_track.launch.sweep`). The metric ranked is the sweep's ``metric:``, else the first
metric with a best value whose name starts with ``val``, else the first with a best value; its
direction is the sweep's ``mode:``, else the run's own (``best.<metric>.mode``), else inferred from the
name. A trial without a value (failed before logging it, not started) comes last. Pure: plain values in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..derived.digest import infer_mode
from .format import format_cell

__all__ = ["TrialRow", "sweep_record", "choose_metric", "rank_trials", "table_lines", "group_by_sweep"]


@dataclass
class TrialRow:
    trial: int
    overrides: dict[str, Any]
    state: str  # the pipeline step's state, or the run's status
    run: str | None = None  # the run folder's name
    value: float | None = None
    step: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def sweep_record(summary: Mapping[str, Any]) -> dict[str, Any] | None:
    record = summary.get("sweep")
    return record if isinstance(record, dict) and isinstance(record.get("name"), str) else None


def _best(summary: Mapping[str, Any]) -> dict[str, Any]:
    best = summary.get("best")
    return best if isinstance(best, dict) else {}


def choose_metric(summaries: Sequence[Mapping[str, Any]], metric: str | None = None) -> str | None:
    if metric:
        return metric
    names = list(dict.fromkeys(k for s in summaries for k in _best(s)))
    return next((n for n in names if n.startswith("val")), names[0] if names else None)


def _mode(summaries: Sequence[Mapping[str, Any]], metric: str, mode: str | None) -> str:
    if mode in ("min", "max"):
        return mode
    for summary in summaries:
        entry = _best(summary).get(metric)
        if isinstance(entry, dict) and entry.get("mode") in ("min", "max"):
            return str(entry["mode"])
    return infer_mode(metric) or "min"


def _value(summary: Mapping[str, Any], metric: str) -> tuple[float | None, int | None]:
    for part in ("best", "final"):
        block = summary.get(part)
        entry = block.get(metric) if isinstance(block, dict) else None
        if isinstance(entry, dict) and isinstance(entry.get("value"), (int, float)) and not isinstance(
                entry.get("value"), bool) and math.isfinite(entry["value"]):
            return float(entry["value"]), entry.get("step")
    return None, None


def rank_trials(rows: Sequence[TrialRow], summaries: Sequence[Mapping[str, Any] | None], *, metric: str | None = None,
                mode: str | None = None) -> tuple[str | None, str, list[TrialRow]]:
    """``(metric, mode, rows best first)``; each row's value and step filled from its summary (same order)."""
    known = [s for s in summaries if s]
    metric = choose_metric(known, metric)
    mode = _mode(known, metric, mode) if metric else "min"
    for row, summary in zip(rows, summaries, strict=True):
        if metric and summary:
            row.value, row.step = _value(summary, metric)
    sign = 1.0 if mode == "min" else -1.0
    ordered = sorted(rows, key=lambda r: (r.value is None, sign * r.value if r.value is not None else 0.0, r.trial))
    return metric, mode, ordered


def table_lines(metric: str | None, mode: str, rows: Sequence[TrialRow]) -> list[str]:
    """A Markdown table: rank, trial, one column per override key, state, the metric, its step, the run."""
    keys = list(dict.fromkeys(k for r in rows for k in r.overrides))
    label = f"{metric} ({mode})" if metric else "metric"
    head = ["rank", "trial", *keys, "state", label, "step", "run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for rank, row in enumerate(rows, 1):
        cells = [str(rank) if row.value is not None else "-", str(row.trial),
                 *(format_cell(row.overrides.get(k)) for k in keys), row.state,
                 format_cell(row.value) if row.value is not None else "-",
                 format_cell(row.step) if row.step is not None else "-", row.run or "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def group_by_sweep(summaries: Sequence[Mapping[str, Any]]) -> dict[str, list[int]]:
    """``{sweep name: indexes of the runs in it}`` for sweeps with two runs or more among ``summaries``."""
    groups: dict[str, list[int]] = {}
    for i, summary in enumerate(summaries):
        record = sweep_record(summary)
        if record:
            groups.setdefault(record["name"], []).append(i)
    return {name: idx for name, idx in groups.items() if len(idx) > 1}
