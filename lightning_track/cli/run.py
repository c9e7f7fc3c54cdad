"""``lt-run``: launch a training command, watch its health signals, post-process its run folder.

    lt-run [--exp-id ID] [--signals-dir DIR] [--health-time SECONDS] [--run-dir DIR] [--slurm-requeue]
           [--notify URL ...] [--stale SECONDS] -- CMD ...
    lt-run --post-process RUN_DIR

``--notify`` sends what a pipeline step sends (healthy, done, failed with its check, value and step,
interrupted, stale; :mod:`lightning_track.launch.notices`), titled ``<exp_id>: <event>``.

Exits with the child's exit code (128 + N when signal N killed it), so Slurm's
``--dependency=afterok`` chains work. The logic lives in :mod:`lightning_track.launch.runner`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import ConfigError, one_line
from ..vocabulary import DONE, EXIT_OK, EXIT_USAGE, FAILED, HEALTHY
from ._errors import reports

__all__ = ["main"]

# run_command's event kinds (the signal words among them) -> console style
_STYLES = {"start": "cyan", HEALTHY: "green", DONE: "green", FAILED: "red", "error": "red", "kill": "red",
           "post": "cyan", "info": "dim"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lt-run",
        usage="lt-run [options] -- CMD ...  |  lt-run --post-process RUN_DIR",
        description="Run a training command, stop it when it does not become healthy, and post-process its run "
                    "folder (metrics.csv, summary.json, report_draft.md). Exit code = the command's.",
    )
    parser.add_argument("--exp-id", help="signal file stem (default: <script>_<YYYYmmdd_HHMMSS>); exported to the "
                                         "command as LIGHTNING_TRACK_EXP_ID")
    parser.add_argument("--signals-dir", default="runs/signals",
                        help="folder of the signal files (default: runs/signals); exported as "
                             "LIGHTNING_TRACK_SIGNALS_DIR")
    parser.add_argument("--health-time", type=float, metavar="SECONDS",
                        help="stop the command if no .healthy signal appears within this many seconds")
    parser.add_argument("--run-dir", help="the command's run folder to post-process (default: the one the command "
                                          "names in <signals-dir>/<exp-id>.run or in its signals)")
    parser.add_argument("--grace", type=float, default=30.0, metavar="SECONDS",
                        help="seconds between SIGTERM and SIGKILL when stopping the command (default: 30)")
    parser.add_argument("--no-post-process", action="store_true", help="do not post-process the run folder")
    parser.add_argument("--no-console", action="store_true",
                        help="do not copy the command's output into the run's logs.txt (the command's own "
                             "RunLogger then captures it from the start of training)")
    parser.add_argument("--slurm-requeue", action="store_true",
                        help="in a Slurm job: when the command stopped on a signal and left a resumable checkpoint "
                             "(PreemptionHandler), requeue the job (scontrol requeue $SLURM_JOB_ID) to continue it")
    parser.add_argument("--notify", action="append", default=[], metavar="URL",
                        help="an apprise URL (json://host:port/path, slack://..., mailto://...) told healthy, done, "
                             "failed, interrupted and stale, as a pipeline step does; repeatable")
    parser.add_argument("--stale", type=float, default=120.0, metavar="SECONDS",
                        help="with --notify: notify when the run's heartbeat is older than this (default: 120; 0: off)")
    parser.add_argument("--post-process", metavar="RUN_DIR",
                        help="only post-process RUN_DIR (rebuild metrics.csv, summary.json, report_draft.md)")
    return parser


class _Say:
    """rich's console on stderr, imported at the first message: lt-run starts the command first (the command's
    start is what a Slurm job or a pipeline step waits for; rich's import takes a tenth of a second)."""

    _console: Any = None

    @property
    def console(self) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True, highlight=False)
        return self._console

    def __call__(self, text: str) -> None:
        self.console.print(text, soft_wrap=True)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


# lt-run's contract: the exit code is the command's; whatever stops lt-run before that code exists (bad
# usage, a command that cannot start, --post-process on a folder that is no run) is usage, 2.
@reports("lt-run: error", rules=((OSError, EXIT_USAGE), (ValueError, EXIT_USAGE)))
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:
        split = argv.index("--")
        options, cmd = argv[:split], argv[split + 1:]
    else:
        options, cmd = argv, []
    parser = _parser()
    args = parser.parse_args(options)
    say = _Say()
    if args.post_process is not None:
        if cmd:
            raise ConfigError("--post-process takes no command")
        if args.notify:
            raise ConfigError("--notify goes with a command (lt-run --notify URL -- CMD ...)")
        from pathlib import Path

        from ..derived.summary import post_process
        from ..query.discover import require_run_folder

        require_run_folder(Path(args.post_process))  # never rewrite the files of a folder that is not a run
        with say.console.status(f"post-processing {args.post_process}"):
            summary = post_process(args.post_process)
        say(f"post-processed {_escape(args.post_process)}: status {summary.get('status', 'unknown')}, "
            f"{summary.get('steps_logged', 0)} steps")
        return EXIT_OK
    if not cmd:
        raise ConfigError("no command given (usage: lt-run [options] -- CMD ...)")

    from ..launch.notices import CommandNotices
    from ..launch.notify import Notifier
    from ..launch.runner import default_exp_id, run_command

    # a URL apprise does not understand, or no apprise (ValueError): refused before anything starts
    notifier = Notifier(args.notify, log=lambda text: say(f"lt-run: {_escape(text)}"))
    exp_id = args.exp_id if args.exp_id is not None else default_exp_id(cmd)
    notices = CommandNotices(notifier, exp_id, args.signals_dir, stale_after=args.stale,
                             log=lambda text: on_event("error", text))

    def on_event(kind: str, message: str) -> None:
        style = _STYLES.get(kind, "")
        text = _escape(message)
        say(f"[{style}]lt-run[/{style}]: {text}" if style else f"lt-run: {text}")
        notices.on_event(kind, message)

    try:
        with notices:
            result = run_command(cmd, exp_id=exp_id, signals_dir=args.signals_dir, health_time=args.health_time,
                                 run_dir=args.run_dir, grace=args.grace, do_post_process=not args.no_post_process,
                                 on_event=on_event, console=not args.no_console)
    except (OSError, ValueError) as exc:  # the command could not start (or lt-run's own files failed)
        notices.send(FAILED, one_line(exc))
        notifier.close()
        raise
    notices.finished(result)
    notifier.close()
    if args.slurm_requeue:
        from ..launch.slurm_job import requeue_if_resumable

        said = requeue_if_resumable(result.signals)
        if said:
            on_event("info", said)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
