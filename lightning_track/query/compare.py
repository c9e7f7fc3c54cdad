"""``lt compare``: runs side by side. Only the config keys that differ; best and final values of each
metric with the better run marked (by the metric's direction: the summary's ``mode``, else inferred
from its name); overlaid curves as a compact text chart (and a PNG through :mod:`..derived.plots`).

Runs are labelled ``a``, ``b``, ``c``... in every section, because run names are too long for columns.
"""

from __future__ import annotations

import math
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..derived.digest import infer_mode
from ..errors import one_line
from .filters import MISSING
from .format import format_cell, table
from .history import read_history
from .listing import main_metric
from .provenance import provenance_sections, read_provenance
from .runs import RunInfo

__all__ = ["Aliased", "Comparison", "cell_text", "compare_runs", "config_value", "render_compare", "text_chart",
           "labels", "metric_series", "metric_mode", "winner"]


def labels(count: int) -> list[str]:
    """``a``..``z``, ``aa``..``zz``, ``aaa``...: as many distinct labels as there are runs (bijective base 26)."""
    return [_label(i) for i in range(count)]


def _label(index: int) -> str:
    letters = string.ascii_lowercase
    text = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        text = letters[rest] + text
    return text


@dataclass
class Comparison:
    runs: list[RunInfo]
    labels: list[str]
    config_diff: list[tuple[str, list[Any]]] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # asked-for metrics that no run has
    provenance: list[tuple[str, list[tuple[str, list[str]]]]] = field(default_factory=list)  # code, env, inputs


def metric_mode(runs: Sequence[RunInfo], key: str) -> str | None:
    for run in runs:
        entry = (run.summary.get("best") or {}).get(key)
        if isinstance(entry, dict) and entry.get("mode") in ("min", "max"):
            return entry["mode"]
    return infer_mode(key)


@dataclass(frozen=True)
class Aliased:
    """A run's value of a config key, found under another name of the same setting (``lr`` for ``model.lr``)."""

    value: Any
    name: str

    def __str__(self) -> str:
        return f"{format_cell(self.value)} (as {self.name})"


def config_value(config: dict[str, Any], key: str) -> Any:
    """``config[key]``; else the same setting under the name Lightning or the config gave it.

    A module's ``save_hyperparameters()`` logs ``lr`` flat; a run whose config already held it as
    ``model.lr`` records it there only. So a flat key missing in a run is that run's nested value of
    the same name (when its nested values of that name agree), and a nested key missing is the
    run's flat value of its last part: equal settings never look missing, whichever name each run used.
    """
    if key in config:
        return config[key]
    if "." in key:
        leaf = key.rsplit(".", 1)[1]
        return Aliased(config[leaf], leaf) if leaf in config else MISSING
    found = {k: v for k, v in config.items() if k.endswith("." + key)}
    values = list(found.values())
    if values and all(v == values[0] and type(v) is type(values[0]) for v in values[1:]):
        return Aliased(values[0], next(iter(found)))
    return MISSING


def cell_text(value: Any) -> str:
    """A config value as ``lt compare`` and the report show it (``-`` when the run has no such key)."""
    if value is MISSING:
        return "-"
    return str(value) if isinstance(value, Aliased) else format_cell(value)


def compare_runs(runs: Sequence[RunInfo], metrics: Sequence[str] | None = None, known: Sequence[str] = (),
                 provenance: bool = False) -> Comparison:
    """``known``: metric names found in the runs' histories (a running run's summary has none yet);
    ``provenance``: also read and compare the runs' code, environment and inputs (``lt compare`` shows them;
    the report does not, and over many runs would pay for the reads)."""
    result = Comparison(list(runs), labels(len(runs)))
    configs = [run.config for run in runs]
    keys = list(dict.fromkeys(k for config in configs for k in config))
    shown: set[str] = set()
    for key in keys:
        values = [config_value(config, key) for config in configs]
        plain = [v.value if isinstance(v, Aliased) else v for v in values]
        if any(v != plain[0] or type(v) is not type(plain[0]) for v in plain[1:]):
            names = {v.name for v in values if isinstance(v, Aliased)}
            if key in shown or (names & shown):
                continue  # the same setting, already a row under its other name
            shown |= {key} | names
            result.config_diff.append((key, values))
    if provenance:
        result.provenance = provenance_sections([read_provenance(run.path) for run in runs])
    have = list(dict.fromkeys([*(k for run in runs for k in run.metric_names("final") + run.metric_names("best")),
                               *known]))
    if metrics:
        result.metrics = [m for m in metrics if m in have]
        result.missing = [m for m in metrics if m not in have]
    else:
        main = main_metric(runs)
        rest = sorted((k for k in have if k != main and k != "epoch"),
                      key=lambda k: (not k.lower().startswith(("val", "eval", "test")), k))
        result.metrics = ([main] if main else []) + rest
    return result


def winner(values: list[Any], mode: str | None) -> int | None:
    finite = [(v, i) for i, v in enumerate(values) if isinstance(v, float) and math.isfinite(v)]
    if mode not in ("min", "max") or len(finite) < 2 or len({v for v, _ in finite}) == 1:
        return None
    return (min(finite) if mode == "min" else max(finite))[1]


def metric_rows(comp: Comparison) -> Iterator[tuple[str, list[tuple[str, bool]]]]:
    """One row per metric and ``best``/``final`` that some run has: the row's label and, per run, the
    value's text (``value @step``, ``-`` when the run lacks it) and whether it wins. Shared by the
    terminal table and the HTML report."""
    for key in comp.metrics:
        mode = metric_mode(comp.runs, key)
        for which in ("best", "final"):
            values = [run.metric(which, key) for run in comp.runs]
            if all(v is MISSING for v in values):
                continue
            win = winner(values, mode)
            cells = []
            for i, (run, value) in enumerate(zip(comp.runs, values, strict=True)):
                step = ((run.summary.get(which) or {}).get(key) or {}).get("step")
                text = "-" if value is MISSING else format_cell(value) + (f" @{step}" if step is not None else "")
                cells.append((text, i == win))
            yield f"{key} {which}" + (f" ({mode})" if which == "best" and mode else ""), cells


def _metric_rows(comp: Comparison) -> list[list[str]]:
    return [[label, *(text + (" *" if won else "") for text, won in cells)] for label, cells in metric_rows(comp)]


def metric_series(runs: Sequence[RunInfo], key: str, problems: list[str]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(label, steps, values)`` of ``key`` for each run that logged it."""
    out = []
    for label, run in zip(labels(len(runs)), runs, strict=True):
        try:
            history = read_history(run.path, [key])
        except Exception as exc:  # noqa: BLE001 - one run's unreadable history must not stop the others
            problems.append(one_line(exc))
            continue
        problems.extend(history.problems)
        if key in history.columns:
            steps, values = history.series(key)
            out.append((label, steps, values))
    return out


def text_chart(series: Sequence[tuple[str, np.ndarray, np.ndarray]], width: int = 72, height: int = 12,
               title: str = "") -> list[str]:
    """Overlaid curves in plain text: each run drawn with its label letter, ``#`` where runs overlap,
    ``!`` along the top where a value was NaN or infinite."""
    drawn = [(label, np.asarray(s), np.asarray(v, dtype=np.float64)) for label, s, v in series if len(s)]
    if not drawn:
        return []
    x0 = min(int(s.min()) for _, s, _ in drawn)
    x1 = max(int(s.max()) for _, s, _ in drawn)
    finite = np.concatenate([v[np.isfinite(v)] for _, _, v in drawn])
    plot_w = max(8, width - 11)
    grid = [[" "] * plot_w for _ in range(height)]
    y0, y1 = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    if y0 == y1:  # a constant curve sits in the middle
        y0, y1 = y0 - (abs(y0) * 0.1 or 1.0), y1 + (abs(y1) * 0.1 or 1.0)
    span_y = y1 - y0
    span_x = (x1 - x0) or 1
    for label, steps, values in drawn:
        cols = np.minimum(((steps - x0) * (plot_w - 1) / span_x).round().astype(np.int64), plot_w - 1)
        ok = np.isfinite(values)
        for col in np.unique(cols[~ok]):
            grid[0][col] = "!"
        if ok.any():
            sums = np.bincount(cols[ok], weights=values[ok], minlength=plot_w)
            counts = np.bincount(cols[ok], minlength=plot_w)
            for col in np.flatnonzero(counts):
                row = int(round((y1 - sums[col] / counts[col]) / span_y * (height - 1)))
                cell = grid[row][col]
                grid[row][col] = label[0] if cell in (" ", label[0]) else ("#" if cell != "!" else "!")
    top, bottom = format_cell(y1), format_cell(y0)
    pad = max(len(top), len(bottom))
    lines = [title] if title else []
    for i, row in enumerate(grid):
        tick = top if i == 0 else bottom if i == height - 1 else ""
        lines.append(f"{tick:>{pad}} {'┤' if tick else '│'}" + "".join(row).rstrip())
    lines.append(" " * pad + " └" + "─" * plot_w)
    left, right = str(x0), str(x1)
    lines.append(" " * (pad + 2) + left + "step".center(plot_w - len(left) - len(right)) + right)
    return lines


def render_compare(comp: Comparison, *, chart_metrics: Sequence[str] = (), width: int = 72,
                   problems: list[str] | None = None) -> str:
    problems = [] if problems is None else problems
    out = ["runs"]
    out += [f"  {label}  {run.name}  {run.status}  last step {format_cell(run.summary.get('last_step'))}"
            + (f"  ({run.source})" if run.source else "") for label, run in zip(comp.labels, comp.runs, strict=True)]
    out += ["", "config (keys that differ)"]
    if comp.config_diff:
        rows = [[key, *(cell_text(v) for v in values)] for key, values in comp.config_diff]
        out += ["  " + line for line in table(["key", *comp.labels], rows, max_width=30).splitlines()]
    else:
        out.append("  (identical)")
    for section, differing in comp.provenance:  # only where the runs differ
        out += ["", f"{section} (what differs)"]
        out += ["  " + line for line in table(["", *comp.labels], [[name, *values] for name, values in differing],
                                              max_width=40).splitlines()]
    rows = _metric_rows(comp)
    if rows:
        out += ["", "metrics (* = better)"]
        out += ["  " + line for line in table(["metric", *comp.labels], rows, max_width=30,
                                              right=[False] + [True] * len(comp.runs)).splitlines()]
    for key in chart_metrics:
        lines = text_chart(metric_series(comp.runs, key, problems), width=width, title=key)
        if lines:
            out += ["", *lines]
    return "\n".join(out)
