"""The bodies of ``lt``'s subcommands: read, decide what to print, print. The logic they call lives in
:mod:`lightning_track.query`; here only arguments, messages and exit codes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from ..errors import RunFolderError, one_line
from ..folder.gcpause import collector_paused
from ..vocabulary import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, format_bytes

__all__ = ["cmd_ls", "cmd_show", "cmd_compare", "cmd_report", "cmd_tag", "cmd_note", "cmd_reproduce"]


def _warn(command: str, message: str) -> None:
    from ..query.format import printable

    print(printable(f"lt {command}: {message}"), file=sys.stderr)


def _default_roots(roots: Sequence[str] | None) -> list[str]:
    if roots:
        return list(roots)
    return ["runs"] if Path("runs").is_dir() else ["."]


def _stale(args: argparse.Namespace) -> dict[str, float]:
    return {} if getattr(args, "stale", None) is None else {"stale_after": args.stale}


def _dumps(obj: Any) -> str:
    import orjson

    from ..query.format import unicode_json

    return unicode_json(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS, default=str)


def _dump_array(items: Iterable[Any], out: TextIO) -> None:
    """The text ``print(_dumps(list(items)))`` writes, one item at a time: ``lt ls --json`` of 100,000 runs
    holds neither every record nor one giant string at once."""
    first = True
    for item in items:
        out.write(("[\n  " if first else ",\n  ") + _dumps(item).replace("\n", "\n  "))
        first = False
    out.write("[]\n" if first else "\n]\n")


@collector_paused()
def cmd_ls(args: argparse.Namespace) -> int:
    from ..errors import FilterError
    from ..query import listing
    from ..query.catalog_rows import CatalogRun
    from ..query.filters import MISSING, parse_filter
    from ..query.format import printable, table
    from ..query.runs import filter_runs, find_runs

    try:
        filters = [parse_filter(f) for f in args.filter]
    except FilterError as exc:
        _warn("ls", str(exc))
        return EXIT_FAILURE
    problems: list[str] = []
    roots = _default_roots(args.roots)
    last = args.last if args.last is not None or args.json or args.all else listing.TABLE_ROWS
    newest = None
    if not (args.sort or args.columns) and len(roots) == 1:
        from ..query.newest import newest_runs  # one root's runs: only the rows printed built, --json streamed

        newest = newest_runs(roots[0], problems, window=last, reverse=args.reverse, metric=args.metric,
                             stream=args.json, filters=filters, **_stale(args))
    if newest is not None:
        found, rows, columns, unknown = newest.total, newest.rows, newest.columns, newest.unknown
    else:
        runs = find_runs(roots, problems, **_stale(args))
        from ..query.config_read import problems_found

        with problems_found() as broken:  # a config.yaml the filter read and could not parse: said too
            matched = filter_runs(runs, filters)
        problems += broken
        metric = args.metric or listing.main_metric(matched or runs)
        columns = listing.parse_columns(args.columns, matched, metric)
        keys = [k for f in filters for k in f.keys()] + columns + ([args.sort.lstrip("-+")] if args.sort else [])
        unknown = listing.unknown_keys(keys, runs)
        rows = listing.sort_runs(matched, args.sort)
        if args.reverse:
            rows.reverse()
        found = len(runs)
    for problem in problems:
        _warn("ls", problem)
    for key in unknown:
        _warn("ls", f"no run has {key!r}" + (" (see lt show RUN for the keys a run has)" if found else ""))
    if newest is not None:
        hidden = 0 if args.json else newest.matched - len(rows)
    else:
        shown = rows if last is None else rows[-last:] if last > 0 else []
        hidden, rows = len(rows) - len(shown), shown
    if args.json:
        extra = [c for c in columns if c not in listing.DEFAULT_COLUMNS]

        def records() -> Iterator[dict[str, Any]]:
            for run in rows:
                built = run.load() if isinstance(run, CatalogRun) else run  # one run's memory at a time
                record = built.record()
                for column in extra:
                    value = built.value(column)
                    record.setdefault("columns", {})[column] = None if value is MISSING else value
                yield record

        _dump_array(records(), sys.stdout)
    elif rows:
        right = [c in ("wall_span", "training_time", "step") or c.startswith(("best.", "final.")) for c in columns]
        cells = [[printable(listing.cell(run, c)) for c in columns] for run in rows]
        print(table([listing.header(c) for c in columns], cells, right=right))
    if hidden and args.last is None:  # the default cut: said on stderr, so a pipe gets only rows
        older = "older runs" if not args.sort and not args.reverse else "earlier rows"
        _warn("ls", f"… {hidden:,} {older} not shown: --all or --last N")
    if not newest.matched if newest is not None and args.json else not rows:  # (a stream of rows is never empty itself)
        if found:
            _warn("ls", f"no run matches ({found} found)")
        elif not problems:
            _warn("ls", "no runs found under " + ", ".join(roots))
        return EXIT_FAILURE
    return EXIT_OK


def _resolve(spec: str, roots: list[str] | None) -> Path:
    from ..query.discover import resolve_run

    return resolve_run(spec, _default_roots(roots))


def _read(spec: str, args: argparse.Namespace) -> Any:
    from ..query.runs import read_run

    return read_run(_resolve(spec, getattr(args, "root", None)), **_stale(args))


def cmd_show(args: argparse.Namespace) -> int:
    from ..query.format import printable

    run = _read(args.run, args)
    if args.prompt:
        from ..query.prompt import render_prompt

        print(printable(render_prompt(run)))
    elif args.json:
        from ..query.show import show_record

        print(_dumps(show_record(run)))
    else:
        from ..query.show import render_show

        print(printable(render_show(run, lines=args.lines)))
    for problem in run.problems:
        _warn("show", problem)
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from ..query.compare import compare_runs, metric_series, render_compare
    from ..query.format import printable

    runs = [_read(spec, args) for spec in args.runs]
    for run in runs:
        for problem in run.problems:
            _warn("compare", problem)
    known: list[str] = []
    if args.metric:  # a running run's summary has no metrics yet: its history has
        from ..query.history import read_history

        for run in runs:
            try:
                known += read_history(run.path, args.metric).keys
            except RunFolderError:
                pass
    comp = compare_runs(runs, args.metric, known=known, provenance=True)
    for key in comp.missing:
        _warn("compare", f"no run has metric {key!r}")
    if args.metric and not comp.metrics:
        return EXIT_FAILURE
    charts = comp.metrics if args.metric else comp.metrics[:1]
    problems: list[str] = []
    print(printable(render_compare(comp, chart_metrics=charts, width=args.width, problems=problems)))
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


def _runs_for_report(args: argparse.Namespace, problems: list[str]) -> list[Any]:
    """RUN arguments as runs; a ROOT (a folder of runs) stands for its runs, filtered by --filter."""
    from ..query.discover import RUN_FILES, list_names
    from ..query.runs import filter_runs, find_runs

    runs: list[Any] = []
    for spec in args.runs:
        path = Path(spec)
        names = list_names(path) if path.is_dir() else None
        if names is not None and not names & RUN_FILES:
            found = filter_runs(find_runs(path, problems, **_stale(args)), args.filter or None)
            if not found:
                problems.append(f"{spec}: no runs" + (" match" if args.filter else " found"))
            runs += found
            continue
        try:
            runs.append(_read(spec, args))
        except RunFolderError as exc:
            problems.append(str(exc))
    return runs


@collector_paused()  # every run read stays alive until the page is written (folder/gcpause.py)
def cmd_report(args: argparse.Namespace) -> int:
    return _report(args)


def _report(args: argparse.Namespace) -> int:
    import time

    from ..errors import FilterError
    from ..query.filters import parse_filter
    from ..query.report_html import write_report

    try:
        for expr in args.filter:
            parse_filter(expr)
    except FilterError as exc:
        _warn("report", str(exc))
        return EXIT_FAILURE
    problems: list[str] = []
    started = time.perf_counter()
    runs = _runs_for_report(args, problems)
    for run in runs:
        problems.extend(f"run {run.name}: {p}" if run.name not in p else p for p in run.problems)
    if not runs:
        for problem in problems:
            _warn("report", problem)
        _warn("report", f"{args.output}: not written: no run to report on")
        return EXIT_FAILURE
    text = write_report(args.output, runs, metrics=args.metric, points=args.points, curves=args.curves,
                        title=args.title, problems=problems)
    for problem in dict.fromkeys(problems):
        _warn("report", problem)
    print(f"{args.output}: {len(runs)} runs, {format_bytes(len(text.encode()))}, "
          f"{time.perf_counter() - started:.2f} s")
    return EXIT_OK


_TAG_USAGE = "usage: lt tag RUN ... [+TAG|-TAG] ...  (--root ROOT to look for RUN elsewhere than runs/)"


def cmd_tag(argv: list[str]) -> int:
    """``lt tag RUN ... +a -b c``: the runs come first, then the changes (a bare word after them adds)."""
    from ..query.annotations import change_tags, parse_tag_ops
    from ..query.format import printable
    from ..query.runs import read_run

    if any(a in ("-h", "--help") for a in argv):
        print(_TAG_USAGE)
        return EXIT_OK
    roots: list[str] = []
    specs: list[str] = []
    ops: list[str] = []
    items = iter(argv)
    for item in items:
        if item == "--root" or item.startswith("--root="):
            root = item.partition("=")[2] or next(items, "")
            if not root:
                _warn("tag", "--root needs a folder")
                return EXIT_USAGE
            roots.append(root)
        elif ops or item[:1] in ("+", "-"):
            ops.append(item)
        else:
            specs.append(item)
    if not specs:
        print(_TAG_USAGE, file=sys.stderr)
        return EXIT_USAGE
    try:
        add, remove = parse_tag_ops(ops)
    except ValueError as exc:
        _warn("tag", str(exc))
        return EXIT_USAGE
    shown = 0
    for spec in specs:
        try:
            path = _resolve(spec, roots or None)
            tags = change_tags(path, add, remove) if ops else read_run(path).tags
        except (RunFolderError, OSError) as exc:
            _warn("tag", one_line(exc))
            continue
        print(printable(f"{path.name}: {', '.join(tags) or '(no tags)'}"))
        shown += 1
    return EXIT_OK if shown else EXIT_FAILURE


def cmd_note(args: argparse.Namespace) -> int:
    from ..query.annotations import set_notes
    from ..query.format import printable
    from ..query.runs import read_run

    path = _resolve(args.run, args.root)
    if args.text is None:
        print(printable(read_run(path).notes))
        return EXIT_OK
    notes = set_notes(path, args.text, append=args.append)
    print(f"{path.name}: notes {'cleared' if not notes else 'saved'}")
    return EXIT_OK



def cmd_reproduce(args: argparse.Namespace) -> int:
    import shlex

    from ..query.reproduce import reproduce, start_reproduction
    from ..run.environment import capture_environment  # imports torch for its CUDA versions

    result = reproduce(_resolve(args.run, args.root), args.into, current_environment=capture_environment())
    print(f"code: {result.into}")
    if result.config is not None:
        print(f"config: {result.config}")
    for line in result.notes:
        print(f"note: {line}")
    for line in result.differences:
        print(f"environment differs: {line}")
    for line in result.problems:
        _warn("reproduce", f"not restored: {line}")
    if result.command:
        print(f"command: cd {shlex.quote(str(result.cwd))} && {shlex.join(result.command)}")
    if not args.start:
        return EXIT_OK
    if result.problems and not args.anyway:
        _warn("reproduce", f"--run refused: {len(result.problems)} thing(s) could not be restored (above); "
              "--run --anyway starts it regardless")
        return EXIT_FAILURE
    if not result.command:
        return EXIT_FAILURE
    sys.stdout.flush()
    return start_reproduction(result)
