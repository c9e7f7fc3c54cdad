"""``lt export RUN|ROOT ... --to URI``: send runs to a shared tracker (MLflow, or offline W&B runs), only what
is new.

One line per run; a run that cannot be exported is one line on stderr and the others still go; on a
terminal, a progress bar of the runs under them. Exit 0 when every run is exported, 1 when one is not
(or the tracker cannot be reached: then nothing is sent), 2 for bad arguments, 130 on Ctrl+C and 143 on
SIGTERM (what the tracker confirmed is recorded; run it again to continue, nothing is sent twice).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ..errors import ConfigError, ExportError, RunFolderError, one_line
from ..query.format import printable
from ..vocabulary import EXIT_FAILURE, EXIT_OK, exit_status, stop_signals
from ._errors import reports

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from ..export.target import SUPPORTED

    parser = argparse.ArgumentParser(prog="lt export", description="Send runs to an MLflow tracker, or write them "
                                     "as offline W&B runs: every metric with its step and time, params, tags, "
                                     "status and files. Again: only what is new (the run's export.json says what "
                                     "was sent).")
    parser.add_argument("runs", nargs="+", metavar="RUN|ROOT", help="run folders, names, or folders of runs")
    parser.add_argument("--to", metavar="URI", help=f"one of {', '.join(SUPPORTED)} (default: the variable)")
    parser.add_argument("--experiment", metavar="NAME", help="MLflow experiment or W&B project (default: the "
                        "run's dataset)")
    parser.add_argument("--dir", metavar="DIR", help="--to wandb: write the offline W&B runs under DIR/wandb "
                        "(default: each run's own folder); upload them with wandb sync")
    parser.add_argument("--with-model", action="store_true", help="also send final_model/")
    parser.add_argument("--with-checkpoints", action="store_true", help="also send checkpoints/*.ckpt")
    parser.add_argument("--root", action="append", metavar="ROOT", help="where to look for RUN (default: runs)")
    parser.add_argument("-f", "--filter", action="append", default=[], metavar="EXPR", help="runs of a ROOT to send")
    parser.add_argument("--stale", type=float, default=None, metavar="SECONDS",
                        help="a running run silent this long is crashed (default: 120)")
    return parser


def _warn(message: str) -> None:
    from .lt_commands import _warn as warn

    warn("export", message)


@contextmanager
def _stopped_by() -> Iterator[list[int]]:
    """SIGTERM (and SIGINT, unless inherited ignored) stop the export as Ctrl+C does: what the tracker
    confirmed is recorded before it ends. Yields the signals that arrived."""
    import threading

    arrived: list[int] = []

    def stop(signum: int, frame: Any) -> None:
        arrived.append(signum)
        raise KeyboardInterrupt

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, stop) for sig in stop_signals()}
    try:
        yield arrived
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def _progress(total: int) -> Iterator[Any]:
    """A bar of the runs on stderr when it is a terminal and there is more than one run (None otherwise);
    the per-run lines are printed above it."""
    from rich.console import Console

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    if total < 2 or not console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("exporting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  TextColumn("{task.description}"), console=console, transient=True,
                  redirect_stdout=sys.stdout.isatty()) as bar:  # lines sent to a file stay in the file
        bar.add_task("", total=total)
        yield bar


@reports("lt export")  # a bad --to or --filter: one line, exit 2; the tracker unreachable: one line, exit 1
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    from ..export import export_run, open_exporter, parse_target, wandb_target
    from ..query.filters import parse_filter
    from .lt_commands import _runs_for_report

    target = parse_target(args.to)
    if args.dir is not None:
        if target.tracker != "wandb":
            raise ConfigError(f"--dir {args.dir!r}: only for --to wandb (offline W&B runs); drop it for {target.uri}")
        target = wandb_target(args.dir)
    for expr in args.filter:
        parse_filter(expr)
    problems: list[str] = []
    runs = _runs_for_report(args, problems)
    for problem in problems:
        _warn(problem)
    if not runs:
        _warn("no run to export; nothing sent")
        return EXIT_FAILURE
    failed = len(problems)
    with _stopped_by() as arrived:
        try:
            with open_exporter(target) as exporter, _progress(len(runs)) as bar:
                for i, run in enumerate(runs, 1):
                    prefix = f"[{i}/{len(runs)}] " if len(runs) > 1 else ""
                    if bar is not None:
                        bar.update(bar.task_ids[0], description=printable(run.name))
                    try:
                        result = export_run(run, experiment=args.experiment, with_model=args.with_model,
                                            with_checkpoints=args.with_checkpoints, exporter=exporter)
                    except (ExportError, RunFolderError, OSError) as exc:
                        _warn(prefix + one_line(exc))
                        failed += 1
                        continue
                    finally:
                        if bar is not None:
                            bar.advance(bar.task_ids[0])
                    for note in result.notes:
                        _warn(f"{prefix}{run.name}: {note}")
                    print(printable(prefix + result.line()), flush=True)
        except KeyboardInterrupt:
            _warn("interrupted; what the tracker confirmed is recorded: run lt export again to continue")
            return exit_status(-(arrived[0] if arrived else signal.SIGINT))
    return EXIT_FAILURE if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
