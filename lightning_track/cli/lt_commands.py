"""The bodies of ``lt``'s subcommands: read, decide what to print, print. The logic they call lives in
:mod:`lightning_track.query`; here only arguments, messages and exit codes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import RunFolderError, one_line
from ..vocabulary import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

__all__ = ["cmd_ls", "cmd_show", "cmd_compare", "cmd_report", "cmd_tag", "cmd_note"]


def _warn(command: str, message: str) -> None:
    print(f"lt {command}: {message}", file=sys.stderr)


def _stale(args: argparse.Namespace) -> dict[str, float]:
    return {} if getattr(args, "stale", None) is None else {"stale_after": args.stale}


def _dumps(obj: Any) -> str:
    import orjson

    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS, default=str).decode()


def cmd_ls(args: argparse.Namespace) -> int:
    from ..query.filters import MISSING, FilterError, parse_filter
    from ..query.format import table
    from ..query.listing import cell, header, parse_columns, sort_runs, unknown_keys
    from ..query.runs import filter_runs, find_runs, main_metric
    from .lt import _default_roots

    try:
        filters = [parse_filter(f) for f in args.filter]
    except FilterError as exc:
        _warn("ls", str(exc))
        return EXIT_FAILURE
    problems: list[str] = []
    runs = find_runs(_default_roots(args.roots), problems, **_stale(args))
    for problem in problems:
        _warn("ls", problem)
    matched = filter_runs(runs, filters)
    metric = args.metric or main_metric(matched or runs)
    columns = parse_columns(args.columns, matched, metric)
    keys = [k for f in filters for k in f.keys()] + columns + ([args.sort.lstrip("-+")] if args.sort else [])
    for key in unknown_keys(keys, runs):
        _warn("ls", f"no run has {key!r}" + (" (see lt show RUN for the keys a run has)" if runs else ""))
    rows = sort_runs(matched, args.sort)
    if args.reverse:
        rows.reverse()
    if args.last is not None:
        rows = rows[-args.last:] if args.last > 0 else []
    if args.json:
        extra = [c for c in columns if c not in ("name", "source", "dataset", "method", "status", "start",
                                                  "duration", "step", "host", "tag")]
        out = []
        for run in rows:
            record = run.record()
            for column in extra:
                value = run.value(column)
                record.setdefault("columns", {})[column] = None if value is MISSING else value
            out.append(record)
        print(_dumps(out))
    elif rows:
        right = [c in ("duration", "step") or c.startswith(("best.", "final.")) for c in columns]
        print(table([header(c) for c in columns], [[cell(run, c) for c in columns] for run in rows], right=right))
    if not rows:
        if runs:
            _warn("ls", f"no run matches ({len(runs)} found)")
        elif not problems:
            _warn("ls", "no runs found under " + ", ".join(_default_roots(args.roots)))
        return EXIT_FAILURE
    return EXIT_OK


def _resolve(spec: str, roots: list[str] | None) -> Path:
    from ..query.runs import resolve_run
    from .lt import _default_roots

    return resolve_run(spec, _default_roots(roots))


def _read(spec: str, args: argparse.Namespace) -> Any:
    from ..query.runs import read_run

    return read_run(_resolve(spec, getattr(args, "root", None)), **_stale(args))


def cmd_show(args: argparse.Namespace) -> int:
    run = _read(args.run, args)
    if args.prompt:
        from ..query.prompt import render_prompt

        print(render_prompt(run))
    elif args.json:
        from ..query.show import show_record

        print(_dumps(show_record(run)))
    else:
        from ..query.show import render_show

        print(render_show(run, lines=args.lines))
    for problem in run.problems:
        _warn("show", problem)
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from ..query.compare import compare_runs, metric_series, render_compare

    runs = [_read(spec, args) for spec in args.runs]
    for run in runs:
        for problem in run.problems:
            _warn("compare", problem)
    comp = compare_runs(runs, args.metric)
    for key in comp.missing:
        _warn("compare", f"no run has metric {key!r}")
    if args.metric and not comp.metrics:
        return EXIT_FAILURE
    charts = comp.metrics if args.metric else comp.metrics[:1]
    problems: list[str] = []
    print(render_compare(comp, chart_metrics=charts, width=args.width, problems=problems))
    if args.plot:
        from ..derived.plots import have_matplotlib, plot_panels

        if not have_matplotlib():
            _warn("compare", f"{args.plot}: not written: matplotlib is not installed (pip install matplotlib)")
            return EXIT_FAILURE
        names = dict(zip(comp.labels, (run.name for run in runs), strict=True))
        panels = {key: [(f"{label} {names[label]}", s, v) for label, s, v in metric_series(runs, key, problems)]
                  for key in charts}
        plot_panels(panels, args.plot, title=" vs ".join(run.name for run in runs)[:120])
        print(f"\nplot: {args.plot}")
    for problem in dict.fromkeys(problems):
        _warn("compare", problem)
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    raise NotImplementedError


def cmd_tag(argv: list[str]) -> int:
    raise NotImplementedError


def cmd_note(args: argparse.Namespace) -> int:
    raise NotImplementedError


_ = (RunFolderError, one_line, EXIT_USAGE)
