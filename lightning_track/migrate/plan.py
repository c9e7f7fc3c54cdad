"""Planning a migration: which legacy runs there are, the run name each gets, and what is already done.

Nothing is read beyond names, sizes and ``meta.json`` of existing targets, so ``--dry-run`` is quick
and a re-run can tell its own earlier output from a run someone else wrote under the same name.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SourceError
from ..folder.fileio import read_json
from ..folder.layout import RunLayout
from .checkpoints import NOT_CARRIED
from .discover import LegacyRun, discover_runs
from .rules import MigrateRules, load_rules

__all__ = ["TOOL", "MigrateOptions", "PlannedRun", "plan_migration", "migrated_from"]

TOOL = "lt-migrate"  # names the staging folder and is recorded in meta.json's migrated_from


@dataclass
class MigrateOptions:
    state_dict_prefix: str = "model."
    rules: MigrateRules = field(default_factory=load_rules)
    force: bool = False
    trust_pickle: bool = False
    tensorboard: bool = True


@dataclass
class PlannedRun:
    legacy: LegacyRun
    target: Path | None = None
    size: int = 0
    already_migrated: bool = False
    error: str | None = None
    would_skip: list[str] = field(default_factory=list)  # what --dry-run says will be left out

    @property
    def name(self) -> str | None:
        return self.target.name if self.target else None


def _tree_size(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


def migrated_from(target: Path) -> str | None:
    """The legacy source recorded in a run's ``meta.json`` (None when not a migrated run)."""
    try:
        meta = read_json(RunLayout(target).meta_json)
    except (OSError, ValueError):
        return None
    origin = meta.get("migrated_from") if isinstance(meta, dict) else None
    return origin.get("source") if isinstance(origin, dict) else None


def _check_paths(source: Path, out: Path) -> None:
    src, dst = source.resolve(), out.resolve()
    if dst == src or src in dst.parents:
        raise SourceError(f"--out {str(out)!r} is inside SOURCE {str(source)!r}; the legacy tree is never written,"
                          " choose an output folder outside it")
    if out.exists() and not out.is_dir():
        raise SourceError(f"--out {str(out)!r} exists and is not a folder")


def _would_skip(run: Path, dataset: str) -> list[str]:
    """Cheap look at what the run lacks (for --dry-run): no reading of file contents."""
    notes = []
    logs = run / "logs"
    if not (run / "training_config.yaml").is_file():
        notes.append("training_config.yaml missing: config.yaml from defaults only")
    for stem, suffix, what in (("batch_tracking", ".jsonl", "no batch tracking: metrics only from trainer_state"),
                               ("checkpoint_mapping", ".json", "no checkpoint mapping: rebuilt from batch tracking")):
        if not (logs / f"{stem}_{dataset}{suffix}").is_file() and not list(logs.glob(f"{stem}_*{suffix}")):
            notes.append(what)
    if not (run / "models").is_dir():
        notes.append("models/ missing: no final_model/")
    ckpts = run / "checkpoints"
    if not ckpts.is_dir() or not any(ckpts.iterdir()):
        notes.append("no checkpoints")
    else:
        carried_not = sum(1 for name in NOT_CARRIED for _ in ckpts.glob(f"*/{name}"))
        if carried_not:
            notes.append(f"{carried_not} RNG-state/training-args files not carried (no Lightning equivalent)")
    return notes


def plan_migration(
    source: str | os.PathLike[str], out: str | os.PathLike[str], *, only: str | None = None, force: bool = False
) -> list[PlannedRun]:
    """Find the runs, give each its target name, and mark those already migrated.

    A target that exists but came from another source (or from RunLogger) is never touched: the
    run gets the next free ``-2``, ``-3`` name, as ``RunLayout.create`` would give it.
    """
    source, out = Path(source), Path(out)
    runs = discover_runs(source)
    _check_paths(source, out)
    plans: list[PlannedRun] = []
    taken: set[str] = set()
    for run in runs:
        plan = PlannedRun(run)
        plans.append(plan)
        if run.error or run.legacy is None:
            plan.error = run.error or "run folder name does not parse"
            continue
        try:
            prefix_name = RunLayout.run_name(run.dataset, run.legacy.method, run.legacy.timestamp)
        except ValueError as exc:
            plan.error = f"{run.path}: {exc}"
            continue
        if only and not any(fnmatch.fnmatch(text, only) for text in (run.path.name, run.relpath, prefix_name)):
            plan.error = None
            plan.would_skip = ["not matched by --only"]
            plan.target = None
            continue
        counter = 1
        while True:
            name = RunLayout.run_name(run.dataset, run.legacy.method, run.legacy.timestamp, counter)
            target = out / name
            origin = migrated_from(target) if target.exists() else None
            if name not in taken and (not target.exists() or origin == str(run.path)):
                break
            counter += 1
        taken.add(name)
        plan.target = target
        plan.already_migrated = target.exists()
        plan.size = _tree_size(run.path)
        plan.would_skip = _would_skip(run.path, run.dataset)
    return plans
