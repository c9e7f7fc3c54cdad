"""``lt report``: one self-contained HTML file about several runs.

Opens offline from a disk or a mail attachment: no server, no network, no CDN; the style sheet and
the script (``resources/report.css``, ``resources/report.js``, hand-written, ~10 KiB) are inlined, and
the curves travel as JSON inside the page. Tables (runs, failures, metrics with the better run
marked, config differences, system peaks, console tails) are rendered here as HTML; the script only
draws the curves and makes them interactive (zoom, hover, smoothing, log scale, hiding runs).

Size: each curve is downsampled to ``points`` buckets (mean line plus min/max band, so spikes stay;
NaN/inf steps as markers, :mod:`..derived.curves`), values to 5 significant digits: 10 runs x 10
metrics x 100k steps make about 1 MB.

Past ``MANY_RUNS`` runs the page is :mod:`.report_many`'s instead (a sortable, filterable runs table,
best-metric and config views, curves of the runs the reader ticks, drawn with the vendored uPlot), with
the sweeps, the first failures and the system and console of the ``CURVE_RUNS`` best runs from here.
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
from .format import format_cell, format_duration, format_time, unicode_json, unicode_text
from .history import read_histories
from .listing import main_metric
from .report_lineage import lineage_html
from .report_many import CURVE_LIMIT, CURVE_POINTS, curve_data, many_data, many_sections
from .runs import RunInfo
from .show import console_tail, system_peaks
from .sweeps import TrialRow, group_by_sweep, rank_trials, sweep_record

__all__ = ["build_report", "write_report", "curve_runs", "POINTS", "COLORS", "MANY_RUNS", "CURVE_RUNS"]

POINTS = 400
MANY_RUNS = 30  # past this many runs: report_many's view; system and console for the best CURVE_RUNS only
CURVE_RUNS = 10
FAILURES_SHOWN = 50  # past MANY_RUNS: the failures listed one by one (a sweep can have thousands)
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


def _runs_table(runs: Sequence[RunInfo], names: list[str], colors: list[str | None]) -> str:
    """One row per run."""
    rows = []
    for label, run, color in zip(names, runs, colors, strict=True):
        where = (run.host or "-") + (f" ({run.source})" if run.source else "")
        chip = f'<span class="chip" style="background:{color}"></span>' if color else ""
        rows.append([f"<td>{chip}{label}</td>", _td(run.name),
                     _td(run.status, f"st-{run.status}"), _td(run.dataset), _td(run.method), _td(where),
                     _td(format_time(run.start)), _td(format_duration(run.wall_span), "num"),
                     _td(format_cell(run.summary.get("last_step")), "num"), _td(", ".join(run.tags) or "-"),
                     _td(run.notes or "-")])
    head = ["", "run", "status", "dataset", "method", "host", "start", "wall span", "last step", "tags", "notes"]
    return _table(head, rows)


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


def _many(runs: Sequence[RunInfo], metrics: Sequence[str] | None, points: int, limit: int,
          problems: list[str]) -> tuple[list[str], str]:
    """Past ``MANY_RUNS``: the table, best-metric, config and ticked-curves views (:mod:`.report_many`),
    system and console of the best ``CURVE_RUNS``; returns the parts and the view's JSON."""
    main = metrics[0] if metrics else main_metric(runs)
    ticked = curve_runs(runs, main) if main else []
    held = curve_runs(runs, main, max(limit, CURVE_RUNS)) if main else []  # the ticked ones among them
    histories = _histories(runs, [main], problems, held) if main else [None] * len(runs)
    logged = [main] if main and any(h is not None and main in h.columns for h in histories) else []
    comp = compare_runs(runs, metrics, known=logged)
    for key in comp.missing:
        problems.append(f"no run has metric {key!r}")
    names = labels(len(runs))
    curves = curve_data(runs, histories, main, points) if main else {}
    data = many_data(runs, names, metric=main, mode=metric_mode(runs, main) if main else None,
                     config=comp.config_diff, curves=curves, selected=ticked)
    parts = ["<h2>Runs</h2>", *many_sections(len(runs), main, len(held), points)]
    parts += _sweeps(runs, names)
    parts += _failures(runs, names, FAILURES_SHOWN)
    parts += _system_and_console([runs[i] for i in ticked], [names[i] for i in ticked], problems)
    return parts, unicode_json(data)  # (a name that is not UTF-8: as in lt ls)


def _failures(runs: Sequence[RunInfo], names: list[str], limit: int | None = None) -> list[str]:
    """Why each run that did not complete stopped; the first ``limit`` of them (the table filters the rest)."""
    failed = [(label, run) for label, run in zip(names, runs, strict=True)
              if run.status != COMPLETED and (run.failure or run.why)]
    if not failed:
        return []
    shown = failed if limit is None else failed[:limit]
    more = (f'<p class="sub">and {len(failed) - len(shown)} more: filter the table with '
            "<code>status!=completed</code></p>") if len(shown) < len(failed) else ""
    return ["<h2>Failures</h2>", *(_failure(label, run) for label, run in shown), more]


def _script(data_id: str, data_json: str) -> str:
    safe = data_json.replace("<", "\\u003c")  # no "</script" or "<!--" can end or change the data block
    return f'<script type="application/json" id="{data_id}">{safe}</script>'


def _resource(name: str) -> str:
    return (_RESOURCES / name).read_text(encoding="utf-8").replace("</script", "<\\/script")


def build_report(runs: Sequence[RunInfo], *, metrics: Sequence[str] | None = None, points: int | None = None,
                 title: str | None = None, problems: list[str] | None = None, curves: int | None = None) -> str:
    """The HTML text. ``metrics``: the curves and rows to show (default: every metric but ``epoch``);
    ``points``: per curve (default ``POINTS``, past ``MANY_RUNS`` runs ``report_many.CURVE_POINTS``);
    ``curves``: past ``MANY_RUNS``, how many runs' curves the file holds (default ``report_many.CURVE_LIMIT``)."""
    problems = [] if problems is None else problems
    title = title or (f"{len(runs)} runs" if len(runs) != 1 else runs[0].name)
    head = [f"<h1>{_e(title)}</h1>", f'<div class="sub">lt report, {_e(iso_time())}</div>']
    css, scripts = [_resource("report.css")], []
    if len(runs) > MANY_RUNS:
        parts, many_json = _many(runs, metrics, points or CURVE_POINTS, curves or CURVE_LIMIT, problems)
        data_json = orjson.dumps({"runs": [], "charts": []}).decode()
        css.append(_resource("uPlot.min.css"))
        scripts = [_script("lt-many", many_json), f"<script>{_resource('uPlot.iife.min.js')}</script>",
                   f"<script>{_resource('report_many.js')}</script>"]
    else:
        parts, data_json = _few(runs, metrics, points or POINTS, problems)
    if problems:
        parts += ["<h2>Problems reading the runs</h2><ul>", *(f"<li>{_e(p)}</li>" for p in dict.fromkeys(problems)),
                  "</ul>"]
    return unicode_text(  # (a name that is not UTF-8: as in lt ls)
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" "
        f"content=\"width=device-width,initial-scale=1\"><title>{_e(title)}</title><style>{''.join(css)}</style>"
        f"</head><body><main>{''.join(head + parts)}</main>{_script('lt-data', data_json)}"
        f"<script>{_resource('report.js')}</script>{''.join(scripts)}</body></html>\n")


def _few(runs: Sequence[RunInfo], metrics: Sequence[str] | None, points: int,
         problems: list[str]) -> tuple[list[str], str]:
    """Up to ``MANY_RUNS``: every section for every run; returns the parts and the curves' JSON."""
    picked = list(range(len(runs)))
    histories = _histories(runs, metrics, problems, picked)
    logged = list(dict.fromkeys(k for h in histories if h is not None for k in h.keys))
    comp = compare_runs(runs, metrics, known=logged)
    for key in comp.missing:
        problems.append(f"no run has metric {key!r}")
    names = labels(len(runs))
    colors: list[str | None] = [COLORS[n % len(COLORS)] for n in range(len(runs))]
    chart_keys = [k for k in comp.metrics if k not in _SKIP]
    charts = _charts(runs, histories, chart_keys, points, picked)
    data = {"runs": [{"label": label, "name": run.name, "color": color or ""}
                     for label, run, color in zip(names, runs, colors, strict=True)]}
    data_json = unicode_json(data)[:-1] + f',"charts":[{",".join(charts)}]}}'
    parts = ["<h2>Runs</h2>", _runs_table(runs, names, colors)]
    parts += _sweeps(runs, names)
    parts += _failures(runs, names)
    parts += ["<h2>Metrics</h2>", _metrics_html(comp), "<h2>Config differences</h2>"]
    if comp.config_diff:
        parts.append(_table(["key", *names], [[_td(k), *(_td(cell_text(v)) for v in values)]
                                              for k, values in comp.config_diff]))
    else:
        parts.append("<p>(identical)</p>" if len(runs) > 1 else "<p>(one run)</p>")
    parts += lineage_html(runs, names)  # checkpoints, resumes, final model, evaluated: a few runs only
    parts += _curves(charts, runs, names, colors)
    parts += _system_and_console(runs, names, problems)
    return parts, data_json


def write_report(path: str, runs: Sequence[RunInfo], **kwargs: Any) -> str:
    """Build and write atomically; returns the HTML."""
    text = build_report(runs, **kwargs)
    atomic_write_text(path, text)
    return text
