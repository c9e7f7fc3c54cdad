"""The report's view of many runs (past ``MANY_RUNS``): what a sweep's reader looks at, sized for 10,000 runs.

The page gets the runs as columns of JSON (not HTML rows: a fifth of the size) and its script
(``resources/report_many.js`` over the vendored uPlot) draws: the runs table (sort by any column, filter by
text or ``key<value`` terms, tick runs), the best value of the main metric per run by start time with the
best so far, one scatter per differing config key against that best value, and the curves of the ticked
runs only.

Curves: the main metric only, for the ``CURVE_LIMIT`` runs with its best values (all runs when fewer),
each at most ``CURVE_POINTS`` points: bucket means of :func:`..derived.curves.downsample` (a one-step
spike is averaged into its bucket; the few-run report keeps the min/max band). The page says which
runs have no curve in the file. Reading a history the first time costs what parsing its ``metrics.jsonl``
costs (~0.05 s of CPU for 20k steps x 5 metrics; cached after), so the limit (``lt report --curves N``)
also bounds the time of a first report of many long runs.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..derived.curves import downsample
from .compare import Aliased
from .filters import MISSING
from .runs import RunInfo

__all__ = ["CURVE_LIMIT", "CURVE_POINTS", "SCATTER_KEYS", "many_data", "many_sections", "curve_data"]

CURVE_LIMIT = 1000
CURVE_POINTS = 200
SCATTER_KEYS = 12  # config keys drawn against the main metric (the table holds them all)
_CATEGORIES = 64  # a text column with at most this many distinct values travels as codes into a list


def _num(value: Any) -> float | int | None:
    """5 significant digits (what a table shows), None for missing and non-finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, int):
        return value
    value = float(value)
    return float(f"{value:.5g}") if value == value and abs(value) != float("inf") else None


def _text_column(key: str, label: str, values: list[str]) -> dict[str, Any]:
    distinct = list(dict.fromkeys(values))
    if len(distinct) <= _CATEGORIES and len(distinct) * 4 < len(values):
        codes = {v: i for i, v in enumerate(distinct)}
        return {"key": key, "label": label, "type": "text", "dict": distinct, "codes": [codes[v] for v in values]}
    return {"key": key, "label": label, "type": "text", "values": values}


def _config_column(key: str, values: list[Any]) -> dict[str, Any]:
    """Numbers stay numbers (sorted, compared, drawn on a numeric axis); anything else is its text."""
    plain = [v.value if isinstance(v, Aliased) else v for v in values]
    numeric = all(v is MISSING or v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
                  for v in plain)
    if numeric:
        return {"key": key, "label": key, "type": "num", "config": True,
                "values": [None if v is MISSING or v is None else _num(v) for v in plain]}
    from .compare import cell_text

    column = _text_column(key, key, [cell_text(v) for v in values])
    column["config"] = True
    return column


def curve_data(runs: Sequence[RunInfo], histories: Sequence[Any], metric: str,
               points: int = CURVE_POINTS) -> dict[str, list[list[float | None]]]:
    """Run index -> ``[steps as differences from the previous one, bucket means]`` of ``metric``."""
    curves: dict[str, list[list[float | None]]] = {}
    for i, history in enumerate(histories):
        if history is None or metric not in history.columns:
            continue
        steps, values = history.series(metric)
        curve = downsample(steps, values, points)
        x = curve.x.tolist()
        deltas = [x[0], *np.diff(curve.x).tolist()] if x else []
        curves[str(i)] = [deltas, [None if v != v else float(f"{v:.4g}") for v in curve.y.tolist()]]
    return curves


def many_data(runs: Sequence[RunInfo], names: Sequence[str], *, metric: str | None, mode: str | None,
              config: Sequence[tuple[str, list[Any]]], curves: dict[str, Any],
              selected: Sequence[int]) -> dict[str, Any]:
    """The page's data: the table's columns, the main metric, the curves and the runs ticked at first."""
    columns: list[dict[str, Any]] = [
        {"key": "label", "label": "", "type": "text", "values": list(names)},
        {"key": "run", "label": "run", "type": "text", "values": [run.name for run in runs]},
        _text_column("status", "status", [run.status for run in runs]),
        _text_column("dataset", "dataset", [run.dataset for run in runs]),
        _text_column("method", "method", [run.method for run in runs]),
        _text_column("host", "host", [(run.host or "-") + (f" ({run.source})" if run.source else "") for run in runs]),
        {"key": "start", "label": "start", "type": "time",
         "values": [None if run.start is None else round(run.start) for run in runs]},
        {"key": "wall_span", "label": "wall span", "type": "duration",
         "values": [None if run.wall_span is None else round(run.wall_span) for run in runs]},
        {"key": "step", "label": "last step", "type": "num",
         "values": [_num(run.summary.get("last_step")) for run in runs]},
        _text_column("tag", "tags", [", ".join(run.tags) for run in runs]),
        _text_column("notes", "notes", [run.notes for run in runs]),
    ]
    if metric:
        columns.append({"key": "best", "label": f"best {metric}", "type": "num", "metric": metric,
                        "values": [_num(run.metric("best", metric)) for run in runs]})
    columns += [_config_column(key, values) for key, values in config]
    return {"count": len(runs), "metric": metric, "mode": mode, "columns": columns, "curves": curves,
            "scatter_keys": SCATTER_KEYS, "selected": list(selected)}


def many_sections(count: int, metric: str | None, curve_runs: int, points: int = CURVE_POINTS) -> list[str]:
    """The places the script fills; text that says what the file holds."""
    m = html.escape(metric or "", quote=True)
    if metric:
        held = (f"the curves of {m} for all {count} runs" if curve_runs >= count else
                f"the curves of {m} for the {curve_runs} runs with the best values (the others: "
                "<code>lt report RUN...</code> or <code>--filter</code>)")
        held += f", at most {points} points each (bucket means)"
    else:
        held = "no curves (the runs have no best metric)"
    parts = [f'<p class="sub">{count} runs. Click a column to sort; filter by text or by terms such as '
             "<code>status=failed</code> <code>best&lt;0.5</code> <code>model.lr&gt;=1e-4</code> "
             "<code>name~lora</code> (all must hold); tick runs to draw their curves. "
             f"This file holds {held}.</p>",
             '<div class="many-controls"><input id="lt-filter" type="search" placeholder="filter: text or key=value, '
             'key&lt;number" size="48"> <span id="lt-count" class="sub"></span> <button id="lt-none" type="button">'
             'untick all</button> <button id="lt-all" type="button" hidden></button></div>',
             '<div class="many-table"><table id="lt-runs"><thead></thead><tbody></tbody></table></div>']
    if metric:
        parts += [f"<h2>Best {m}</h2>", '<p class="sub">each run by its start time, and the best so far; '
                  "click a point to tick its run</p>", '<div id="lt-best" class="uchart"></div>',
                  f"<h2>Config against best {m}</h2>", '<p class="sub">one view per config key that differs '
                  "between the runs; click a point to tick its run</p>", '<div id="lt-config" class="scatters"></div>',
                  f"<h2>Curves of the ticked runs: {m}</h2>", '<div id="lt-curves" class="uchart"></div>',
                  '<p id="lt-nocurve" class="sub"></p>']
    return parts
