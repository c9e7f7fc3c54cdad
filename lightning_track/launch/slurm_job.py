"""Inside a Slurm job: requeue the job when its command stopped on a signal and can continue.

Why the job requeues itself: Slurm brings a ``--requeue`` job back on its own only when it preempts it
(``PreemptMode=REQUEUE``), when a node fails, or when someone runs ``scontrol requeue``. A job warned of its
time limit by ``--signal=B:TERM@<grace>`` (or signalled by ``scancel --signal=TERM --batch``) ends with the
command's exit code, or ``TIMEOUT``, and stays ended. So ``lt-run --slurm-requeue``, after the command stopped
and said it can continue (a :class:`~lightning_track.callbacks.PreemptionHandler`'s ``.failed`` signal with
``resumable: true``, written after its checkpoint), runs ``scontrol requeue $SLURM_JOB_ID`` while the job is
still running: the job goes back to pending under the same id, so its ``afterok`` dependants keep waiting
(a job that had ended ``FAILED`` would cancel them), and Slurm starts it again with ``SLURM_RESTART_COUNT``
set, which the step's script turns into "continue the run folder of the run note" (see :mod:`.slurm`).

When Slurm requeued the job itself (``scontrol requeue``, a preemption), the command got the same SIGTERM
from Slurm; the call then finds the job already on its way back to the queue, which is said in one line.
Torch-free: only the signal files and ``scontrol``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping
from typing import Any

from ..vocabulary import FAILED, SLURM_JOB_ID, SLURM_RESTART_COUNT

__all__ = ["resumable", "requeue_if_resumable"]

Run = Callable[[list[str]], subprocess.CompletedProcess[str]]


def resumable(seen: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether the signals the command left say it stopped with a checkpoint to continue from."""
    failed = seen.get(FAILED) or {}
    return failed.get("resumable") is True


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def requeue_if_resumable(seen: Mapping[str, Mapping[str, Any]], environ: Mapping[str, str] | None = None,
                         run: Run = _run) -> str | None:
    """``scontrol requeue $SLURM_JOB_ID`` when :func:`resumable`; one line saying what happened, or None when
    there was nothing to do (not in a Slurm job, or the command did not stop to be resumed)."""
    env = os.environ if environ is None else environ
    job = env.get(SLURM_JOB_ID)
    if not job or not resumable(seen):
        return None
    restarts = env.get(SLURM_RESTART_COUNT) or "0"
    try:
        done = run(["scontrol", "requeue", job])
    except (OSError, subprocess.SubprocessError) as exc:
        return f"could not requeue Slurm job {job}: {exc}; resubmit it to continue from its checkpoint"
    if done.returncode == 0:
        return f"requeued Slurm job {job} (restart {int(restarts) + 1}): it continues from its checkpoint"
    why = " ".join((done.stderr or done.stdout).split()) or f"exit code {done.returncode}"
    return f"Slurm job {job} not requeued by lt-run ({why}): Slurm requeued it already, or it cannot be"
