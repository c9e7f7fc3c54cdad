"""``lt-sync SRC... DEST``: incremental, live mirror of run folders (local or over SSH).

Thin: argument parsing and display over :mod:`lightning_track.sync`. Exit codes: 0 done, 1 errors
while syncing (or a run ``--export`` could not send), 2 bad arguments / host key / authentication /
missing source, 3 done but some paths were refused as unsafe, 130 one-shot sync interrupted with
Ctrl-C (143: SIGTERM; ``--every`` stops with 0 on either). Started with SIGINT ignored (a script's
``lt sync ... &``), it keeps ignoring it. With several sources (or ``--from FILE``) each source's runs
go to their own folder in DEST (:mod:`lightning_track.sync.many`); the exit code is the worst of the
sources' (2, then 1, then 3).
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from ..errors import ConfigError, one_line
from ..folder.layout import RunLayout
from ..sync import SyncOptions, SyncSession, parse_endpoint, run_loop
from ..sync.endpoints import Endpoint, check_apart
from ..sync.engine import CycleResult
from ..sync.many import JOBS, REMOTE_JOBS, ManySync, Source, SourcePass, plan_sources, read_sources_file
from ..sync.plan import Plan
from ..sync.warm import CatalogWarmer
from ..vocabulary import EXIT_FAILURE, EXIT_OK, EXIT_REFUSED, EXIT_USAGE, exit_status
from ._errors import reports

__all__ = ["main", "build_parser"]


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lt-sync",
        description="Mirror run folders incrementally: appended bytes only for growing logs, atomic replace for "
                    "the rest. SRC/DEST: a local folder, [user@]host[:port]:path or ssh://user@host[:port]/path.",
    )
    parser.add_argument("src", metavar="SRC", nargs="*",
                        help="runs folder to mirror (never modified); with several, each one's runs go to their own "
                             "folder in DEST, named <host>_<last two path parts>-<hash of the source>")
    parser.add_argument("dest", metavar="DEST", help="mirror folder (created if missing)")
    parser.add_argument("--from", dest="from_file", metavar="FILE",
                        help="read more sources from FILE, one a line ('#' starts a comment); each source's runs go "
                             "to their own folder in DEST")
    parser.add_argument("--jobs", type=int, default=JOBS, metavar="N",
                        help=f"local sources mirrored at once ({JOBS}); sources over SSH have {REMOTE_JOBS} slots of "
                             "their own (they mostly wait on the network); one connection each, kept open")
    parser.add_argument("--every", type=_positive, metavar="SECONDS",
                        help="keep mirroring every SECONDS until Ctrl-C; dropped connections are retried")
    parser.add_argument("--include-checkpoints", action="store_true",
                        help="also sync checkpoints/ and final_model/ (left out by default: large)")
    parser.add_argument("--runs", metavar="GLOB", help="only top-level run folders matching GLOB")
    parser.add_argument("--since", type=_positive, metavar="HOURS",
                        help="only runs with a file modified in the last HOURS")
    parser.add_argument("--delete", action="store_true", help="delete files on DEST that are gone from SRC")
    parser.add_argument("--dry-run", action="store_true", help="show what would be done, change nothing")
    parser.add_argument("--runicorn", metavar="ROOT",
                        help="also maintain a Runicorn storage view at ROOT (a path on DEST's machine)")
    parser.add_argument("--parallel", type=int, default=64, metavar="N",
                        help="files in flight at once (64; at most 1 MiB of each in memory)")
    parser.add_argument("--state", metavar="FILE", help="resume journal (default: ~/.local/state/lightning_track/"
                        "sync/<hash>.jsonl)")
    parser.add_argument("--full", action="store_true", help="list every run, also the settled ones a pass skips "
                        "(an in-place edit of an ended run's file changes none of its folders)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar, status lines only")
    parser.add_argument("--notify", action="append", default=[], metavar="URL",
                        help="after each pass, notify when a mirrored run becomes healthy, completed, failed, "
                             "interrupted or stale (an apprise URL: json://host:port/path, slack://...; repeatable)")
    parser.add_argument("--export", metavar="URI",
                        help="after each pass, export the runs it changed to this tracker (as lt export --to; "
                             "DEST must be a local folder; the record is each mirrored run's export.mirror.json)")
    parser.add_argument("--export-experiment", metavar="NAME",
                        help="with --export: the MLflow experiment (default: each run's dataset)")
    parser.add_argument("--stale", type=_positive, default=None, metavar="SECONDS",
                        help="with --notify: a running run whose heartbeat is older than this is stale "
                             "(default: 120, lt ls's 'crashed')")
    return parser


def _watch(args: argparse.Namespace, session: SyncSession, err: Console) -> tuple[Any, Any]:
    """The notifier and the watcher of the local side's runs for --notify (None, None without it)."""
    if not args.notify:
        return None, None
    from ..launch.notify import Notifier
    from ..query.runs import STALE_AFTER_S
    from ..sync.watch import RunWatch, notified_path

    def log(line: str) -> None:
        err.print(f"lt-sync: {line}", highlight=False, markup=False)

    local = session.dest_ep if not session.dest_ep.is_remote else session.src_ep
    if local.is_remote:
        raise ConfigError("--notify reads the mirrored runs on this machine; SRC or DEST must be a local folder")
    notifier = Notifier(args.notify, log=log)
    state = notified_path(session.state.path) if session.state.path is not None else None
    return notifier, RunWatch(local.path, notifier, state_path=state, log=log,
                              stale_after=args.stale or STALE_AFTER_S)


def _exports(args: argparse.Namespace, dest: Endpoint, err: Console) -> Any:
    """--export's exporter of the runs each pass changed (None without it), on a thread of its own."""
    if not args.export or args.dry_run:
        return None
    if dest.is_remote:
        raise ConfigError("--export reads the mirrored runs on this machine; DEST must be a local folder")
    from ..export.mirror import MirrorExport

    def say(line: str) -> None:
        err.print(f"lt-sync: {line}", highlight=False, markup=False)

    return MirrorExport(dest.path, args.export, experiment=args.export_experiment, runs_glob=args.runs, say=say)


def _export(exports: Any, result: CycleResult | None, folder: str = "") -> None:
    """``folder``: the source's folder in the mirror, when the pass was one of several sources'."""
    if exports is not None and result is not None and not result.dry_run:
        exports.behind([f"{folder}/{a.rel}" if folder else a.rel for a in result.plan.actions])


def _check(watch: Any, err: Console) -> None:
    """One look at the runs after a pass; a problem there is one line, never the sync's failure."""
    if watch is None:
        return
    try:
        watch.check()
    except Exception as exc:  # noqa: BLE001 - notifications must never stop the mirror
        err.print(f"lt-sync: notifications skipped this pass: {one_line(exc)}", highlight=False, markup=False)


class _HistoryWarmer:
    """After each pass of ``--every`` into a local folder, the mirrored ``metrics.jsonl`` files that
    changed are parsed into the history cache on a background thread (only their new lines), so
    ``lt report`` and ``load_history`` on the mirror find them parsed. Never slows or stops the mirror."""

    def __init__(self, root: str) -> None:
        self.root = Path(root)
        self.todo: queue.SimpleQueue[list[Path]] = queue.SimpleQueue()
        threading.Thread(target=self._work, name="lt-sync-history", daemon=True).start()

    def after(self, result: CycleResult, folder: str = "") -> None:
        """``folder``: the source's folder in the mirror, when the pass was one of several sources'."""
        root = self.root / folder
        changed = [root / a.rel for a in result.plan.actions if Path(a.rel).name == RunLayout.METRICS_JSONL]
        if changed and not result.dry_run:
            self.todo.put(changed)

    def _work(self) -> None:
        from ..query.history import warm_histories

        while True:
            warm_histories(self.todo.get())


def _print_result(console: Console, result: CycleResult, verbose: bool) -> None:
    console.print(result.status_line(), highlight=False, markup=False)
    for kind, lines in (("refused", result.refused), ("error", result.errors), ("note", result.notes)):
        for line in lines:
            console.print(f"{kind}: {line}", highlight=False, markup=False)
    if verbose:
        for line in result.skipped:
            console.print(f"skipped: {line}", highlight=False, markup=False)
        if result.dry_run:
            for action in result.plan.actions:
                console.print(f"  {action.kind:8} {action.rel}", highlight=False, markup=False)


async def _once(session: SyncSession, console: Console, quiet: bool) -> CycleResult:
    if quiet or not console.is_terminal:
        return await session.cycle()
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("scanning", total=None)

        def on_plan(plan: Plan) -> None:
            bar.update(task, description=f"{len(plan.actions)} files", total=max(1, plan.bytes_planned))

        def progress(rel: str, nbytes: int) -> None:
            bar.advance(task, nbytes)

        return await session.cycle(progress, on_plan)


def _warm(warmer: CatalogWarmer | None, result: CycleResult, err: Console) -> None:
    """The mirror's catalog after a pass: its problems are one line each, never the sync's failure."""
    if warmer is None:
        return
    for line in warmer.after(result):
        err.print(f"lt-sync: {line}", highlight=False, markup=False)


def _drive(run: Any, every: float | None, err: Console) -> int | None:
    """``asyncio.run(run())`` with SIGTERM stopping it as Ctrl+C does; the exit code when it stopped early."""
    stopped_by: list[int] = []

    def stop(signum: int, frame: Any) -> None:
        stopped_by.append(signum)
        raise KeyboardInterrupt

    # SIGTERM (`kill PID`, the way to stop a background mirror) stops as Ctrl+C does; an inherited
    # ignored SIGINT stays ignored (Python leaves it so, and asyncio only takes over its default).
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, stop)
    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        err.print("interrupted; finished files are kept and a re-run resumes the rest", highlight=False, markup=False)
        return EXIT_OK if every else exit_status(-(stopped_by[0] if stopped_by else signal.SIGINT))
    finally:  # a SyncError (retrying cannot fix it: 2) or a TransferError or OSError (1) is main's one line
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return None


@reports("lt-sync: error")
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)  # SRC... DEST around the options: `lt sync a --from F DEST`
    console = Console(stderr=False, highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if args.parallel < 1:
        parser.error("--parallel must be at least 1")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    specs = [(spec, "SRC") for spec in args.src]
    if args.from_file is not None:
        specs += read_sources_file(args.from_file)
    if not specs:
        parser.error("give SRC... DEST, or --from FILE DEST")
    if len(specs) > 1 or args.from_file is not None:
        return _main_many(parser, args, specs, console, err)
    try:
        src, dest = parse_endpoint(specs[0][0]), parse_endpoint(args.dest)
    except ValueError as exc:
        parser.error(str(exc))
    if src.is_remote == dest.is_remote and src == dest:
        parser.error("SRC and DEST are the same place")
    check_apart(src, dest)
    options = SyncOptions(include_checkpoints=args.include_checkpoints, runs_glob=args.runs, since_hours=args.since,
                          delete=args.delete, dry_run=args.dry_run, runicorn_root=args.runicorn,
                          parallel=args.parallel, state_path=args.state, full=args.full)
    session = SyncSession(src, dest, options)
    try:
        notifier, watch = _watch(args, session, err)
        exports = _exports(args, dest, err)
    except ConfigError as exc:
        parser.error(str(exc))
    outcome: dict[str, int] = {"refused": 0, "errors": 0}

    warmer = _HistoryWarmer(session.dest_ep.path) if args.every and not session.dest_ep.is_remote else None
    catalog = CatalogWarmer(dest.path) if not dest.is_remote and not args.dry_run else None

    def on_cycle(result: CycleResult) -> None:
        outcome["refused"] = len(result.refused)
        outcome["errors"] = len(result.errors)
        _warm(catalog, result, err)
        _print_result(console, result, verbose=False)
        _check(watch, err)
        _export(exports, result)
        if warmer is not None:
            warmer.after(result)

    def on_retry(exc: BaseException, delay: float) -> None:
        err.print(f"connection problem ({type(exc).__name__}: {exc}); retrying in {delay:.0f}s",
                  highlight=False, markup=False)

    async def run() -> None:
        try:
            if args.every:
                console.print(f"mirroring {src} -> {dest} every {args.every:g}s (Ctrl-C to stop)",
                              highlight=False, markup=False)
                await run_loop(session, args.every, on_cycle, on_retry)
            else:
                await session.connect()
                result = await _once(session, console, args.quiet)
                outcome["refused"], outcome["errors"] = len(result.refused), len(result.errors)
                _warm(catalog, result, err)
                _print_result(console, result, verbose=args.dry_run)
                _check(watch, err)
                _export(exports, result)
        finally:
            await session.close()
            if notifier is not None:
                notifier.close()

    stopped = _drive(run, args.every, err)
    if stopped is not None:
        return stopped
    if exports is not None and not exports.finish():
        return EXIT_FAILURE
    if outcome["errors"]:
        return EXIT_FAILURE
    return EXIT_REFUSED if outcome["refused"] else EXIT_OK


def _many_watch(args: argparse.Namespace, dest: Endpoint, err: Console) -> tuple[Any, Any]:
    """--notify over the whole mirror (every source's folder), or (None, None)."""
    if not args.notify:
        return None, None
    if dest.is_remote:
        raise ConfigError("--notify reads the mirrored runs on this machine; with several sources DEST must be a "
                          "local folder")
    from ..launch.notify import Notifier
    from ..query.runs import STALE_AFTER_S
    from ..sync.state import default_state_path
    from ..sync.watch import RunWatch, notified_path

    def log(line: str) -> None:
        err.print(f"lt-sync: {line}", highlight=False, markup=False)

    notifier = Notifier(args.notify, log=log)
    state = notified_path(default_state_path("*", str(dest)))
    return notifier, RunWatch(dest.path, notifier, state_path=state, log=log, stale_after=args.stale or STALE_AFTER_S)


def _many_code(passes: list[SourcePass]) -> int:
    """The worst of the sources' exit codes: 2 (retrying cannot fix it), 1 (failed), 3 (refused), 0."""
    if any(p.fatal for p in passes):
        return EXIT_USAGE
    if any(p.failed for p in passes):
        return EXIT_FAILURE
    return EXIT_REFUSED if any(p.result and p.result.refused for p in passes) else EXIT_OK


def _main_many(parser: argparse.ArgumentParser, args: argparse.Namespace, specs: list[tuple[str, str]],
               console: Console, err: Console) -> int:
    """Several sources (or --from FILE) into one mirror: one line per source and pass."""
    if args.state:
        parser.error("--state names one journal; with several sources each keeps its own (leave --state out)")
    if args.runicorn:
        parser.error("--runicorn keeps the view of one SRC; give one SRC, or leave --runicorn out")
    try:
        dest = parse_endpoint(args.dest)
    except ValueError as exc:
        parser.error(str(exc))
    sources = plan_sources(specs, dest)
    options = SyncOptions(include_checkpoints=args.include_checkpoints, runs_glob=args.runs, since_hours=args.since,
                          delete=args.delete, dry_run=args.dry_run, parallel=args.parallel)
    try:
        notifier, watch = _many_watch(args, dest, err)
        exports = _exports(args, dest, err)
    except ConfigError as exc:
        parser.error(str(exc))
    many = ManySync(sources, dest, options, jobs=args.jobs)
    history = _HistoryWarmer(dest.path) if args.every and not dest.is_remote else None
    passes: list[SourcePass] = []
    seen: set[Source] = set()  # sources that have had a pass

    def show(done: SourcePass, out: Console) -> None:
        if done.error is not None:
            err.print(f"lt-sync: {done.line()}", highlight=False, markup=False)
        else:
            assert done.result is not None
            out.print(done.line(), highlight=False, markup=False)
            for kind, lines in (("refused", done.result.refused), ("error", done.result.errors),
                                ("note", done.result.notes)):
                for line in lines:
                    out.print(f"{done.source.name}: {kind}: {line}", highlight=False, markup=False)
            if args.dry_run:
                for action in done.result.plan.actions:
                    out.print(f"  {action.kind:8} {done.source.folder}/{action.rel}", highlight=False, markup=False)
        for line in done.catalog_problems:
            err.print(f"lt-sync: {line}", highlight=False, markup=False)

    def export(done: SourcePass) -> None:
        _export(exports, done.result, done.source.folder)

    async def once() -> None:
        if args.quiet or not console.is_terminal:
            passes.extend(await many.once(on_pass=lambda done: (show(done, console), export(done))))
            return
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                      console=console, transient=True) as bar:
            tasks = {s: bar.add_task(f"{s.name}: connecting", total=None) for s in sources}

            def on_plan(source: Source, plan: Plan) -> None:
                bar.update(tasks[source], description=f"{source.name}: {len(plan.actions)} files",
                           total=max(1, plan.bytes_planned))

            def progress(source: Source, rel: str, nbytes: int) -> None:
                bar.advance(tasks[source], nbytes)

            def on_pass(done: SourcePass) -> None:
                bar.update(tasks[done.source], visible=False)
                show(done, bar.console)
                export(done)

            passes.extend(await many.once(progress, on_plan, on_pass))

    last_error: dict[Source, str] = {}

    def on_pass(done: SourcePass) -> None:
        """--every: a source's first pass, one that did something, a new error (not the same one each pass),
        and the pass that heals it."""
        error = done.line() if done.error is not None else ""
        if done.source not in seen or (done.busy and done.error is None) or error != last_error.get(done.source, ""):
            show(done, console)
        seen.add(done.source)
        last_error[done.source] = error
        if history is not None and done.result is not None:
            history.after(done.result, done.source.folder)
        export(done)

    async def run() -> None:
        try:
            if args.every:
                console.print(f"mirroring {len(sources)} sources -> {dest} every {args.every:g}s (Ctrl-C to stop)",
                              highlight=False, markup=False)

                async def watching() -> None:
                    while True:
                        await asyncio.sleep(args.every)
                        _check(watch, err)

                watcher = asyncio.create_task(watching()) if watch is not None else None
                try:
                    passes.extend(await many.run(args.every, on_pass))
                finally:
                    if watcher is not None:
                        watcher.cancel()
            else:
                await once()
                _check(watch, err)
        finally:
            await many.close()
            if notifier is not None:
                notifier.close()

    stopped = _drive(run, args.every, err)
    if stopped is not None:
        return stopped
    exported = exports is None or exports.finish()
    failed = [p for p in passes if p.failed]
    if len(failed) > 1:  # one failed source is named by its own line
        names = ", ".join(p.source.spec for p in failed)
        err.print(f"lt-sync: {len(failed)} of {len(sources)} sources failed: {names}", highlight=False, markup=False)
    return _many_code(passes) or (EXIT_OK if exported else EXIT_FAILURE)


if __name__ == "__main__":
    sys.exit(main())
