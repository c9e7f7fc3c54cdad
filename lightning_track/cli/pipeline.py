"""``lt run --pipeline FILE``: run a pipeline of steps on this machine (see :mod:`lightning_track.launch.pipeline`).

    lt run --pipeline FILE [--jobs N] [--from STEP] [--notify URL ...] [--status]

Exit code: 0 when every step is done, 1 when a step failed (its dependants are not started), 130 after
Ctrl+C (re-run the same command to continue), 2 for a bad pipeline file or bad arguments, before any
step starts.
"""

from __future__ import annotations

import argparse
import sys

from ..vocabulary import EXIT_OK, EXIT_USAGE

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
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)

    def log(message: str) -> None:
        print(f"lt run: {message}", file=sys.stderr, flush=True)

    from ..errors import LightningTrackError
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
