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

__all__ = ["resumable", "requeue_if_resumable", "Run", "run_slurm", "refusal"]

Run = Callable[[list[str]], subprocess.CompletedProcess[str]]  # how Slurm's commands are called (tests pass their own)


def run_slurm(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """One Slurm command (``sbatch``, ``scontrol``, ``sacct``), its output captured as text."""
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def refusal(done: subprocess.CompletedProcess[str]) -> str:
    """Why a Slurm command failed, in one line: what it printed, else its exit code."""
    return " ".join((done.stderr or done.stdout).split()) or f"exit code {done.returncode}"


def resumable(seen: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether the signals the command left say it stopped with a checkpoint to continue from."""
    failed = seen.get(FAILED) or {}
    return failed.get("resumable") is True


def requeue_if_resumable(seen: Mapping[str, Mapping[str, Any]], environ: Mapping[str, str] | None = None,
                         run: Run = run_slurm) -> str | None:
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
    return f"Slurm job {job} not requeued by lt-run ({refusal(done)}): Slurm requeued it already, or it cannot be"
