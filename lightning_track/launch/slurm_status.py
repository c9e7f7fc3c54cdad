"""A Slurm pipeline's steps as Slurm sees them: ``scontrol``/``sacct`` for the submitted job ids, into the state file.

Why: once ``lt run --pipeline --slurm`` has submitted the jobs, nothing of ours watches them; the state file
says ``submitted`` until someone asks Slurm. :func:`refresh_from_slurm` asks it (``lt run --pipeline FILE
--status``, and ``--slurm`` before it decides what to submit again) and records each step's job as our step
state (:func:`~lightning_track.vocabulary.slurm_step_state`: ``PENDING`` -> submitted, ``RUNNING`` -> running,
``COMPLETED`` -> done, ``FAILED``/``TIMEOUT``/``OUT_OF_MEMORY`` -> failed, ``CANCELLED``/``PREEMPTED`` ->
interrupted, or blocked when a step it waits for failed: ``--kill-on-invalid-dep`` cancelled it), with
Slurm's word, exit code, restart count (each requeue) and a short history of what was seen, and the step's
run folder from its run note. A job that failed before its command started, on a checkpoint it was to be given,
left its one line in the step's ``.failed`` signal with its job id: that line is the step's reason.

``scontrol show job`` knows running jobs and ended ones for ``MinJobAge`` seconds (300 by default); older
ones come from ``sacct`` where the cluster keeps accounting. A job neither knows keeps its last state. A job
array's id (a sweep) reads as its tasks together: running while any runs, failed when any failed, done
when all are.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..folder.signals import read_run_note, read_signal
from ..vocabulary import BLOCKED, DONE, FAILED, INTERRUPTED, RUNNING, SUBMITTED, iso_time, slurm_step_state
from .pipeline_state import PipelineState
from .slurm_job import Run, run_slurm

__all__ = ["slurm_jobs", "refresh_from_slurm"]

_ORDER = (RUNNING, SUBMITTED, FAILED, INTERRUPTED, DONE)  # an array: the first its tasks show
_FIELD = re.compile(r"(\w+)=(\S*)")
_HISTORY = 20  # entries of slurm.history kept per step

def _scontrol(job_ids: list[str], run: Run) -> list[dict[str, str]]:
    """One ``scontrol show job -o`` per job (an array's id once, for all its tasks), not the whole cluster's list."""
    jobs = []
    for query in dict.fromkeys(j.partition("_")[0] for j in job_ids):
        done = run(["scontrol", "show", "job", "-o", query])
        if done.returncode != 0:  # "Invalid job id specified": the controller forgot it (MinJobAge)
            continue
        for line in done.stdout.splitlines():
            fields: dict[str, str] = {}
            for key, value in _FIELD.findall(line):
                fields.setdefault(key, value)
            if "JobId" in fields:
                jobs.append(fields)
    return jobs


def _sacct(ids: list[str], run: Run) -> list[dict[str, str]]:
    if not ids or shutil.which("sacct") is None:
        return []
    done = run(["sacct", "-n", "-P", "-X", "-j", ",".join(ids), "-o", "JobID,State,ExitCode,NodeList"])
    if done.returncode != 0:  # no accounting on this cluster
        return []
    jobs = []
    for line in done.stdout.splitlines():
        parts = line.split("|")
        if len(parts) == 4:
            job, _, task = parts[0].partition("_")
            jobs.append({"JobId": parts[0], "ArrayJobId": job if task else "", "ArrayTaskId": task,
                         "JobState": parts[1].split(" ")[0], "ExitCode": parts[2], "NodeList": parts[3]})
    return jobs


def _matches(record: Mapping[str, str], job_id: str) -> bool:
    array, _, task = job_id.partition("_")
    if task:
        return record.get("ArrayJobId") == array and record.get("ArrayTaskId") == task
    return record.get("JobId") == job_id or (record.get("ArrayJobId") == job_id and bool(record.get("ArrayTaskId")))


def slurm_jobs(job_ids: list[str], run: Run = run_slurm) -> dict[str, list[dict[str, str]]]:
    """``{job id: [Slurm's records of it]}`` (several for a job array's id); ids Slurm no longer knows are absent."""
    if shutil.which("scontrol") is None:
        return {}
    records = _scontrol(job_ids, run)
    found = {j: [r for r in records if _matches(r, j)] for j in job_ids}
    missing = [j for j, rs in found.items() if not rs]
    if missing:
        older = _sacct(missing, run)
        for j in missing:
            found[j] = [r for r in older if r.get("JobId") == j or _matches(r, j)]
    return {j: rs for j, rs in found.items() if rs}


def _view(records: list[dict[str, str]]) -> tuple[str, dict[str, Any]] | None:
    """Our state for a job's records, and what to keep of Slurm's."""
    states = [(slurm_step_state(r.get("JobState", "")), r) for r in records]
    states = [(s, r) for s, r in states if s is not None]
    if not states:
        return None
    ours = min((s for s, _ in states), key=_ORDER.index)
    record = next(r for s, r in states if s == ours)
    view: dict[str, Any] = {"state": record.get("JobState", "")}
    restarts = sum(int(r.get("Restarts", "0") or 0) for r in records)
    if restarts:
        view["restarts"] = restarts
    code = record.get("ExitCode", "")
    if code and ours in (FAILED, INTERRUPTED):
        view["exit_code"] = code
    if ours == SUBMITTED and record.get("Reason") not in (None, "", "None"):
        view["reason"] = record["Reason"]
    if record.get("NodeList") not in (None, "", "(null)", "None"):
        view["nodes"] = record["NodeList"]
    if len(records) > 1:
        view["tasks"] = {s: sum(1 for t, _ in states if t == s) for s in _ORDER if any(t == s for t, _ in states)}
    return ours, view


def _job_failure(signals: Path, exp_id: str, job_id: str) -> str | None:
    """The line the job itself wrote before its command started (a checkpoint it was to be given is not there:
    :func:`.checkpoint_refs.job_checkpoints`), when its ``.failed`` signal names this job."""
    failed = read_signal(signals, exp_id, FAILED) or {}
    return str(failed["reason"]) if failed.get("slurm_job_id") == job_id and failed.get("reason") else None


def refresh_from_slurm(state: PipelineState, run: Run = run_slurm) -> list[str]:
    """Update every step with a Slurm job id that is not done from what Slurm says of it; the steps changed."""
    pipeline = state.pipeline
    ids = {n: str(state.get(n)["slurm_job_id"]) for n in pipeline.order
           if state.get(n).get("slurm_job_id") and state.state(n) != DONE}
    jobs = slurm_jobs(sorted(set(ids.values())), run) if ids else {}
    changed = []
    signals = Path(pipeline.root).resolve() / "signals"
    for name in pipeline.order:  # in dependency order, so an upstream step is refreshed first
        if name not in ids or ids[name] not in jobs:
            continue
        seen = _view(jobs[ids[name]])
        if seen is None:
            continue
        ours, view = seen
        entry = state.get(name)
        old = entry.get("slurm") or {}
        history = list(old.get("history") or [])
        if not history or history[-1][1:] != [view["state"], view.get("restarts", 0)]:
            history = (history + [[iso_time(), view["state"], view.get("restarts", 0)]])[-_HISTORY:]
        fields: dict[str, Any] = {"state": ours, "slurm": {**view, "history": history}}
        failed_up = [u for u in pipeline.steps[name].after if state.state(u) in (FAILED, BLOCKED)]
        if ours == INTERRUPTED and failed_up:
            fields.update(state=BLOCKED, reason=f"{failed_up[0]} failed (Slurm cancelled the job: afterok)")
        elif ours in (FAILED, INTERRUPTED):
            fields["reason"] = _job_failure(signals, pipeline.exp_id(name), ids[name]) or (
                f"Slurm job {view['state']}" + (f", exit {view['exit_code']}" if "exit_code" in view else ""))
        elif ours == DONE:
            fields["reason"] = None
        note = read_run_note(signals, pipeline.exp_id(name))
        if note is not None and not entry.get("run_dir"):
            fields["run_dir"] = str(note)
        if any(entry.get(k) != v for k, v in fields.items()):
            state.update(name, **fields)
            changed.append(name)
    return changed
