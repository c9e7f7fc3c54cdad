"""The words every part of a run agrees on: statuses, exit codes, timestamps, environment names.

Why one module: a run folder is read by drivers, viewers, ``lt-run``, Slurm chains and people; if the
logger says ``completed`` where the sync tool expects ``success``, or a signal carries a naive time
while ``summary.json`` carries an aware one, the files disagree. Every module takes these from here.
Torch-free (imports nothing beyond the standard library).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping
from datetime import datetime

__all__ = [
    "RUNNING", "COMPLETED", "FAILED", "INTERRUPTED", "CRASHED", "UNKNOWN", "RUN_STATUSES", "FINAL_STATUSES",
    "HEALTHY", "DONE", "SIGNAL_STATUSES", "STALE", "RETRYING", "STALLED", "STALL_FACTOR", "STALL_FLOOR_S",
    "stall_limit", "stalled_for",
    "run_status", "EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "EXIT_REFUSED", "EXIT_HEALTH", "exit_status",
    "RUN_NAME_TIME_FORMAT", "run_name_time", "iso_time", "parse_iso_time", "format_bytes",
    "ENV_PREFIX", "ENV_RUN_DIR", "ENV_EXP_ID", "ENV_SIGNALS_DIR", "ENV_CACHE_DIR", "ENV_CONSOLE", "ENV_TAGS",
    "ENV_SWEEP", "ENV_EVALUATES", "ENV_CHECKPOINT_PREFIX", "env_value", "cache_root",
    "PENDING", "BLOCKED", "SUBMITTED", "SLURM_ENV", "SLURM_JOB_ID", "SLURM_RESTART_COUNT", "slurm_step_state",
    "stop_signals",
]

# -- run statuses: summary.json "status", what every sink's close() receives -----------------------
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
INTERRUPTED = "interrupted"  # Ctrl+C, SIGTERM, preemption: stopped on purpose, resumable
CRASHED = "crashed"  # a reader's verdict on "running" with a stale heartbeat (and a killed attempt's entry)
# a reader's verdict on "running" whose heartbeat is fresh but whose steps stopped (a hung collective, a
# partitioned node): alive but not training; also the watcher's notification event for it
STALLED = "stalled"
UNKNOWN = "unknown"  # a reader's word for a run whose summary.json is missing or torn
RUN_STATUSES = (RUNNING, COMPLETED, FAILED, INTERRUPTED)
FINAL_STATUSES = (COMPLETED, FAILED, INTERRUPTED)

# -- signal files: <signals>/<exp_id>.<status> -----------------------------------------------------
HEALTHY = "healthy"
DONE = "done"
SIGNAL_STATUSES = (HEALTHY, DONE, FAILED)
# a notification's event for a run still "running" whose heartbeat stopped (a reader says CRASHED)
STALE = "stale"
# a notification's event for a pipeline step's failed attempt that is tried again (the step stays running)
RETRYING = "retrying"

# -- progress: when a live run counts as stalled (readers, the watcher, HealthGuard agree on one rule) ------
STALL_FACTOR = 10.0  # N x the recent time per step without a new step ...
STALL_FLOOR_S = 300.0  # ... but never less than this: validation, checkpoint saves and data loading pause steps


def stall_limit(step_time_s: float | None, factor: float = STALL_FACTOR, floor_s: float = STALL_FLOOR_S) -> float:
    """Seconds without a new step after which a live run is stalled: ``max(factor x step time, floor)``;
    the floor alone while the step time is not known yet (before the second step)."""
    if step_time_s is None or not step_time_s > 0:
        return float(floor_s)
    return max(factor * step_time_s, float(floor_s))


def stalled_for(last_step_time: float | None, now: float, step_time_s: float | None,
                factor: float = STALL_FACTOR, floor_s: float = STALL_FLOOR_S) -> float | None:
    """Seconds since the last step when that is beyond :func:`stall_limit`, else None (still moving, or
    nothing to judge: no step time recorded)."""
    if last_step_time is None:
        return None
    waited = now - last_step_time
    return waited if waited > stall_limit(step_time_s, factor, floor_s) else None


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
EXIT_REFUSED = 3  # lt-sync: the copy is done, but some paths were refused as unsafe
# A run stopped for its health (HealthGuard, or lt-run's health timeout). Not 1, so a driver or a
# Slurm chain can tell "unhealthy" from "crashed"; unused by Python, the shell and Slurm.
EXIT_HEALTH = 86


def exit_status(returncode: int) -> int:
    """Shell convention for a child's ``Popen.returncode``: killed by signal N gives 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def stop_signals(wanted: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> tuple[int, ...]:
    """The stop signals of ``wanted`` that this process should catch: all but an ignored SIGINT.

    A shell script's ``cmd &`` starts ``cmd`` with SIGINT ignored, so the terminal's Ctrl+C (sent to the
    whole group: a script has no job control) spares its background jobs. Python keeps it ignored, and so
    do lt-run, lt sync, the pipeline driver and PreemptionHandler: such a process is stopped with SIGTERM.
    """
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    return tuple(s for s in wanted if not (s == signal.SIGINT and ignored))


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


def format_bytes(n: float) -> str:
    """A size as people read it, in binary units: ``512 B``, ``1.5 KiB``, ``3.0 MiB``, ``2.1 GiB`` (one spelling
    for every tool, so lt show, lt-sync and lt-migrate agree on what a megabyte is)."""
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


# -- environment -----------------------------------------------------------------------------------
ENV_PREFIX = "LIGHTNING_TRACK_"
ENV_RUN_DIR = ENV_PREFIX + "RUN_DIR"  # a launcher's choice of run folder for every rank
ENV_EXP_ID = ENV_PREFIX + "EXP_ID"  # lt-run -> the child's HealthGuard: the signal name
ENV_SIGNALS_DIR = ENV_PREFIX + "SIGNALS_DIR"  # lt-run -> the child: where signals go
ENV_CACHE_DIR = ENV_PREFIX + "CACHE_DIR"  # the user's cache: loop-state templates, parsed metric histories
# "<dev>:<inode>:<file>": stdout is a console capture's pipe (or pseudo-terminal) writing into <file>
# (empty: lt-run's, into whichever run the command names); a process that inherits it does not capture again
ENV_CONSOLE = ENV_PREFIX + "CONSOLE"
ENV_TAGS = ENV_PREFIX + "TAGS"  # "a,b": tags the launcher adds to the run (a sweep's trials: the sweep's name)
ENV_SWEEP = ENV_PREFIX + "SWEEP"  # JSON {name, trial, overrides, metric, mode}: summary.json's "sweep"
# JSON list of {template, run, run_dir, file, step, sha256}: the checkpoints of earlier pipeline steps' runs that
# this step's command was given ({train.best_ckpt}); its RunLogger records them in meta.json's "evaluated"
ENV_EVALUATES = ENV_PREFIX + "EVALUATES"
# + "<step>_<field>": in a Slurm job, the path of {step.last_ckpt} / {step.best_ckpt}, resolved at the job's start
ENV_CHECKPOINT_PREFIX = ENV_PREFIX + "CKPT_"
ENV_MASK = ENV_PREFIX + "MASK"  # JSON list: the secret values the console relay masks in logs.txt (its own env only)

# Names read before the prefix was the rule; still honoured when the new name is unset.
_OLD_NAMES: Mapping[str, str] = {ENV_CACHE_DIR: "LT_CACHE_DIR"}


def env_value(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The value of one of our environment variables (or of its older name), else None."""
    environ = os.environ if environ is None else environ
    value = environ.get(name)
    if value is None and name in _OLD_NAMES:
        value = environ.get(_OLD_NAMES[name])
    return value or None


# -- pipeline steps and Slurm ----------------------------------------------------------------------
# A pipeline step's state (<root>/<pipeline>.pipeline.json) is RUNNING, DONE, FAILED, INTERRUPTED or one of:
PENDING = "pending"  # not started yet
BLOCKED = "blocked"  # an upstream step failed: never started
SUBMITTED = "submitted"  # handed to Slurm and waiting there (its job id in slurm_job_id)

# Slurm's own environment in a job (its names, not ours: no ENV_ prefix): meta.json's "slurm" section, under our keys.
SLURM_JOB_ID = "SLURM_JOB_ID"
SLURM_RESTART_COUNT = "SLURM_RESTART_COUNT"  # set by Slurm in a requeued job (1, 2, ...)
SLURM_ENV: Mapping[str, str] = {
    "job_id": SLURM_JOB_ID, "job_name": "SLURM_JOB_NAME", "array_job_id": "SLURM_ARRAY_JOB_ID",
    "array_task_id": "SLURM_ARRAY_TASK_ID", "restart_count": SLURM_RESTART_COUNT,
    "node_list": "SLURM_JOB_NODELIST", "partition": "SLURM_JOB_PARTITION", "ntasks": "SLURM_NTASKS",
    "procid": "SLURM_PROCID", "step_id": "SLURM_STEP_ID", "submit_dir": "SLURM_SUBMIT_DIR",
}

# Slurm's job states (squeue %T, scontrol's JobState, sacct's State) -> a pipeline step's state.
_FROM_SLURM: Mapping[str, str] = {
    **dict.fromkeys(("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SPECIAL_EXIT"),
                    SUBMITTED),
    **dict.fromkeys(("RUNNING", "CONFIGURING", "COMPLETING", "SIGNALING", "STAGE_OUT", "RESIZING", "SUSPENDED",
                     "STOPPED"), RUNNING),
    "COMPLETED": DONE,
    **dict.fromkeys(("FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"), FAILED),
    **dict.fromkeys(("CANCELLED", "PREEMPTED", "REVOKED"), INTERRUPTED),
}


def slurm_step_state(word: str) -> str | None:
    """Our step state for a Slurm job state (``CANCELLED by 0`` and ``CANCELLED+`` read as ``CANCELLED``);
    None for a word Slurm may add later, which a caller then leaves as it was."""
    return _FROM_SLURM.get(word.split(" ")[0].rstrip("+").upper()) if word else None


def cache_root(environ: Mapping[str, str] | None = None) -> str:
    """The user's cache folder for lightning_track: ``$LIGHTNING_TRACK_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/lightning_track``, else ``~/.cache/lightning_track``. Only ever a speed-up: whatever
    is there can be deleted, and runs are never read from it alone."""
    environ = os.environ if environ is None else environ
    root = env_value(ENV_CACHE_DIR, environ)
    if not root:
        base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "lightning_track")
    return os.path.abspath(root)  # a relative one would move with the cwd, and SQLite's URIs need it absolute
