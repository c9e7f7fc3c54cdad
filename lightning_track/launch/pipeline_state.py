"""The pipeline state file: ``<root>/<pipeline>.pipeline.json``, one entry per step.

Why a file beside the runs: a pipeline stopped by Ctrl+C, a killed driver or a reboot is re-run with
the same command, and only the steps that did not finish run again; the file is what says which
finished, with their run folders (which later steps' ``{step.run_dir}`` need) and why the others did
not. It is replaced atomically on every change (:func:`~lightning_track.folder.fileio.atomic_write_json`),
so a driver killed at any moment leaves the previous whole state. A step found ``running`` when the
file is loaded belonged to a driver that is gone: it runs again. Commands are stored with their secret values
redacted (:func:`~lightning_track.redaction.redact_command`): the file lives beside the runs and is mirrored.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import RunFolderError
from ..folder.fileio import HeldLock, atomic_write_json, exclusive_lock, read_json
from ..folder.layout import RunLayout
from ..redaction import redact_command
from ..vocabulary import BLOCKED, DONE, FAILED, INTERRUPTED, PENDING, RUNNING, SUBMITTED, iso_time
from .pipeline import Pipeline

__all__ = ["STEP_STATES", "state_path",
           "PipelineState", "format_status"]

# pending, blocked (an upstream step failed), submitted (handed to Slurm, its job id in slurm_job_id): vocabulary's
STEP_STATES = (PENDING, RUNNING, DONE, FAILED, BLOCKED, INTERRUPTED, SUBMITTED)


def state_path(pipeline: Pipeline) -> Path:
    """A file, not a folder, so run listings never take it for a run."""
    return RunLayout.pipeline_state_json(pipeline.root, pipeline.name)


class PipelineState:
    """The steps' states in memory and on disk; every change is saved at once (thread-safe).

    ``resume=True`` (a driver about to run): a step the file calls ``running`` was left by a driver that
    is gone (the driver holds :meth:`lock` while it runs), and a done step whose command changed runs again.
    """

    def __init__(self, pipeline: Pipeline, path: Path | None = None, *, resume: bool = True) -> None:
        self.pipeline = pipeline
        self.path = Path(path) if path is not None else state_path(pipeline)
        self._lock = threading.Lock()
        self.steps: dict[str, dict[str, Any]] = {name: {"state": PENDING} for name in pipeline.order}
        if self.path.exists():
            try:
                data = read_json(self.path)
            except (OSError, ValueError) as exc:
                raise RunFolderError(f"{self.path}: unreadable pipeline state ({exc}); move it aside to start over"
                                     ) from None
            old = data.get("steps") if isinstance(data, dict) else None
            if not isinstance(old, (dict, type(None))):
                raise RunFolderError(f"{self.path}: 'steps' is {old!r:.40}, expected an object of steps; "
                                     "move the file aside to start over")
            for name, entry in (old or {}).items():
                if name in self.steps and isinstance(entry, dict) and entry.get("state") in STEP_STATES:
                    self.steps[name] = dict(entry)
        if not resume:  # a reader (--status): the file as it is, a live driver's running steps included
            return
        for name, entry in self.steps.items():
            if entry["state"] == RUNNING and not entry.get("slurm_job_id"):  # its driver is gone (not Slurm's)
                entry.update(state=INTERRUPTED, reason="the driver stopped while it ran")
            cmd = redact_command(pipeline.steps[name].cmd)  # as stored: a changed secret alone is no new command
            if entry["state"] == DONE and entry.get("cmd") not in (None, cmd):
                entry.update(state=PENDING, reason="its command changed")

    def lock(self) -> HeldLock:
        """Hold ``<state>.lock`` while a driver runs; a second driver of the same pipeline is refused.
        The lock goes with the process, also when it is killed."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return exclusive_lock(self.path.with_name(self.path.name + ".lock"), name=self.path,
                              what=f"pipeline {self.pipeline.name!r} is already running",
                              fix="wait for it, or stop it with Ctrl+C")

    def get(self, name: str) -> dict[str, Any]:
        with self._lock:
            return dict(self.steps[name])

    def state(self, name: str) -> str:
        return str(self.steps[name]["state"])

    def update(self, name: str, **fields: Any) -> None:
        """Set fields of one step (``None`` removes a field) and save."""
        with self._lock:
            entry = self.steps[name]
            for key, value in fields.items():
                if value is None:
                    entry.pop(key, None)
                else:
                    entry[key] = value
            self._save()

    def reset(self, names: Iterable[str], reason: str) -> None:
        """Make steps pending again (``--from``); their old run folders are forgotten."""
        with self._lock:
            for name in names:
                self.steps[name] = {"state": PENDING, "reason": reason}
            self._save()

    def prepare_run(self) -> list[str]:
        """Before a run: steps not done (failed, blocked, interrupted) become pending; returns the skipped."""
        with self._lock:
            skipped = []
            for name, entry in self.steps.items():
                if entry["state"] == DONE:
                    skipped.append(name)
                elif entry["state"] != PENDING:
                    entry["previous"] = {k: v for k, v in entry.items() if k != "previous"}
                    entry["state"] = PENDING
            self._save()
            return skipped

    def values(self) -> dict[str, dict[str, str | None]]:
        """``{step: {"run_dir": ..., "exp_id": ...}}`` for commands' references."""
        with self._lock:
            return {name: {"run_dir": e.get("run_dir"), "exp_id": self.pipeline.exp_id(name),
                           "no_run_dir": e.get("no_run_dir")} for name, e in self.steps.items()}

    def save(self) -> None:
        with self._lock:
            self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path, {"pipeline": self.pipeline.name, "updated": iso_time(),
                                      "time": time.time(), "steps": self.steps})


def format_status(state: PipelineState) -> list[str]:
    """One line per step, in order: name, state, exit code, run folder or why not."""
    width = max(len(n) for n in state.pipeline.order)
    lines = []
    for name in state.pipeline.order:
        entry = state.get(name)
        parts = [f"{name:<{width}}", f"{entry['state']:<11}"]
        if entry.get("exit_code") is not None:
            parts.append(f"exit {entry['exit_code']}")
        if entry.get("attempts", 0) > 1:
            parts.append(f"{entry['attempts']} attempts")
        if entry.get("duration_s") is not None:
            parts.append(f"{entry['duration_s']:.1f} s")
        if entry.get("reason") and entry["state"] != DONE:
            parts.append(str(entry["reason"]))
        if entry.get("slurm_job_id"):
            slurm = entry.get("slurm") or {}
            parts.append(f"job {entry['slurm_job_id']}" + (f" ({slurm['state']})" if slurm.get("state") else ""))
            if slurm.get("restarts"):
                parts.append(f"requeued {slurm['restarts']}x")
        if entry.get("run_dir"):
            parts.append(str(entry["run_dir"]))
        lines.append("  ".join(parts).rstrip())
    return lines
