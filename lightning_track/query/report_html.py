"""``lt report``: one self-contained HTML file about several runs.

Opens offline from a disk or a mail attachment: no server, no network, no CDN; the style sheet and
the script (``resources/report.css``, ``resources/report.js``, hand-written, ~10 KiB) are inlined, and
the curves travel as JSON inside the page. Tables (runs, failures, metrics with the better run
marked, config differences, system peaks, console tails) are rendered here as HTML; the script only
draws the curves and makes them interactive (zoom, hover, smoothing, log scale, hiding runs).

Size: each curve is downsampled to ``points`` buckets (mean line plus min/max band, so spikes stay;
NaN/inf steps as markers, :mod:`..derived.curves`), values to 5 significant digits: 10 runs x 10
metrics x 100k steps make about 1 MB.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ..derived.curves import downsample
from ..errors import RunFolderError, one_line
from ..folder.fileio import atomic_write_text, restore_nonfinite
from ..folder.layout import RunLayout
from ..vocabulary import COMPLETED, iso_time
from .compare import cell_text, compare_runs, labels, metric_mode, metric_rows
from .filters import MISSING
from .format import format_cell, format_duration, format_time
from .history import read_histories
from .report_lineage import lineage_html
from .runs import RunInfo, main_metric
from .show import console_tail, system_peaks
from .sweeps import TrialRow, group_by_sweep, rank_trials, sweep_record

__all__ = ["build_report", "write_report", "curve_runs", "POINTS", "COLORS", "MANY_RUNS", "CURVE_RUNS"]

POINTS = 400
MANY_RUNS = 30  # past this many runs: one row per run, curves and per-run sections for the best CURVE_RUNS only
CURVE_RUNS = 10
CONFIG_COLUMNS = 8  # differing config keys shown as columns of the runs table when there are many runs
CONSOLE_LINES = 40
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf"]
_SKIP = {"epoch"}
_RESOURCES = Path(__file__).resolve().parent.parent / "resources"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _numbers(values: np.ndarray | None) -> str:
    """A JSON array of 5-significant-digit numbers, ``null`` for NaN (the smallest faithful text)."""
    if values is None:
        return "null"
    return "[" + ",".join("null" if v != v or v in (np.inf, -np.inf) else f"{v:.5g}" for v in values.tolist()) + "]"


def _series_json(run: int, curve: Any) -> str:
    bad = orjson.dumps([[s, k] for s, k in curve.bad]).decode()
    return (f'{{"run":{run},"n":{curve.records},"x":[{",".join(map(str, curve.x.tolist()))}],'
            f'"y":{_numbers(curve.y)},"lo":{_numbers(curve.lo)},"hi":{_numbers(curve.hi)},"bad":{bad}}}')


def _system_series(run: RunInfo) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``system.jsonl`` as seconds since the run started -> value, per metric (whole lines only)."""
    path = run.path / RunLayout.SYSTEM_JSONL
    if not path.is_file():
        return {}
    data = path.read_bytes()
    columns: dict[str, list[tuple[float, float]]] = {}
    start = run.start or 0.0
    for raw in data[: data.rfind(b"\n") + 1].splitlines():
        try:
            obj = orjson.loads(raw)
            when = float(obj["time"])
            values = obj.get("metrics") or {}
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
        for key, value in values.items():
            value = restore_nonfinite(value)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                columns.setdefault(key, []).append((when - start, float(value)))
    return {k: (np.array([round(t) for t, _ in v], dtype=np.int64), np.array([x for _, x in v])) for k, v in
            columns.items()}


def curve_runs(runs: Sequence[RunInfo], metric: str | None, count: int = CURVE_RUNS) -> list[int]:
    """The indexes of the ``count`` runs with the best ``metric`` (by its mode), in the runs' order; runs
    without it only when fewer have it. Why: curves of thousands of runs are unreadable and make the page huge."""
    if len(runs) <= count:
        return list(range(len(runs)))
    mode = metric_mode(runs, metric) if metric else None
    sign = -1.0 if mode == "max" else 1.0

    def rank(i: int) -> tuple[int, float, int]:
        value = runs[i].metric("best", metric) if metric else MISSING
        good = isinstance(value, float) and value == value and abs(value) != float("inf")
        return (0, sign * value, i) if good else (1, 0.0, i)

    return sorted(sorted(range(len(runs)), key=rank)[:count])


def _histories(runs: Sequence[RunInfo], metrics: Sequence[str] | None, problems: list[str],
               picked: Sequence[int] | None = None) -> list[Any]:
    """Each run's history (None where unread: not among ``picked``, or unreadable)."""
    wanted = range(len(runs)) if picked is None else picked
    read = dict(zip(wanted, read_histories([runs[i].path for i in wanted], metrics), strict=True))
    histories: list[Any] = []
    for i in range(len(runs)):
        history = read.get(i)
        if history is None:
            histories.append(None)
            continue
        if isinstance(history, RunFolderError):  # one unreadable run must not stop the report
            problems.append(one_line(history))
            history = None
        else:
            problems.extend(history.problems)
        histories.append(history)
    return histories


def _charts(runs: Sequence[RunInfo], histories: list[Any], metrics: Sequence[str], points: int,
            picked: Sequence[int]) -> list[str]:
    charts = []
    for key in metrics:
        series = []
        for i, history in enumerate(histories):
            if history is not None and key in history.columns:
                steps, values = history.series(key)
                series.append(_series_json(i, downsample(steps, values, points)))
        if series:
            charts.append(f'{{"key":{orjson.dumps(key).decode()},"x":"step","series":[{",".join(series)}]}}')
    system: dict[str, list[str]] = {}
    for i in picked:
        for key, (seconds, values) in _system_series(runs[i]).items():
            system.setdefault(key, []).append(_series_json(i, downsample(seconds, values, points)))
    for key, series in system.items():
        charts.append(f'{{"key":{orjson.dumps(key).decode()},"x":"seconds since start","series":[{",".join(series)}]}}')
    return charts


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(rows_cells) + "</tr>" for rows_cells in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _metrics_html(comp: Any) -> str:
    rows = [[f"<td>{_e(label)}</td>",
             *(f'<td class="num{" win" if won else ""}">{_e(text)}</td>' for text, won in cells)]
            for label, cells in metric_rows(comp)]
    return _table(["metric", *(_e(label) for label in comp.labels)], rows) if rows else "<p>(no metrics)</p>"


def _td(text: Any, cls: str = "") -> str:
    return f'<td class="{cls}">{_e(text)}</td>' if cls else f"<td>{_e(text)}</td>"


def _runs_table(runs: Sequence[RunInfo], names: list[str], colors: list[str | None], *, metric: str | None = None,
                config: Sequence[tuple[str, list[Any]]] = ()) -> str:
    """One row per run; ``metric`` (its best value) and ``config`` (differing keys) as extra columns."""
    rows = []
    for i, (label, run, color) in enumerate(zip(names, runs, colors, strict=True)):
        where = (run.host or "-") + (f" ({run.source})" if run.source else "")
        chip = f'<span class="chip" style="background:{color}"></span>' if color else ""
        extra = [_td("-" if metric is None or run.metric("best", metric) is MISSING
                     else format_cell(run.metric("best", metric)), "num")] if metric else []
        extra += [_td(cell_text(values[i])) for _, values in config]
        rows.append([f"<td>{chip}{label}</td>", _td(run.name),
                     _td(run.status, f"st-{run.status}"), _td(run.dataset), _td(run.method), _td(where),
                     _td(format_time(run.start)), _td(format_duration(run.wall_span), "num"),
                     _td(format_cell(run.summary.get("last_step")), "num"), _td(", ".join(run.tags) or "-"),
                     _td(run.notes or "-"), *extra])
    head = ["", "run", "status", "dataset", "method", "host", "start", "wall span", "last step", "tags", "notes"]
    head += [f"best {_e(metric)}"] if metric else []
    return _table(head + [_e(key) for key, _ in config], rows)


def _sweeps(runs: Sequence[RunInfo], names: list[str]) -> list[str]:
    """A section per sweep two or more of the runs belong to: its trials by best metric, best first."""
    parts = []
    for sweep, idx in group_by_sweep([run.summary for run in runs]).items():
        records = [sweep_record(runs[i].summary) or {} for i in idx]
        rows = [TrialRow(trial=int(r.get("trial", -1)), overrides=dict(r.get("overrides") or {}), state=runs[i].status,
                         run=names[i]) for i, r in zip(idx, records, strict=True)]
        metric, mode, ordered = rank_trials(rows, [runs[i].summary for i in idx], metric=records[0].get("metric"),
                                            mode=records[0].get("mode"))
        keys = list(dict.fromkeys(k for r in ordered for k in r.overrides))
        head = "".join(f"<th>{_e(h)}</th>" for h in ["rank", "run", "trial", *keys, "status",
                                                     f"{metric or 'metric'} ({mode})", "step"])
        body = "".join(
            '<tr class="trial">' + _td(n if row.value is not None else "-", "num") + _td(row.run)
            + _td(row.trial, "num") + "".join(_td(format_cell(row.overrides.get(k))) for k in keys)
            + _td(row.state, f"st-{row.state}") + _td(format_cell(row.value), "num") + _td(format_cell(row.step), "num")
            + "</tr>" for n, row in enumerate(ordered, 1))
        parts += [f"<h2>Sweep {_e(sweep)}</h2>", f"<table><tr>{head}</tr>{body}</table>"]
    return parts


def _failure(label: str, run: RunInfo) -> str:
    f = run.failure
    detail = ", ".join(f"{k} {format_cell(restore_nonfinite(f[k]))}" for k in ("check", "value", "threshold", "step")
                       if f.get(k) is not None)
    why = f" - {_e(run.why)}" if run.why else ""
    more = f"<br>{_e(detail)}" if detail else ""
    return f'<div class="fail"><b>{label} {_e(run.name)}: {_e(run.status)}</b>{why}{more}</div>'


def _curves(charts: list[str], runs: Sequence[RunInfo], names: list[str], colors: list[str | None]) -> list[str]:
    legend = "".join(f'<span data-run="{i}"><span class="chip" style="background:{c}"></span>{label} {_e(run.name)}'
                     "</span>" for i, (label, run, c) in enumerate(zip(names, runs, colors, strict=True)) if c)
    parts = ['<h2>Curves</h2><div class="controls"><label>smoothing <input id="smooth" type="range" min="0" '
             'max="0.99" step="0.01" value="0"> <span id="smooth-value">0</span></label><label><input id="logy" '
             f'type="checkbox"> log scale</label><span class="legend">{legend}</span>'
             '<span class="sub">drag: zoom, double-click: reset, ▼: NaN/inf</span></div><div class="charts">']
    for i, chart in enumerate(charts):
        spec = orjson.loads(chart)
        parts.append(f'<div class="chart" data-chart="{i}"><h3>{_e(spec["key"])}<small>{_e(spec["x"])}</small></h3>'
                     '<canvas></canvas><div class="tip"></div></div>')
    return [*parts, "</div>"]


def _system_and_console(runs: Sequence[RunInfo], names: list[str], problems: list[str]) -> list[str]:
    parts: list[str] = []
    peaks = [(label, run, system_peaks(run, problems)) for label, run in zip(names, runs, strict=True)]
    if any(p for _, _, p in peaks):
        parts.append("<h2>System</h2>")
        for label, run, values in peaks:
            if values:
                rows = [[_td(k), _td(format_cell(v), "num")] for k, v in values.items()]
                parts.append(f"<details open><summary>{label} {_e(run.name)}</summary>"
                             f"{_table(['metric', 'value'], rows)}</details>")
    tails = [(label, run, console_tail(run, CONSOLE_LINES)) for label, run in zip(names, runs, strict=True)]
    if any(tail for _, _, tail in tails):
        parts.append("<h2>Console</h2>")
        for label, run, tail in tails:
            if tail:
                parts.append(f"<details><summary>{label} {_e(run.name)}: last {len(tail)} lines of "
                             f"{RunLayout.LOGS}</summary><pre>{_e(chr(10).join(tail))}</pre></details>")
    return parts


def build_report(runs: Sequence[RunInfo], *, metrics: Sequence[str] | None = None, points: int = POINTS,
                 title: str | None = None, problems: list[str] | None = None) -> str:
    """The HTML text. ``metrics``: the curves and rows to show (default: every metric but ``epoch``)."""
    problems = [] if problems is None else problems
    many = len(runs) > MANY_RUNS
    main = (metrics[0] if metrics else main_metric(runs)) if many else None
    picked = curve_runs(runs, main) if many else list(range(len(runs)))
    histories = _histories(runs, metrics, problems, picked)
    logged = list(dict.fromkeys(k for h in histories if h is not None for k in h.keys))
    comp = compare_runs(runs, metrics, known=logged)
    for key in comp.missing:
        problems.append(f"no run has metric {key!r}")
    names = labels(len(runs))
    colors: list[str | None] = [None] * len(runs)
    for n, i in enumerate(picked):
        colors[i] = COLORS[n % len(COLORS)]
    chart_keys = [k for k in comp.metrics if k not in _SKIP]
    charts = _charts(runs, histories, chart_keys, points, picked)
    data = {"runs": [{"label": label, "name": run.name, "color": color or ""}
                     for label, run, color in zip(names, runs, colors, strict=True)]}
    data_json = orjson.dumps(data).decode()[:-1] + f',"charts":[{",".join(charts)}]}}'
    title = title or (f"{len(runs)} runs" if len(runs) != 1 else runs[0].name)

    parts = [f"<h1>{_e(title)}</h1>", f'<div class="sub">lt report, {_e(iso_time())}</div>', "<h2>Runs</h2>"]
    if many:
        shown = comp.config_diff[:CONFIG_COLUMNS]
        more = len(comp.config_diff) - len(shown)
        which = f"the {len(picked)} with the best {_e(main)}" if main else f"the first {len(picked)}"
        first = f" (the first {len(shown)} of {len(comp.config_diff)})" if more else ""
        parts += [f'<p class="sub">{len(runs)} runs: one row each, with '
                  + (f"the best {_e(main)} and " if main else "")
                  + f"the config keys that differ{first}; curves, system and console for {which} (marked). "
                  "lt report RUN... or --filter picks others.</p>",
                  _runs_table(runs, names, colors, metric=main, config=shown)]
    else:
        parts.append(_runs_table(runs, names, colors))
    parts += _sweeps(runs, names)
    failures = [_failure(label, run) for label, run in zip(names, runs, strict=True)
                if run.status != COMPLETED and (run.failure or run.why)]
    if failures:
        parts += ["<h2>Failures</h2>", *failures]
    if not many:
        parts += ["<h2>Metrics</h2>", _metrics_html(comp), "<h2>Config differences</h2>"]
        if comp.config_diff:
            parts.append(_table(["key", *names], [[_td(k), *(_td(cell_text(v)) for v in values)]
                                                  for k, values in comp.config_diff]))
        else:
            parts.append("<p>(identical)</p>" if len(runs) > 1 else "<p>(one run)</p>")
    parts += lineage_html(runs, names)  # checkpoints, resumes, final model, evaluated: a few runs only
    parts += _curves(charts, runs, names, colors)
    parts += _system_and_console([runs[i] for i in picked], [names[i] for i in picked], problems)
    if problems:
        parts += ["<h2>Problems reading the runs</h2><ul>", *(f"<li>{_e(p)}</li>" for p in dict.fromkeys(problems)),
                  "</ul>"]
    css = (_RESOURCES / "report.css").read_text(encoding="utf-8")
    js = (_RESOURCES / "report.js").read_text(encoding="utf-8").replace("</script", "<\\/script")
    safe_json = data_json.replace("<", "\\u003c")  # no "</script" or "<!--" can end or change the data block
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" "
            f"content=\"width=device-width,initial-scale=1\"><title>{_e(title)}</title><style>{css}</style></head>"
            f"<body><main>{''.join(parts)}</main><script type=\"application/json\" id=\"lt-data\">{safe_json}</script>"
            f"<script>{js}</script></body></html>\n")


def write_report(path: str, runs: Sequence[RunInfo], **kwargs: Any) -> str:
    """Build and write atomically; returns the HTML."""
    text = build_report(runs, **kwargs)
    atomic_write_text(path, text)
    return text
