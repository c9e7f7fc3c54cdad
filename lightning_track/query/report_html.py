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
from .compare import cell_text, compare_runs, labels, metric_rows
from .format import format_cell, format_duration, format_time
from .history import read_histories
from .runs import RunInfo
from .show import console_tail, system_peaks
from .sweeps import TrialRow, group_by_sweep, rank_trials, sweep_record

__all__ = ["build_report", "write_report", "POINTS", "COLORS"]

POINTS = 400
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


def _histories(runs: Sequence[RunInfo], metrics: Sequence[str] | None, problems: list[str]) -> list[Any]:
    histories: list[Any] = []
    for history in read_histories([run.path for run in runs], metrics):
        if isinstance(history, RunFolderError):  # one unreadable run must not stop the report
            problems.append(one_line(history))
            history = None
        else:
            problems.extend(history.problems)
        histories.append(history)
    return histories


def _charts(runs: Sequence[RunInfo], histories: list[Any], metrics: Sequence[str], points: int) -> list[str]:
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
    for i, run in enumerate(runs):
        for key, (seconds, values) in _system_series(run).items():
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


def _runs_table(runs: Sequence[RunInfo], names: list[str], colors: list[str]) -> str:
    rows = []
    for label, run, color in zip(names, runs, colors, strict=True):
        where = (run.host or "-") + (f" ({run.source})" if run.source else "")
        rows.append([f'<td><span class="chip" style="background:{color}"></span>{label}</td>', _td(run.name),
                     _td(run.status, f"st-{run.status}"), _td(run.dataset), _td(run.method), _td(where),
                     _td(format_time(run.start)), _td(format_duration(run.wall_span), "num"),
                     _td(format_cell(run.summary.get("last_step")), "num"), _td(", ".join(run.tags) or "-"),
                     _td(run.notes or "-")])
    return _table(["", "run", "status", "dataset", "method", "host", "start", "wall span", "last step", "tags",
                   "notes"], rows)


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


def _curves(charts: list[str], runs: Sequence[RunInfo], names: list[str], colors: list[str]) -> list[str]:
    legend = "".join(f'<span data-run="{i}"><span class="chip" style="background:{c}"></span>{label} {_e(run.name)}'
                     "</span>" for i, (label, run, c) in enumerate(zip(names, runs, colors, strict=True)))
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
    histories = _histories(runs, metrics, problems)
    logged = list(dict.fromkeys(k for h in histories if h is not None for k in h.keys))
    comp = compare_runs(runs, metrics, known=logged)
    for key in comp.missing:
        problems.append(f"no run has metric {key!r}")
    names = labels(len(runs))
    colors = [COLORS[i % len(COLORS)] for i in range(len(runs))]
    chart_keys = [k for k in comp.metrics if k not in _SKIP]
    charts = _charts(runs, histories, chart_keys, points)
    data = {"runs": [{"label": label, "name": run.name, "color": color}
                     for label, run, color in zip(names, runs, colors, strict=True)]}
    data_json = orjson.dumps(data).decode()[:-1] + f',"charts":[{",".join(charts)}]}}'
    title = title or (f"{len(runs)} runs" if len(runs) != 1 else runs[0].name)

    parts = [f"<h1>{_e(title)}</h1>", f'<div class="sub">lt report, {_e(iso_time())}</div>', "<h2>Runs</h2>",
             _runs_table(runs, names, colors), *_sweeps(runs, names)]
    failures = [_failure(label, run) for label, run in zip(names, runs, strict=True)
                if run.status != COMPLETED and (run.failure or run.why)]
    if failures:
        parts += ["<h2>Failures</h2>", *failures]
    parts += ["<h2>Metrics</h2>", _metrics_html(comp), "<h2>Config differences</h2>"]
    if comp.config_diff:
        parts.append(_table(["key", *names], [[_td(k), *(_td(cell_text(v)) for v in values)]
                                              for k, values in comp.config_diff]))
    else:
        parts.append("<p>(identical)</p>" if len(runs) > 1 else "<p>(one run)</p>")
    parts += _curves(charts, runs, names, colors)
    parts += _system_and_console(runs, names, problems)
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
