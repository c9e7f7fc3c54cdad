"""Finding legacy runs under any level of an ``experiments/`` tree and parsing their folder names.

A legacy run folder is ``experiments/<project>/<dataset>/<project>_<YYYYmmdd>_<HHMMSS>_<method>/``.
The project (and the method) may contain underscores, so the name is split around the timestamp.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..errors import SourceError

__all__ = ["LegacyRun", "LegacyName", "parse_legacy_name", "discover_runs", "RUN_MARKERS"]

# Anything the legacy scripts put into a run folder: a folder holding one of these is a run.
RUN_MARKERS = ("logs", "checkpoints", "models", "training_config.yaml")
MAX_DEPTH = 3  # experiments/ -> project -> dataset -> run
_LEGACY_NAME = re.compile(r"^(?P<project>.+)_(?P<date>\d{8})_(?P<time>\d{6})_(?P<method>.+)$")


@dataclass(frozen=True)
class LegacyName:
    project: str
    timestamp: str  # YYYYmmdd_HHMMSS, the new layout's format
    method: str

    @property
    def started(self) -> datetime:
        return datetime.strptime(self.timestamp, "%Y%m%d_%H%M%S")


def parse_legacy_name(name: str) -> LegacyName:
    """Split ``<project>_<YYYYmmdd>_<HHMMSS>_<method>``; raise ``ValueError`` saying what is wrong.

    The greedy project group makes the *last* timestamp-shaped part the timestamp.
    """
    match = _LEGACY_NAME.match(name)
    if not match:
        raise ValueError(f"run folder name {name!r} does not parse as <project>_<YYYYmmdd>_<HHMMSS>_<method>")
    stamp = f"{match['date']}_{match['time']}"
    try:
        datetime.strptime(stamp, "%Y%m%d_%H%M%S")
    except ValueError:
        raise ValueError(f"run folder name {name!r}: {stamp!r} is not a valid date and time") from None
    return LegacyName(match["project"], stamp, match["method"])


@dataclass
class LegacyRun:
    """One legacy run folder found under SOURCE; ``error`` says why it cannot be migrated (name, permission)."""

    path: Path
    dataset: str
    legacy: LegacyName | None
    error: str | None = None

    @property
    def relpath(self) -> str:
        return "/".join(self.path.parts[-3:])


def is_run_folder(path: Path) -> bool:
    return any((path / marker).exists() for marker in RUN_MARKERS)


def _make_run(path: Path) -> LegacyRun:
    try:
        legacy: LegacyName | None = parse_legacy_name(path.name)
        error = None
    except ValueError as exc:
        legacy, error = None, str(exc)
    return LegacyRun(path=path, dataset=path.parent.name, legacy=legacy, error=error)


def discover_runs(source: str | os.PathLike[str]) -> list[LegacyRun]:
    """Every legacy run under ``source`` (the tree, a project, a dataset or one run), sorted by path.

    Raises ``SourceError`` when ``source`` does not exist or is not a folder.
    """
    root = Path(source)
    if not root.exists():
        raise SourceError(f"SOURCE {str(source)!r} does not exist")
    if not root.is_dir():
        raise SourceError(f"SOURCE {str(source)!r} is a file, not a folder (give experiments/, a project, a dataset"
                          " or a run folder)")
    root = root.resolve()
    if is_run_folder(root):
        return [_make_run(root)]
    found: list[LegacyRun] = []

    def walk(folder: Path, depth: int) -> None:
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        except PermissionError:
            problem = f"{folder}: cannot list the folder: permission denied"
            found.append(LegacyRun(folder, folder.parent.name, None, problem))
            return
        for child in children:
            if is_run_folder(child):
                found.append(_make_run(child))
            elif depth < MAX_DEPTH:
                walk(child, depth + 1)

    walk(root, 1)
    return found
