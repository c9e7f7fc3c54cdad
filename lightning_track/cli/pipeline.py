"""``lt run --pipeline FILE``: run a pipeline of steps on this machine (see :mod:`lightning_track.launch.pipeline`).

    lt run --pipeline FILE [--jobs N] [--from STEP] [--notify URL ...] [--status]
    lt run --pipeline FILE --slurm [--partition P] [--time T] [--gres G] [--slurm-arg=OPT ...] [--dry-run]

Exit code: 0 when every step is done, 1 when a step failed (its dependants are not started), 130 after
Ctrl+C (re-run the same command to continue), 2 for a bad pipeline file or bad arguments, before any
step starts. With ``--slurm`` every step not done becomes a Slurm job (:mod:`lightning_track.launch.slurm`);
``--dry-run`` prints the scripts and the submission instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..vocabulary import EXIT_OK, EXIT_USAGE
from ._errors import reports

if TYPE_CHECKING:
    from ..launch.pipeline import Pipeline

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lt run --pipeline",
        usage="lt run --pipeline FILE [--jobs N] [--from STEP] [--notify URL ...] [--status]",
        description="Run the steps of a pipeline file in dependency order, each health-gated and post-processed "
                    "like lt-run; a re-run skips the steps already done.")
    parser.add_argument("--pipeline", required=True, metavar="FILE", help="the pipeline file (YAML)")
    parser.add_argument("--jobs", "-j", type=int, default=1, metavar="N",
                        help="steps that may run at once when they do not wait for each other (default: 1)")
    parser.add_argument("--from", dest="from_step", metavar="STEP",
                        help="run STEP and every step after it again, even if done")
    parser.add_argument("--notify", action="append", default=[], metavar="URL",
                        help="an apprise URL (json://host:port/path, slack://..., mailto://...); repeatable")
    parser.add_argument("--status", action="store_true", help="print each step's state and exit")
    parser.add_argument("--grace", type=float, default=30.0, metavar="SECONDS",
                        help="seconds between SIGTERM and SIGKILL when a step is stopped (default: 30)")
    parser.add_argument("--stale", type=float, default=120.0, metavar="SECONDS",
                        help="notify when a running step's heartbeat is older than this (default: 120; 0: off)")
    parser.add_argument("--no-console", action="store_true", help="do not copy the steps' output into logs.txt")
    slurm = parser.add_argument_group("Slurm")
    slurm.add_argument("--slurm", action="store_true", help="submit the steps as Slurm jobs chained with afterok")
    slurm.add_argument("--dry-run", action="store_true", help="with --slurm: print the sbatch scripts, submit nothing")
    slurm.add_argument("--partition", help="sbatch --partition")
    slurm.add_argument("--time", help="sbatch --time, e.g. 24:00:00")
    slurm.add_argument("--gres", help="sbatch --gres, e.g. gpu:1")
    slurm.add_argument("--slurm-arg", action="append", default=[], metavar="OPT",
                       help="any other sbatch option, written --slurm-arg=--mem=32G (repeatable)")
    return parser


def _slurm(args: argparse.Namespace, pipeline: Pipeline, log: Callable[[str], None]) -> int:
    from ..launch.pipeline_state import PipelineState, state_path
    from ..launch.slurm import SlurmOptions, sbatch_scripts, script_path, submit, submit_plan
    from ..redaction import redact_command
    from ..vocabulary import DONE, RUNNING, SUBMITTED

    if not args.dry_run and state_path(pipeline).exists():  # what Slurm says of the jobs submitted before
        from ..launch.pipeline import expand_sweeps
        from ..launch.slurm_status import refresh_from_slurm

        refresh_from_slurm(PipelineState(expand_sweeps(pipeline), resume=False))  # a failed one is submitted again
    state = PipelineState(pipeline)
    again = [args.from_step, *pipeline.downstream(args.from_step)] if args.from_step else []
    earlier = {n: str(state.get(n).get("slurm_job_id")) for n in pipeline.order
               if n not in again and state.state(n) in (SUBMITTED, RUNNING) and state.get(n).get("slurm_job_id")}
    if earlier:
        log(f"already submitted, not again: {', '.join(f'{n} (job {j})' for n, j in earlier.items())} "
            "(--from STEP submits a step again)")
    steps = [n for n in pipeline.order if n in again or (state.state(n) != DONE and n not in earlier)]
    options = SlurmOptions(partition=args.partition, time=args.time, gres=args.gres, extra=tuple(args.slurm_arg),
                           grace=max(int(args.grace), 1))
    scripts = sbatch_scripts(pipeline, options, steps=steps)
    scripts.update(_sweep_arrays(pipeline, options, steps))
    if args.dry_run:
        for name, text in scripts.items():
            print(f"# ---- {script_path(pipeline, name)}")
            print(redact_command(text))  # secret values hidden, as in the written script (see launch/slurm.py)
        print("# ---- submitted in this order:")
        print("\n".join(submit_plan(pipeline, steps, earlier)))
        return EXIT_OK
    ids = submit(pipeline, scripts, earlier=earlier)
    for name, job in ids.items():
        state.update(name, state=SUBMITTED, slurm_job_id=job, exp_id=pipeline.exp_id(name), slurm=None, reason=None)
        log(f"{name}: submitted as job {job}")
    _record_array_tasks(pipeline, ids)
    return EXIT_OK


def _sweep_arrays(pipeline: Pipeline, options: object, steps: list[str]) -> dict[str, str]:
    """The sweep steps among ``steps`` as job arrays (one task per trial) instead of one job each."""
    from ..launch.pipeline import check_slurm_references
    from ..launch.slurm import sweep_array_script

    check_slurm_references(pipeline)
    return {n: sweep_array_script(pipeline, n, options) for n in steps  # type: ignore[arg-type]
            if pipeline.steps[n].sweep is not None}


def _record_array_tasks(pipeline: Pipeline, ids: dict[str, str]) -> None:
    """Each submitted trial in the state file as ``submitted`` with its array task id ``<job>_<i>``."""
    from ..launch.pipeline import expand_sweeps
    from ..launch.pipeline_state import PipelineState
    from ..vocabulary import SUBMITTED

    expanded = expand_sweeps(pipeline)
    if not any(n in ids for n in expanded.sweeps):
        return
    state = PipelineState(expanded)
    for name, trials in expanded.sweeps.items():
        for i, trial in enumerate(trials if name in ids else ()):
            state.update(trial, state=SUBMITTED, slurm_job_id=f"{ids[name]}_{i}", exp_id=pipeline.exp_id(trial),
                         cmd=expanded.steps[trial].cmd)


def _print_status(pipeline: Pipeline) -> None:
    """``--status``: every step's state (a sweep's trials too), then each sweep's trials by best metric."""
    from ..launch.pipeline import expand_sweeps
    from ..launch.pipeline_state import PipelineState, format_status
    from ..launch.slurm_status import refresh_from_slurm
    from ..launch.sweep_report import sweep_table
    from ..query.sweeps import table_lines

    expanded = expand_sweeps(pipeline)
    state = PipelineState(expanded, resume=False)
    refresh_from_slurm(state)  # steps submitted to Slurm: as Slurm sees them now
    print(f"pipeline {pipeline.name} ({state.path})")
    print("\n".join(format_status(state)))
    for name in expanded.sweeps:
        metric, mode, rows, _ = sweep_table(expanded, state, name)
        print(f"\nsweep {pipeline.exp_id(name)}: trials by {metric or 'metric'} ({mode}), best first")
        print("\n".join(table_lines(metric, mode, rows)))


@reports("lt run: error")
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)

    def log(message: str) -> None:
        print(f"lt run: {message}", file=sys.stderr, flush=True)

    from ..errors import ConfigError, LightningTrackError
    from ..launch.pipeline import expand_sweeps, load_pipeline
    from ..launch.pipeline_state import format_status

    try:
        pipeline = load_pipeline(args.pipeline)
        if args.status:
            _print_status(pipeline)
            return EXIT_OK
        if args.dry_run and not args.slurm:
            raise ConfigError("--dry-run goes with --slurm (it prints the sbatch scripts)")
        if args.from_step is not None and args.from_step not in (pipeline if args.slurm else expand_sweeps(pipeline)
                                                                 ).steps:
            raise ConfigError(f"--from {args.from_step!r}: no such step; steps: {', '.join(pipeline.order)}")
        if args.slurm:
            return _slurm(args, pipeline, log)
        from ..launch.notify import Notifier  # not before: --slurm and --status send nothing

        notifier = Notifier(args.notify, log=log)
    except (LightningTrackError, OSError) as exc:
        log(f"error: {exc}")
        return EXIT_USAGE

    from ..launch.pipeline_driver import run_pipeline

    try:
        try:
            result = run_pipeline(pipeline, jobs=args.jobs, from_step=args.from_step, notifier=notifier, log=log,
                                  grace=args.grace, stale_after=args.stale, console=not args.no_console)
        finally:
            notifier.close()
    except LightningTrackError as exc:
        log(f"error: {exc}")
        return EXIT_USAGE
    print(f"pipeline {pipeline.name} ({result.state.path})", file=sys.stderr)
    print("\n".join(format_status(result.state)), file=sys.stderr, flush=True)
    for lines in result.tables.values():
        print("\n" + "\n".join(lines), file=sys.stderr, flush=True)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
