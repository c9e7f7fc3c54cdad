"""Inside a pipeline step's Slurm job: the checkpoints its command names, as shell ``export`` lines.

    python -m lightning_track.cli.job_checkpoints --signals-dir DIR --exp-id EXP_ID --step STEP \\
        --checkpoint VARIABLE TEMPLATE RUN_NOTE [--checkpoint ...]

Written by ``lt run --pipeline --slurm`` into the sbatch script of a step whose command has ``{train.last_ckpt}``
or ``{train.best_ckpt}``; the script runs it when the job starts (the earlier step's job has ended: ``afterok``)
and ``eval``\\ s what it prints. Exit code 2 with one line on stderr (the job's log) when a checkpoint cannot be
named; the logic is :func:`lightning_track.launch.checkpoint_refs.job_checkpoints`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from ..vocabulary import EXIT_OK, SLURM_ENV, SLURM_JOB_ID
from ._errors import reports

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_track.cli.job_checkpoints",
        description="In a pipeline step's Slurm job: resolve {STEP.last_ckpt} / {STEP.best_ckpt} from the earlier "
                    "step's checkpoints.json and print the shell lines that export them.")
    parser.add_argument("--signals-dir", required=True, help="the pipeline's signals folder")
    parser.add_argument("--exp-id", required=True, help="this step's exp_id (its .failed signal when one is missing)")
    parser.add_argument("--step", required=True, help="this step's name, for the messages")
    parser.add_argument("--checkpoint", nargs=3, action="append", required=True,
                        metavar=("VARIABLE", "TEMPLATE", "RUN_NOTE"),
                        help="export the path TEMPLATE names as VARIABLE, the earlier run's folder read from RUN_NOTE")
    return parser


def _job_id() -> str | None:
    """The id the pipeline's state knows the job by: ``<array>_<task>`` for a job array's task."""
    array, task = os.environ.get(SLURM_ENV["array_job_id"]), os.environ.get(SLURM_ENV["array_task_id"])
    return f"{array}_{task}" if array and task else os.environ.get(SLURM_JOB_ID)


@reports("lt run: error")
def main(argv: list[str] | None = None) -> int:
    from ..launch.checkpoint_refs import job_checkpoints

    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    env = job_checkpoints(args.step, [tuple(c) for c in args.checkpoint], signals_dir=args.signals_dir,
                          exp_id=args.exp_id, job_id=_job_id())
    print("\n".join(f"export {name}={shlex.quote(value)}" for name, value in env.items()))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
