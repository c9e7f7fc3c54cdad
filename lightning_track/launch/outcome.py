"""What ``lt-run`` makes of its command: when to stop it, and what its end means.

Why apart from :mod:`.runner`: the rules (which exit code a Slurm chain sees, when a run counts as
failed, which signal lt-run writes on the command's behalf, what ``summary.json`` is told) are a
function of a few plain facts: the child's return code, the signals it wrote, whether lt-run
stopped it and why, which signals lt-run forwarded. Kept free of processes and files they are read
in one place and tested without starting anything; :func:`~.runner.run_command` gathers the facts
and does the I/O.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..vocabulary import COMPLETED, DONE, EXIT_HEALTH, FAILED, HEALTHY, INTERRUPTED, RUNNING, exit_status

__all__ = [
    "HEALTH_TIMEOUT", "EXIT_CHECK", "WRITER", "CHILD_FAILED", "STOP_CHECKS", "signal_name", "watch_verdict",
    "health_timeout_failure", "Outcome", "decide_outcome", "summary_update", "run_dir_from",
]

HEALTH_TIMEOUT = "health_timeout"  # check of lt-run's own .failed: no .healthy in time
EXIT_CHECK = "exit"  # check of the .failed lt-run writes for a command that ended badly without saying why
WRITER = "lt-run"  # the ``writer`` field of the signals lt-run writes (the command's own have none)
CHILD_FAILED = "child_failed"  # watch_verdict: the command wrote .failed itself
# The checks a HealthGuard records for a stop from outside (Ctrl+C, SIGTERM): the same words as
# lightning_track.callbacks.health.checks.STOP_CHECKS, not imported (that package needs torch);
# tests/health/test_run_outcome.py checks they agree.
STOP_CHECKS = (INTERRUPTED, "terminated")


def signal_name(num: int) -> str:
    """``SIGTERM`` for 15; ``signal N`` for a number this platform does not name."""
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def watch_verdict(seen: Mapping[str, Any], *, healthy: bool, elapsed: float, health_time: float | None
                  ) -> str | None:
    """While the command runs: :data:`CHILD_FAILED`, :data:`HEALTH_TIMEOUT` or ``None`` (keep waiting).

    ``seen``: the signals present now; ``healthy``: a ``.healthy`` was seen at any point so far.
    The command's own ``.failed`` wins over the deadline: it says why.
    """
    if FAILED in seen:
        return CHILD_FAILED
    if health_time is not None and not healthy and elapsed >= health_time:
        return HEALTH_TIMEOUT
    return None


def health_timeout_failure(health_time: float, elapsed: float) -> dict[str, Any]:
    """The failure lt-run reports when no ``.healthy`` appeared within ``health_time`` s."""
    return {"check": HEALTH_TIMEOUT, "reason": f"not healthy within {health_time:g} s", "value": round(elapsed, 3),
            "threshold": health_time}


@dataclass(frozen=True)
class Outcome:
    """The verdict on a command that has ended."""

    exit_code: int  # what lt-run exits with
    outcome: str  # DONE or FAILED
    reason: str | None
    signal: tuple[str, dict[str, Any]] | None  # (status, fields) lt-run writes; None: the command's own stands
    interrupted: bool  # lt-run forwarded a signal that stopped it: a run left "running" was interrupted


def decide_outcome(
    returncode: int,
    *,
    seen: Mapping[str, Mapping[str, Any]],
    health_failure: Mapping[str, Any] | None = None,
    stopped: bool = False,
    forwarded: Sequence[int] = (),
    duration_s: float = 0.0,
    child_pid: int | None = None,
    run_dir: str | None = None,
) -> Outcome:
    """The verdict once the command has exited.

    Args:
        returncode: ``Popen.returncode`` (negative: killed by that signal).
        seen: the signals present after the exit.
        health_failure: lt-run's own failure (:func:`health_timeout_failure`) when it stopped the
            command for not becoming healthy.
        stopped: lt-run terminated the command (health timeout, or after the command's ``.failed``).
        forwarded: the signals lt-run received and passed on to the command, in order.
        duration_s, child_pid, run_dir: recorded in the signal lt-run writes (``run_dir`` when known).

    The exit code is the command's (128 + N when signal N killed it), except that a command lt-run
    stopped for its health and that still exited 0 (Lightning exits 0 after SIGTERM) gives
    :data:`~lightning_track.vocabulary.EXIT_HEALTH`: the failure must not look like success.
    The command's own ``.failed`` or ``.done`` stands; lt-run writes one only where the command
    did not (or completes its own health-timeout ``.failed`` with how the command ended).
    """
    code = exit_status(returncode)
    if stopped and code == 0:
        code = EXIT_HEALTH
    end_fields: dict[str, Any] = {"exit_code": code, "duration_s": duration_s, "child_pid": child_pid,
                                  "writer": WRITER}
    if returncode < 0:
        end_fields["killed_by"] = signal_name(-returncode)
    if run_dir is not None:  # every signal lt-run writes leads to its run
        end_fields["run_dir"] = run_dir
    written: tuple[str, dict[str, Any]] | None = None
    if health_failure is not None:
        outcome, reason = FAILED, health_failure["reason"]
        written = (FAILED, {**health_failure, **end_fields, "run_dir": run_dir})
    elif FAILED in seen:
        outcome, reason = FAILED, seen[FAILED].get("reason")
    elif DONE in seen and code == 0:
        outcome, reason = DONE, None
    elif code == 0 and not forwarded:
        outcome, reason = DONE, None
        written = (DONE, end_fields)
    else:
        outcome = FAILED
        if forwarded:
            reason = f"stopped: lt-run received {signal_name(forwarded[0])} (exit code {code})"
        elif returncode < 0:
            reason = f"killed by {signal_name(-returncode)} (exit code {code})"
        else:
            reason = f"exit code {code}"
        written = (FAILED, {"check": EXIT_CHECK, "reason": reason, **end_fields})
    return Outcome(exit_code=code, outcome=outcome, reason=reason, signal=written,
                   interrupted=bool(forwarded) and health_failure is None)


def summary_update(
    current: Mapping[str, Any],
    *,
    exit_code: int,
    duration_s: float,
    exp_id: str,
    outcome: str,
    failure: Mapping[str, Any] | None = None,
    interrupted: bool = False,
) -> tuple[str | None, dict[str, Any]]:
    """``(status, extra fields)`` for the run's ``summary.json`` after the command ended.

    ``current`` is the summary as the command left it. A command killed before it finalized leaves
    ``status: running`` (or no summary); that becomes ``interrupted`` when lt-run forwarded the
    signal that stopped it, ``failed`` when the outcome is a failure. Otherwise the command's own
    final status is kept (``None``).

    ``failure`` is lt-run's own (a health timeout): lt-run stopped the command, so what the command
    recorded of that stop (``SIGTERM received``, ``interrupted``, still ``running``) is the
    consequence and lt-run's verdict the cause: the run becomes ``failed`` with lt-run's failure,
    and the command's own record moves to ``lt_run.child_failure``. A failure the command found
    itself (a NaN before the deadline) stands; lt-run's is only added where the command recorded none.
    """
    status = None
    lt_run: dict[str, Any] = {"exp_id": exp_id, "exit_code": exit_code, "duration_s": duration_s, "outcome": outcome}
    extra: dict[str, Any] = {"lt_run": lt_run}
    child_failure = current.get("failure")
    if failure is not None and _record_of_the_stop(current.get("status"), child_failure):
        if child_failure:
            lt_run["child_failure"] = child_failure
        extra["failure"] = dict(failure)
        return FAILED, extra
    if current.get("status") in (None, RUNNING):
        status = INTERRUPTED if interrupted else (FAILED if outcome == FAILED else None)
    if failure is not None and "failure" not in current:
        extra["failure"] = dict(failure)
    return status, extra


def _record_of_the_stop(status: str | None, failure: Any) -> bool:
    """Whether a run's status and failure only say that it was stopped from outside."""
    if status in (None, RUNNING, INTERRUPTED):
        return True
    if status == COMPLETED:
        return False
    return not isinstance(failure, Mapping) or failure.get("check") in STOP_CHECKS


def run_dir_from(seen: Mapping[str, Mapping[str, Any]]) -> Path | None:
    """The run folder a HealthGuard wrote into the command's signals (the most final one's)."""
    for status in (DONE, FAILED, HEALTHY):
        value = seen.get(status, {}).get("run_dir")
        if value:
            return Path(value)
    return None
