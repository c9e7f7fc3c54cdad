"""``inputs.json``: size, modification time and SHA-256 of each file or folder a run's config names.

Why: a run is only reproducible with the same data; the hash tells a changed data file that kept its
name. Computed by :class:`~lightning_track.run.capture.CodeCapture` on its thread, within caps on bytes,
files and time (a slow network mount or a huge folder is recorded as capped, never waited for).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import one_line
from ..folder.fileio import file_sha256
from ..folder.records import flatten

__all__ = ["InputCaps", "capture_inputs"]


@dataclass(frozen=True)
class InputCaps:
    """What hashing the inputs may cost; an input past a cap keeps its size and time, and says which cap."""

    max_bytes: int = 2 * 1024**3  # bytes hashed in all
    max_files: int = 10_000  # files hashed in one folder
    max_s: float = 60.0  # seconds spent hashing in all


def _input_paths(config: Mapping[str, Any], cwd: Path, skip: Sequence[Path]) -> dict[str, tuple[str, Path]]:
    """``{config key: (value, path)}`` for each config value naming an existing file or folder (not the
    working directory or a folder above it, not under ``skip``: the runs root)."""
    found: dict[str, tuple[str, Path]] = {}
    for key, value in flatten(dict(config)).items():
        if not isinstance(value, str) or not value.strip() or "\n" in value or len(value) > 4096:
            continue
        path = Path(value).expanduser()
        path = path if path.is_absolute() else cwd / path
        try:
            if not path.exists():
                continue
            resolved = path.resolve()
        except OSError:
            continue
        if resolved == cwd or resolved in cwd.parents or any(resolved.is_relative_to(s) or s.is_relative_to(resolved)
                                                             for s in skip):
            continue
        found[key] = (value, path)
    return found


class _Budget:
    def __init__(self, caps: InputCaps, stop: threading.Event) -> None:
        self.bytes, self.deadline, self.stop = caps.max_bytes, time.monotonic() + caps.max_s, stop
        self.caps = caps

    def why_not(self, size: int) -> str | None:
        if self.stop.is_set():
            return "not hashed: the run ended first"
        if time.monotonic() > self.deadline:
            return f"not hashed: the {self.caps.max_s:g} s for hashing inputs were spent"
        if size > self.bytes:
            return f"not hashed: {size} bytes, over the {self.caps.max_bytes} bytes hashed in all"
        return None


def _hash_file(path: Path, budget: _Budget) -> tuple[str | None, str | None]:
    """(sha256 hex, None) or (None, why not) within the budget."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        return None, f"not hashed: {one_line(exc)}"
    why = budget.why_not(size)
    if why:
        return None, why
    try:
        digest = file_sha256(path)
    except OSError as exc:
        return None, f"not hashed: {one_line(exc)}"
    budget.bytes -= size
    return digest, None


def _describe_input(value: str, path: Path, budget: _Budget) -> dict[str, Any]:
    try:
        stat = path.stat()
    except OSError as exc:
        return {"path": value, "problem": f"cannot be read: {one_line(exc)}"}
    entry: dict[str, Any] = {"path": value, "kind": "folder" if path.is_dir() else "file",
                             "mtime": datetime.fromtimestamp(stat.st_mtime, timezone.utc).isoformat()}
    if not path.is_dir():
        entry["size"] = stat.st_size
        digest, why = _hash_file(path, budget)
        entry["sha256"] = digest
        if why:
            entry["problem"] = why
        return entry
    # a folder: the hash over its files' (relative path, hash), in path order
    files: list[Path] = []
    for root, dirs, names in os.walk(path):
        dirs.sort()
        files += [Path(root) / n for n in sorted(names)]
        if len(files) > budget.caps.max_files:
            break
    total = hashlib.sha256()
    size = 0
    for i, file in enumerate(files):
        if i >= budget.caps.max_files:
            entry.update(sha256=None, problem=f"not hashed: over {budget.caps.max_files} files")
            return entry
        digest, why = _hash_file(file, budget)
        if why:
            entry.update(sha256=None, problem=f"{file.relative_to(path).as_posix()}: {why}")
            return entry
        size += file.stat().st_size
        total.update(f"{file.relative_to(path).as_posix()}\0{digest}\n".encode())
    entry.update(size=size, files=len(files), sha256=total.hexdigest())
    return entry


def capture_inputs(config: Mapping[str, Any], *, cwd: str | Path, caps: InputCaps = InputCaps(),
                   exclude: Sequence[Path] = (), stop: threading.Event | None = None) -> dict[str, Any]:
    """``inputs.json``: for each config value naming an existing file or folder, its size, modification
    time and SHA-256 (a folder's: over its files' paths and hashes), within the caps; what a cap left out
    says so in its entry's ``problem``."""
    budget = _Budget(caps, stop or threading.Event())
    cwd = Path(cwd).resolve()
    paths = _input_paths(config, cwd, [p.resolve() for p in exclude])
    return {"cwd": str(cwd), "inputs": {key: _describe_input(value, path, budget)
                                        for key, (value, path) in paths.items()}}
