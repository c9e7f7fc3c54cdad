"""``lt ls``: which columns, in which order, and how each cell reads.

The table shows the last :data:`TABLE_ROWS` rows (the newest runs) unless ``--all`` or ``--last N``.
Default columns: name, source (when runs come from several folders of a mirror), dataset, method,
status (with the failing check or the stopping signal), start, wall span, last step, host, tags (when
any run has some), where a run was exported (when one was), and the best value of the main metric.
``--columns a,b`` replaces them, ``--columns +a,b`` adds to them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..vocabulary import COMPLETED, INTERRUPTED
from .filters import KEY_ALIASES, MISSING
from .format import format_cell, format_duration, format_time
from .runs import FIELD_NAMES, RunInfo

__all__ = ["main_metric", "main_metric_of", "TABLE_ROWS", "DEFAULT_COLUMNS", "default_columns", "parse_columns",
           "cell", "sort_runs", "unknown_keys", "header"]

# In order; "source", "tag" and "export" only when some run has one. A run's record() holds each of them.
DEFAULT_COLUMNS = ("name", "source", "dataset", "method", "status", "start", "wall_span", "step", "host", "tag",
                   "export")


# The table shows the last rows only (the newest runs, in the default order): 100,000 rows on a terminal
# are read by nobody and cost seconds to format; a line on stderr says how many were left out. --all or
# --last N shows more; --json is always every run, written one record at a time.
TABLE_ROWS = 50

LENGTH_COLUMNS = ("wall_span", "training_time", "age")  # seconds, shown as 1m 30s


def default_columns(runs: Sequence[RunInfo], metric: str | None, shown: dict[str, bool] | None = None) -> list[str]:
    """The default columns; ``shown`` says which of source/tag/export some run has (else asked of ``runs``)."""
    if shown is None:
        shown = {"source": any(run.source for run in runs), "tag": any(run.tags for run in runs),
                 "export": any(run.exports for run in runs)}
    columns = [column for column in DEFAULT_COLUMNS if shown.get(column, True)]
    if metric:
        columns.append(f"best.{metric}")
    return columns


def parse_columns(spec: str | None, runs: Sequence[RunInfo], metric: str | None) -> list[str]:
    base = default_columns(runs, metric)
    if not spec:
        return base
    adding = spec.startswith("+")
    names = [c.strip() for c in spec.lstrip("+").split(",") if c.strip()]
    names = [KEY_ALIASES.get(n, n) for n in names]
    names = [n[len("config."):] if n.startswith("config.") else n for n in names]
    return base + [n for n in names if n not in base] if adding else names


def header(column: str) -> str:
    return {"step": "last step", "tag": "tags", "best": "best", "wall_span": "wall span",
            "training_time": "training time", "export": "exported to"}.get(column, column)


def cell(run: RunInfo, column: str) -> str:
    """The text of one cell."""
    if column == "status":
        text = run.status
        failure = run.failure
        stop = run.summary.get("interrupted") if run.status == INTERRUPTED else None
        if failure.get("check") and run.status != COMPLETED:
            at = failure.get("step")
            text += f" ({failure['check']}" + (f"@{at})" if at is not None else ")")
        elif isinstance(stop, dict) and stop.get("signal"):  # why it stopped: the signal, at its step
            text += f" ({stop['signal']}" + (f"@{stop['step']})" if stop.get("step") is not None else ")")
        return text
    value = run.value(column)
    if value is MISSING:
        return "-"
    if column in ("start", "end", "heartbeat"):
        return format_time(value)
    if column in LENGTH_COLUMNS:
        return format_duration(value)
    return format_cell(value)


def _sort_key(value: Any) -> tuple[int, Any]:
    if value is MISSING or value is None or (isinstance(value, float) and math.isnan(value)):
        return (2, 0)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value))
    return (1, str(value))


def sort_runs(runs: list[RunInfo], key: str | None) -> list[RunInfo]:
    """Sorted by ``key`` (``-key`` descending); runs without the key last either way."""
    if not key:
        return runs
    descending = key.startswith("-")
    key = key.lstrip("-+")
    present = [r for r in runs if _sort_key(r.value(key))[0] < 2]
    absent = [r for r in runs if _sort_key(r.value(key))[0] == 2]
    present.sort(key=lambda r: _sort_key(r.value(key)), reverse=descending)
    return present + absent


def unknown_keys(keys: Sequence[str], runs: Sequence[RunInfo]) -> list[str]:
    """Keys (of a filter, the columns or the sort) that no run has: worth a one-line warning."""
    known = set(FIELD_NAMES)
    return [key for key in dict.fromkeys(keys)
            if key not in known and runs and all(run.value(key) is MISSING for run in runs)]


def default_metric(runs: Sequence[RunInfo], wanted: str | None) -> str | None:
    return wanted or main_metric(runs)


_PREFERRED = ("val/loss", "val_loss", "valid/loss", "eval/loss", "test/loss", "val/acc", "train/loss", "loss")


def main_metric(runs: Sequence[RunInfo]) -> str | None:
    """The metric ``lt ls`` shows the best value of: a validation loss when the runs have one, else the
    most common validation metric, else a training loss, else the most common metric."""
    counts: dict[str, int] = {}
    for run in runs:
        for key in run.metric_names("best"):
            counts[key] = counts.get(key, 0) + 1
    return main_metric_of(counts)


def main_metric_of(counts: dict[str, int]) -> str | None:
    """:func:`main_metric` from how many runs have each best metric."""
    if not counts:
        return None
    for key in _PREFERRED:
        if key in counts:
            return key

    def rank(key: str) -> tuple[int, int, int, str]:
        low = key.lower()
        return (0 if low.startswith(("val", "valid", "eval")) else 1, 0 if "loss" in low else 1, -counts[key], key)

    return min(counts, key=rank)
