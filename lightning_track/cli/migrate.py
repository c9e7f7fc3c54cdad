"""``lt-migrate``: bring legacy ``experiments/`` runs into ``runs/`` (thin CLI over lightning_track.migrate)."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..errors import ConfigError, SourceError
from ..folder.fileio import atomic_write_json
from ..migrate import MigrateOptions, PlannedRun, default_jobs, load_rules, make_example, migrate
from ..migrate.report import STATUS_FAILED, MigrationReport, RunReport
from ..vocabulary import EXIT_OK, EXIT_USAGE, exit_status, format_bytes
from ._args import positive_int
from ._errors import reports


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lt-migrate",
        description="Convert legacy experiments/ runs into run folders, as if RunLogger had written them."
        " The source tree is never written.",
    )
    parser.add_argument("source", nargs="?", help="experiments/, a project folder, a dataset folder or one run folder")
    parser.add_argument("--out", default="runs", help="runs folder to write into (default: runs)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan (runs, sizes, what is skipped); write"
                        " nothing")
    parser.add_argument("--only", metavar="GLOB", help="only runs whose legacy name, project/dataset/run path or new"
                        " name matches GLOB")
    parser.add_argument("--force", action="store_true", help="redo runs that were already migrated")
    parser.add_argument("--state-dict-prefix", default="model.", metavar="P",
                        help="prefix for state-dict keys: the attribute your LightningModule keeps the model under"
                        " (default: 'model.'; '' for none)")
    parser.add_argument("--rules", metavar="FILE", help="rename rules YAML (default: ./configs/migrate_rules.yaml if"
                        " present, else the packaged copy)")
    parser.add_argument("--trust-pickle", action="store_true", help="load legacy torch files with full pickle (only"
                        " for files you trust); default is torch.load(weights_only=True)")
    parser.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard event files")
    parser.add_argument("--report", metavar="FILE", help="also write the per-run report as JSON")
    parser.add_argument("--jobs", type=positive_int, default=default_jobs(), metavar="N",
                        help="runs converted at once, each in a worker process (default: 1.5x the CPU count"
                        f" = {default_jobs()}); 1 converts them one by one in this process")
    parser.add_argument("--make-example", metavar="DIR", help="write a realistic example legacy tree into DIR and"
                        " exit")
    return parser



def _print_plan(console: Console, plans: list[PlannedRun]) -> None:
    table = Table(title="plan", show_lines=False)
    for column in ("legacy run", "new run", "size", "note"):
        table.add_column(column)
    for plan in plans:
        note = plan.error or ("already migrated" if plan.already_migrated else "; ".join(plan.would_skip))
        table.add_row(escape(plan.legacy.relpath), escape(plan.name or "-"), format_bytes(plan.size),
                      escape(note))
    console.print(table)


def _print_report(console: Console, report: MigrationReport) -> None:
    table = Table(title="lt-migrate report" + (" (dry run: nothing written)" if report.dry_run else ""))
    for column in ("run", "status", "steps", "checkpoints", "tracked lines", "warnings"):
        table.add_column(column)
    for run in report.runs:
        name = Path(run.target).name if run.target else Path(run.source).name
        status = run.status if run.status == STATUS_FAILED or not run.reason else f"{run.status}: {run.reason}"
        style = "red" if run.status == STATUS_FAILED else None
        ckpts = f"{run.checkpoints}/{run.checkpoints_found}" + (f" ({run.weights_only} weights-only)"
                                                                 if run.weights_only else "")
        table.add_row(escape(name), escape(status), str(run.steps), ckpts, str(run.tracked_lines),
                      str(len(run.warnings)), style=style)
    console.print(table)
    for run in report.runs:
        if run.warnings:
            title = "would skip" if report.dry_run else "skipped / warnings"
            console.print(f"[bold]{escape(Path(run.target or run.source).name)}[/bold] {title}:")
            for line in run.warnings:
                console.print(f"  - {escape(line)}", soft_wrap=True)
    failed = report.failed
    for run in failed:
        console.print(f"[red]failed[/red] {escape(run.source)}: {escape(run.reason)}", soft_wrap=True)
    if failed:
        console.print(f"[red]{len(failed)} run(s) failed[/red]; the others are complete.")


@reports("lt-migrate: error")
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    console = Console(highlight=False)
    if not console.is_terminal:  # logs and pipes: whole names, no truncated table cells
        console = Console(highlight=False, width=240)
    err = Console(stderr=True, highlight=False)
    if args.make_example:
        made = make_example(args.make_example)
        console.print(f"wrote {len(made)} legacy runs under {escape(args.make_example)}; try:\n"
                      f"  lt-migrate {escape(args.make_example)} --out runs --dry-run")
        return EXIT_OK
    if not args.source:
        parser.error("SOURCE is required (or use --make-example DIR)")
    if args.report and not Path(args.report).resolve().parent.is_dir():  # checked before the work, not after it
        raise ConfigError(f"--report {args.report}: no folder {Path(args.report).parent} to write it in")
    try:
        options = MigrateOptions(state_dict_prefix=args.state_dict_prefix, rules=load_rules(args.rules),
                                 force=args.force, trust_pickle=args.trust_pickle,
                                 tensorboard=not args.no_tensorboard)
    except ValueError as exc:
        err.print(f"lt-migrate: error: {escape(str(exc))}", soft_wrap=True)
        return EXIT_USAGE
    progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), MofNCompleteColumn(),
                        TimeRemainingColumn(), console=err, disable=not err.is_terminal or args.dry_run)
    tasks: dict[str, int] = {}

    def on_plan(plans: list[PlannedRun]) -> None:
        if args.dry_run:
            _print_plan(console, plans)
        tasks["bytes"] = progress.add_task("bytes", total=sum(p.size for p in plans))
        tasks["runs"] = progress.add_task("runs", total=len(plans))

    def on_run(run: RunReport) -> None:
        progress.advance(tasks["runs"])
        if run.reason and run.status != STATUS_FAILED:
            progress.console.print(f"{escape(Path(run.target or run.source).name)}: {escape(run.reason)}")

    try:
        with progress:
            report = migrate(args.source, args.out, dry_run=args.dry_run, only=args.only, options=options,
                             jobs=args.jobs, on_plan=on_plan, on_bytes=lambda n: progress.advance(tasks["bytes"], n),
                             on_run=on_run)
    except SourceError as exc:
        err.print(f"lt-migrate: error: {escape(str(exc))}", soft_wrap=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        err.print("lt-migrate: interrupted; runs already converted are complete, the others are left for the next"
                  " lt-migrate (nothing half-written in --out)", soft_wrap=True)
        return exit_status(-signal.SIGINT)  # 130, as the shell reports a Ctrl-C
    if not args.dry_run:
        _print_report(console, report)
    if args.report:
        atomic_write_json(args.report, report.to_dict())
    if not report.runs:
        err.print(f"lt-migrate: no legacy runs found under {escape(args.source)}")
    return report.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
