"""Where runs came from, side by side: the code (commit, patch, untracked files), the environment
(Python, torch, CUDA, GPUs, package versions) and the inputs (hashes of the files the config names),
from what :mod:`lightning_track.run.capture` recorded. Pure over the files; ``lt compare`` shows a
section only where the runs differ, and in it only the rows that differ.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from ..folder.fileio import read_json
from ..folder.layout import RunLayout

__all__ = ["Provenance", "read_provenance", "provenance_sections", "provenance_lines", "changed_inputs"]

Rows = list[tuple[str, list[str]]]


class Provenance:
    """One run's code, environment and inputs records (empty where the run has none)."""

    def __init__(self, run_dir: str | Path) -> None:
        layout = RunLayout(run_dir)
        self.meta = _read(layout.meta_json)
        self.environment = _read(layout.environment_json())
        inputs = _read(layout.run_dir / RunLayout.INPUTS)
        self.inputs = inputs.get("inputs") or {}
        self.inputs_cwd = inputs.get("cwd")
        code = self.meta.get("code")
        self.code: dict[str, Any] = code if isinstance(code, dict) else {}
        git = self.meta.get("git")
        self.git: dict[str, Any] = git if isinstance(git, dict) else {}
        patch = layout.code_dir() / RunLayout.CODE_PATCH
        self.patch = _digest([patch]) if patch.is_file() else None
        untracked = (layout.code_dir() / RunLayout.CODE_UNTRACKED)
        files = sorted(p for p in untracked.rglob("*") if p.is_file()) if untracked.is_dir() else []
        self.untracked = _digest(files, untracked) if files else None

    @property
    def captured(self) -> bool:
        return bool(self.code)


def _read(path: Path) -> dict[str, Any]:
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _digest(files: Sequence[Path], base: Path | None = None) -> str:
    total = hashlib.sha256()
    for path in files:
        name = path.relative_to(base).as_posix() if base else ""
        total.update(f"{name}\0".encode() + hashlib.sha256(path.read_bytes()).digest())
    return total.hexdigest()[:12]


def read_provenance(run_dir: str | Path) -> Provenance:
    return Provenance(run_dir)


def _rows(named: Mapping[str, Sequence[Any]]) -> Rows:
    """The rows whose values are not all equal, as text."""
    return [(name, ["-" if v is None or v == "" else str(v) for v in values]) for name, values in named.items()
            if any(v != values[0] for v in values[1:])]


def _code_rows(runs: Sequence[Provenance]) -> Rows:
    def files(p: Provenance) -> str | None:
        patch = p.code.get("patch") if isinstance(p.code.get("patch"), dict) else {}
        return ", ".join(patch.get("files") or []) or None

    def untracked(p: Provenance) -> str | None:
        info = p.code.get("untracked") if isinstance(p.code.get("untracked"), dict) else {}
        return f"{info.get('count')} files, {p.untracked}" if info and p.untracked else None

    return _rows({
        "commit": [str(p.git.get("commit") or "")[:12] or p.meta.get("no_repository") for p in runs],
        "patch": [p.patch for p in runs],
        "files changed": [files(p) for p in runs],
        "untracked": [untracked(p) for p in runs],
    })


def _environment_rows(runs: Sequence[Provenance]) -> Rows:
    env = [p.environment for p in runs]
    named: dict[str, list[Any]] = {
        "python": [(e.get("python") or {}).get("version") for e in env],
        **{key: [e.get(key) for e in env] for key in ("torch", "cuda", "cudnn", "nccl", "driver")},
        "GPUs": [", ".join(str(g.get("name")) for g in e.get("gpus") or []) or None for e in env],
    }
    packages = [e.get("packages") or {} for e in env]
    for name in sorted({n for p in packages for n in p}, key=str.lower):
        if name != "torch":
            named[f"package {name}"] = [p.get(name) for p in packages]
    return _rows(named)


def _input_rows(runs: Sequence[Provenance]) -> Rows:
    def cell(entry: Any) -> str | None:
        if not isinstance(entry, dict):
            return None
        digest = entry.get("sha256")
        return f"{entry.get('path')} {digest[:12]}" if digest else f"{entry.get('path')} ({entry.get('problem')})"

    keys = list(dict.fromkeys(k for p in runs for k in p.inputs))
    return _rows({key: [cell(p.inputs.get(key)) for p in runs] for key in keys})


def provenance_sections(runs: Sequence[Provenance]) -> list[tuple[str, Rows]]:
    """``[(section, rows)]`` for code, environment and inputs, each only when some row differs. Runs that
    captured nothing (recorded before capture existed) are left out of the comparison."""
    have = [p for p in runs if p.captured]
    if len(have) < 2 or len(have) < len(runs):
        return []
    sections = [("code", _code_rows(runs)), ("environment", _environment_rows(runs)), ("inputs", _input_rows(runs))]
    return [(name, rows) for name, rows in sections if rows]


def changed_inputs(p: Provenance) -> list[str]:
    """The recorded input files (``inputs.json``) that are gone or differ now in size or modification
    time: cheap (no hashing), for a summary that must not read a dataset."""
    cwd = Path(str(p.inputs_cwd)) if p.inputs_cwd else None
    changed = []
    for key, entry in p.inputs.items():
        if not isinstance(entry, dict) or entry.get("kind") != "file":
            continue
        path = Path(str(entry.get("path")))
        path = path if path.is_absolute() or cwd is None else cwd / path
        try:
            stat = path.stat()
        except OSError:
            changed.append(f"{key} ({entry.get('path')}: gone)")
            continue
        then = entry.get("mtime")
        if stat.st_size != entry.get("size") or (then and abs(datetime.fromisoformat(then).timestamp()
                                                              - stat.st_mtime) > 1e-3):
            changed.append(f"{key} ({entry.get('path')}: changed since the run)")
    return changed


def provenance_lines(p: Provenance) -> list[str]:
    """``lt show --prompt``'s lines on the code (commit, a dirty tree and what it changed) and inputs."""
    if not p.captured:
        return []
    if not p.git:
        return [f"Code: {p.meta.get('no_repository') or 'no commit recorded'}"]
    text = f"Code: commit {str(p.git.get('commit'))[:12]} ({p.git.get('branch')})"
    patch = p.code.get("patch") if isinstance(p.code.get("patch"), dict) else None
    if p.git.get("dirty"):
        files = ", ".join(patch.get("files") or []) if patch else ""
        text += f", dirty tree: uncommitted changes{' to ' + files if files else ''} (code/diff.patch)"
    untracked = p.code.get("untracked") if isinstance(p.code.get("untracked"), dict) else None
    if untracked:
        text += f", {untracked.get('count')} untracked file(s)"
    lines = [text]
    changed = changed_inputs(p)
    if changed:
        lines.append("Inputs changed since the run: " + "; ".join(changed))
    return lines
