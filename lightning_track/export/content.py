"""What of a run folder is exported, whatever the tracker: the params (the flattened, redacted config),
the checkpoint lineage as tags, and the files sent as artifacts. Pure but for reading the folder."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..folder.checkpoint_index import HASH, read_index
from ..folder.fileio import is_temp_name
from ..folder.layout import RunLayout
from ..query.runs import RunInfo
from ..redaction import redact

__all__ = ["param_value", "run_params", "lineage_tags", "artifact_files", "ARTIFACT_FILES", "ARTIFACT_DIRS"]

ARTIFACT_FILES = (RunLayout.CONFIG, RunLayout.SUMMARY, RunLayout.META, RunLayout.LOGS, RunLayout.REPORT,
                  RunLayout.CHECKPOINTS_INDEX)
ARTIFACT_DIRS = (RunLayout.PLOTS, RunLayout.MEDIA)


def param_value(value: Any) -> str:
    """A config value as MLflow's ``log_params`` would write it; lists and mappings as JSON."""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def run_params(run: RunInfo) -> dict[str, str]:
    """The flattened config, secrets redacted (again: migrated or hand-made files may hold them)."""
    return {key: param_value(value) for key, value in redact(dict(run.config)).items()}


def lineage_tags(run: RunInfo) -> dict[str, str]:
    """Where the run's weights came from, as tags a tracker can search (``checkpoints.json`` itself goes as
    an artifact): how many checkpoints were indexed; the checkpoint ``final_model/`` was traced to and its
    SHA-256, and the model's weight files' hashes; per resumed attempt, the checkpoint it resumed from."""
    tags: dict[str, str] = {}
    entries = read_index(run.layout)
    saved = [e for e in entries if e.get("kind") != "model"]
    if saved:
        tags["lineage.checkpoints"] = str(len(saved))
    models = [e for e in entries if e.get("kind") == "model"]
    if models:
        model = models[-1]
        tags["lineage.final_model.step"] = str(model.get("step"))
        if isinstance(model.get("files"), dict) and model["files"]:
            tags["lineage.final_model.files"] = json.dumps(model["files"], sort_keys=True)
        source = model.get("from_checkpoint")
        if isinstance(source, dict) and source.get("file"):
            tags["lineage.final_model.checkpoint"] = str(source["file"])
            if source.get(HASH):
                tags[f"lineage.final_model.checkpoint_{HASH}"] = str(source[HASH])
    attempts = run.summary.get("attempts") if isinstance(run.summary.get("attempts"), list) else []
    for i, attempt in enumerate(attempts):
        resumed = attempt.get("resumed_from") if isinstance(attempt, dict) else None
        if isinstance(resumed, dict) and resumed.get("file"):
            head = f"lineage.attempt_{attempt.get('attempt', i + 1)}.resumed_from"
            tags[head] = str(resumed["file"])
            if resumed.get("step") is not None:
                tags[f"{head}_step"] = str(resumed["step"])
            if resumed.get(HASH):
                tags[f"{head}_{HASH}"] = str(resumed[HASH])
    return tags


def artifact_files(run_dir: Path, *, with_model: bool = False, with_checkpoints: bool = False
                   ) -> list[tuple[str, Path]]:
    """``(path in the run folder, file)`` of what is sent as artifacts: regular files only (no links,
    no temp files), the final model and checkpoints only when asked."""
    layout = RunLayout(run_dir)
    found = [(name, run_dir / name) for name in ARTIFACT_FILES]
    folders = list(ARTIFACT_DIRS) + ([RunLayout.FINAL_MODEL] if with_model else [])
    for folder in folders:
        base = run_dir / folder
        if base.is_dir() and not base.is_symlink():
            for dirpath, dirnames, filenames in os.walk(base):
                dirnames[:] = sorted(d for d in dirnames if not Path(dirpath, d).is_symlink())
                files = [Path(dirpath, f) for f in sorted(filenames)]
                found += [(path.relative_to(run_dir).as_posix(), path) for path in files]
    if with_checkpoints:
        found += [(f"{RunLayout.CHECKPOINTS}/{p.name}", p) for p in sorted(layout.checkpoints_dir.glob("*.ckpt"))]
    return [(rel, path) for rel, path in found
            if not is_temp_name(path.name) and not path.is_symlink() and path.is_file()]
