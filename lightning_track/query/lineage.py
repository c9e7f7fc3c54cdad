"""A run's lineage as people read it, one reading for ``lt show`` and ``lt report``.

Why one reading: "where did this come from" has four answers spread over three files (``checkpoints.json``:
the checkpoints and the final model's source; ``summary.json``: where each attempt resumed; ``meta.json``:
which checkpoints of another run this one evaluated), and both views must say the same. An evaluated
checkpoint is checked against its source run's index as it is now, so a checkpoint replaced since shows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..folder.checkpoint_index import EVALUATED, HASH, HASHED, best_checkpoint, checkpoint_entries, read_index
from ..folder.layout import RunLayout
from .runs import RunInfo

__all__ = ["Lineage", "read_lineage", "short_hash", "evaluated_line"]


@dataclass
class Lineage:
    checkpoints: list[dict[str, Any]] = field(default_factory=list)  # on disk: file, step, attempt, sha256, best
    resumes: list[dict[str, Any]] = field(default_factory=list)  # attempt, file, step, sha256
    models: list[dict[str, Any]] = field(default_factory=list)  # file, step, from_checkpoint
    evaluated: list[dict[str, Any]] = field(default_factory=list)  # template, run, file, step, sha256, check

    def __bool__(self) -> bool:
        return bool(self.checkpoints or self.resumes or self.models or self.evaluated)


def short_hash(entry: Mapping[str, Any] | None) -> str:
    digest = entry.get(HASH) if entry else None
    return digest[:12] if isinstance(digest, str) else "-"


def _check(record: Mapping[str, Any]) -> str:
    """Whether the evaluated checkpoint is still the one its source run's index lists under that name."""
    run_dir = record.get("run_dir")
    if not isinstance(run_dir, str) or not Path(run_dir).is_dir():
        return "source run not found here"
    listed = [e for e in read_index(RunLayout(Path(run_dir))) if e.get("file") == record.get("file")]
    if not listed:
        return "not in its run's index"
    return "matches its run's index" if listed[-1].get(HASH) == record.get(HASH) else \
        "differs from its run's index now"


def read_lineage(run: RunInfo, entries: Sequence[Mapping[str, Any]] | None = None) -> Lineage:
    """The run's lineage; ``entries``: its ``checkpoints.json`` when the caller has read it already."""
    entries = read_index(run.layout) if entries is None else entries
    on_disk = checkpoint_entries(entries, lambda name: (run.path / name).is_file())
    best = best_checkpoint(on_disk)
    out = Lineage()
    for entry in on_disk:
        monitor = entry.get("monitor") if isinstance(entry.get("monitor"), Mapping) else {}
        out.checkpoints.append({k: entry.get(k) for k in ("file", "step", "attempt", "size", HASH, HASHED)}
                               | {"best": monitor.get("metric") if entry is best else None})
    for attempt in run.summary.get("attempts") or []:
        resumed = attempt.get("resumed_from") if isinstance(attempt, dict) else None
        if isinstance(resumed, dict):
            out.resumes.append({"attempt": attempt.get("attempt"), **resumed})
    out.models = [dict(e) for e in entries if e.get("kind") == "model"]
    evaluated = run.meta.get(EVALUATED)
    for record in evaluated if isinstance(evaluated, list) else []:
        if isinstance(record, dict):
            out.evaluated.append({**record, "check": record.get("problem") or _check(record)})
    return out


def evaluated_line(record: Mapping[str, Any]) -> str:
    """``{train.best_ckpt}: RUN/FILE  step N  sha256 abc…  (matches its run's index)``."""
    if record.get("problem"):
        return str(record["problem"])
    return (f"{record.get('template') or 'checkpoint'}: {record.get('run')}/{record.get('file')}  step "
            f"{record.get('step')}  {HASH} {short_hash(record)}  ({record.get('check')})")
