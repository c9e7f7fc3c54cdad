"""The words every part of a run agrees on: statuses, exit codes, timestamps, environment names.

Why one module: a run folder is read by drivers, viewers, ``lt-run``, Slurm chains and people; if the
logger says ``completed`` where the sync tool expects ``success``, or a signal carries a naive time
while ``summary.json`` carries an aware one, the files disagree. Every module takes these from here.
Torch-free (imports nothing beyond the standard library).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from datetime import datetime

__all__ = [
    "RUNNING", "COMPLETED", "FAILED", "INTERRUPTED", "CRASHED", "UNKNOWN", "RUN_STATUSES", "FINAL_STATUSES",
    "HEALTHY", "DONE", "SIGNAL_STATUSES",
    "run_status", "EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "EXIT_HEALTH", "exit_status",
    "RUN_NAME_TIME_FORMAT", "run_name_time", "iso_time", "parse_iso_time",
    "ENV_PREFIX", "ENV_RUN_DIR", "ENV_EXP_ID", "ENV_SIGNALS_DIR", "ENV_CACHE_DIR", "ENV_CONSOLE", "env_value",
]

# -- run statuses: summary.json "status", what every sink's close() receives -----------------------
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
INTERRUPTED = "interrupted"  # Ctrl+C, SIGTERM, preemption: stopped on purpose, resumable
CRASHED = "crashed"  # a reader's verdict on "running" with a stale heartbeat (and a killed attempt's entry)
UNKNOWN = "unknown"  # a reader's word for a run whose summary.json is missing or torn
RUN_STATUSES = (RUNNING, COMPLETED, FAILED, INTERRUPTED)
FINAL_STATUSES = (COMPLETED, FAILED, INTERRUPTED)

# -- signal files: <signals>/<exp_id>.<status> -----------------------------------------------------
HEALTHY = "healthy"
DONE = "done"
SIGNAL_STATUSES = (HEALTHY, DONE, FAILED)

# Lightning's Logger.finalize words (and the ones our own callers pass) -> ours.
_FROM_LIGHTNING: Mapping[str, str] = {"success": COMPLETED, "finished": COMPLETED, "failed": FAILED}


def run_status(word: str) -> str:
    """Our run status for a word from Lightning's ``finalize`` or from our own callers.

    Unknown words are refused: a sink that receives a word nobody maps would record the wrong state.
    """
    if word in RUN_STATUSES:
        return word
    try:
        return _FROM_LIGHTNING[word]
    except KeyError:
        raise ValueError(f"unknown run status {word!r}; expected one of {', '.join(RUN_STATUSES)} "
                         f"or Lightning's {', '.join(_FROM_LIGHTNING)}") from None


# -- exit codes ------------------------------------------------------------------------------------
EXIT_OK = 0
EXIT_FAILURE = 1  # the tool ran and something failed (a run, a file)
EXIT_USAGE = 2  # bad arguments or bad input, nothing done (argparse's code)
# A run stopped for its health (HealthGuard, or lt-run's health timeout). Not 1, so a driver or a
# Slurm chain can tell "unhealthy" from "crashed"; unused by Python, the shell and Slurm.
EXIT_HEALTH = 86


def exit_status(returncode: int) -> int:
    """Shell convention for a child's ``Popen.returncode``: killed by signal N gives 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


# -- time ------------------------------------------------------------------------------------------
RUN_NAME_TIME_FORMAT = "%Y%m%d_%H%M%S"  # the stamp in a run folder's name (local time, a name not a record)


def run_name_time(when: datetime | None = None) -> str:
    """Local time as ``YYYYmmdd_HHMMSS`` for a run folder's name."""
    return (when or datetime.now()).strftime(RUN_NAME_TIME_FORMAT)


def iso_time(when: float | None = None) -> str:
    """The one timestamp format inside a run's files: ISO 8601, local time with its UTC offset,
    microseconds (``2026-12-01T14:26:33.123456+01:00``). Aware, so a mirror in another time zone
    and a reader comparing files agree; microseconds, so migrated legacy times lose nothing."""
    return datetime.fromtimestamp(time.time() if when is None else when).astimezone().isoformat(
        timespec="microseconds")


def parse_iso_time(text: str) -> float:
    """Epoch seconds of an ISO 8601 time; a naive one (older files) is taken as local time."""
    return datetime.fromisoformat(text).timestamp()


# -- environment -----------------------------------------------------------------------------------
ENV_PREFIX = "LIGHTNING_TRACK_"
ENV_RUN_DIR = ENV_PREFIX + "RUN_DIR"  # a launcher's choice of run folder for every rank
ENV_EXP_ID = ENV_PREFIX + "EXP_ID"  # lt-run -> the child's HealthGuard: the signal name
ENV_SIGNALS_DIR = ENV_PREFIX + "SIGNALS_DIR"  # lt-run -> the child: where signals go
ENV_CACHE_DIR = ENV_PREFIX + "CACHE_DIR"  # lt-migrate's learned loop-state templates
# "<dev>:<inode>:<file>": stdout is a console capture's pipe (or pseudo-terminal) writing into <file>
# (empty: lt-run's, into whichever run the command names); a process that inherits it does not capture again
ENV_CONSOLE = ENV_PREFIX + "CONSOLE"

# Names read before the prefix was the rule; still honoured when the new name is unset.
_OLD_NAMES: Mapping[str, str] = {ENV_CACHE_DIR: "LT_CACHE_DIR"}


def env_value(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The value of one of our environment variables (or of its older name), else None."""
    environ = os.environ if environ is None else environ
    value = environ.get(name)
    if value is None and name in _OLD_NAMES:
        value = environ.get(_OLD_NAMES[name])
    return value or None
