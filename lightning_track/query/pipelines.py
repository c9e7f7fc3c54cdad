"""Which pipeline step made a run: read from the pipeline state files beside the runs, for ``lt show``.

``lt run --pipeline`` keeps ``<root>/<pipeline>.pipeline.json`` beside the run folders it makes, one
entry per step with its state, exp_id and run folder (:mod:`lightning_track.launch.pipeline_state`).
A run names its exp_id in ``summary.json`` (``<pipeline>_<step>``, a sweep's trial ``<pipeline>_<step>.<i>``);
the step is the entry with that exp_id, else the one whose run folder is this one (a sweep step's own
entry names its best trial's folder, so it is only taken when no trial entry is). Read-only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..folder.fileio import read_json
from ..folder.layout import RunLayout
from ..vocabulary import DONE
from .format import format_cell

__all__ = ["pipeline_step", "pipeline_lines"]


def _same(a: Any, b: Path) -> bool:
    try:
        return isinstance(a, str) and bool(a) and Path(a).resolve() == b.resolve()
    except OSError:
        return False


def pipeline_step(run_path: Path, exp_id: Any) -> dict[str, Any] | None:
    """``{pipeline, step, state, file, entry}`` of the step that made the run, or None."""
    found = None
    for path in RunLayout.pipeline_state_files(Path(run_path).parent):
        try:
            data = read_json(path)
        except (OSError, ValueError):
            continue
        steps = data.get("steps") if isinstance(data, dict) else None
        if not isinstance(steps, dict):
            continue
        for name, entry in steps.items():
            if not isinstance(entry, dict):
                continue
            hit = {"pipeline": data.get("pipeline") or RunLayout.pipeline_of_state_file(path), "step": name,
                   "state": entry.get("state"), "file": str(path), "entry": entry}
            if exp_id and entry.get("exp_id") == exp_id:
                return hit
            if found is None and "trials" not in entry and _same(entry.get("run_dir"), Path(run_path)):
                found = hit
    return found


def pipeline_lines(run_path: Path, summary: dict[str, Any]) -> list[str]:
    """``lt show``'s lines: the pipeline, the step and its state; a sweep trial's overrides."""
    lines = []
    step = pipeline_step(run_path, summary.get("exp_id"))
    if step is not None:
        entry = step["entry"]
        extra = [f"job {entry['slurm_job_id']}"] if entry.get("slurm_job_id") else []
        if entry.get("reason") and step["state"] != DONE:
            extra.append(str(entry["reason"]))
        lines.append(f"pipeline {step['pipeline']}, step {step['step']}: {step['state']}"
                     + (f" ({', '.join(extra)})" if extra else "") + f"  [{step['file']}]")
    sweep = summary.get("sweep")
    if isinstance(sweep, dict) and sweep.get("name"):
        overrides = sweep.get("overrides") if isinstance(sweep.get("overrides"), dict) else {}
        lines.append(f"sweep {sweep['name']}, trial {sweep.get('trial')}: "
                     + (" ".join(f"{k}={format_cell(v)}" for k, v in overrides.items()) or "no overrides"))
    return lines
