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
    from ..launch.pipeline_state import DONE, SUBMITTED, PipelineState
    from ..launch.slurm import SlurmOptions, sbatch_scripts, script_path, submit, submit_plan

    state = PipelineState(pipeline)
    again = [args.from_step, *pipeline.downstream(args.from_step)] if args.from_step else []
    earlier = {n: str(state.get(n).get("slurm_job_id")) for n in pipeline.order
               if n not in again and state.state(n) == SUBMITTED}
    if earlier:
        log(f"already submitted, not again: {', '.join(f'{n} (job {j})' for n, j in earlier.items())} "
            "(--from STEP submits a step again)")
    steps = [n for n in pipeline.order if n in again or state.state(n) not in (DONE, SUBMITTED)]
    options = SlurmOptions(partition=args.partition, time=args.time, gres=args.gres, extra=tuple(args.slurm_arg),
                           grace=max(int(args.grace), 1))
    scripts = sbatch_scripts(pipeline, options, steps=steps)
    if args.dry_run:
        for name, text in scripts.items():
            print(f"# ---- {script_path(pipeline, name)}")
            print(text)
        print("# ---- submitted in this order:")
        print("\n".join(submit_plan(pipeline, steps, earlier)))
        return EXIT_OK
    ids = submit(pipeline, scripts, earlier=earlier)
    for name, job in ids.items():
        state.update(name, state=SUBMITTED, slurm_job_id=job, exp_id=pipeline.exp_id(name))
        log(f"{name}: submitted as job {job}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)

    def log(message: str) -> None:
        print(f"lt run: {message}", file=sys.stderr, flush=True)

    from ..errors import ConfigError, LightningTrackError
    from ..launch.notify import Notifier
    from ..launch.pipeline import load_pipeline
    from ..launch.pipeline_state import PipelineState, format_status

    try:
        pipeline = load_pipeline(args.pipeline)
        if args.status:
            state = PipelineState(pipeline, resume=False)
            print(f"pipeline {pipeline.name} ({state.path})")
            print("\n".join(format_status(state)))
            return EXIT_OK
        if args.dry_run and not args.slurm:
            raise ConfigError("--dry-run goes with --slurm (it prints the sbatch scripts)")
        if args.from_step is not None and args.from_step not in pipeline.steps:
            raise ConfigError(f"--from {args.from_step!r}: no such step; steps: {', '.join(pipeline.order)}")
        if args.slurm:
            return _slurm(args, pipeline, log)
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
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
