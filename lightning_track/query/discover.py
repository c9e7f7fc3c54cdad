"""Where the runs are: a run folder, a ``runs/`` folder, or a mirror of several servers.

Runs are looked for up to three folders down; the folders between the root and a run are its
``source`` (``gpu1`` in ``mirror/gpu1/<run>``). Hidden folders, temp names, ``signals/`` and
``swanlab_workspace/`` are never entered. A folder named like a run with none of a run's files is a
one-line problem; any other folder without runs is passed over quietly.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import RunFolderError, RunNotFound
from ..folder.fileio import is_temp_name
from ..folder.layout import RunLayout, parse_run_name

__all__ = ["find_run_dirs", "run_names", "run_folder_of", "resolve_run", "require_run_folder", "list_names",
           "folder_identity", "skipped_name", "RUN_FILES", "MAX_DEPTH"]

_SKIP = {RunLayout.SIGNALS, RunLayout.SWANLAB_WORKSPACE, "__pycache__"}
RUN_FILES = {RunLayout.SUMMARY, RunLayout.METRICS_JSONL, RunLayout.META}
MAX_DEPTH = 3


def _is_run(path: Path, names: set[str]) -> bool:
    return RunLayout.SUMMARY in names and RunLayout.METRICS_JSONL in names or parse_run_name(path.name) is not None


def require_run_folder(path: Path) -> Path:
    """``path`` when it is a run folder (it holds summary.json, meta.json or metrics.jsonl); else one line.

    The rule every command that reads or rewrites one run applies (lt show, lt-run --post-process)."""
    names = list_names(path)
    if names is None:
        raise RunNotFound(f"{path}: not a run folder (" + ("not a folder)" if path.exists() else "no such folder)"))
    if not names & RUN_FILES:
        raise RunFolderError(f"{path}: not a run folder (no summary.json, meta.json or metrics.jsonl)")
    return path


def folder_identity(path: Path, stat: os.stat_result | None = None) -> tuple[int, int] | Path:
    """The same folder reached by two roots (or a link) is one run."""
    try:
        stat = os.stat(path) if stat is None else stat
    except OSError:
        return path.resolve()
    return (stat.st_dev, stat.st_ino)


def list_names(path: Path) -> set[str] | None:
    try:
        return set(os.listdir(path))
    except OSError:
        return None


def skipped_name(name: str) -> bool:
    """A name a look never takes for a run or a source folder (hidden, a tool's own, a temporary file)."""
    return name.startswith(".") or name in _SKIP or is_temp_name(name)


def run_names(path: Path, lister: Callable[[Path], set[str] | None] = list_names) -> set[str] | None:
    """The names in ``path`` when a look from its parent folder takes it for a run folder, else None."""
    if skipped_name(path.name):
        return None
    names = lister(path)
    return names if names is not None and _is_run(path, names) and names & RUN_FILES else None


def run_folder_of(root: Path, rel: str, lister: Callable[[Path], set[str] | None] = list_names) -> Path | None:
    """The run folder a look from ``root`` finds the file ``rel`` (a path below ``root``) in, or None."""
    folder = root
    for name in rel.split("/")[:-1][:MAX_DEPTH]:
        if skipped_name(name):
            return None
        folder = folder / name
        names = lister(folder)
        if names is None:
            return None
        if _is_run(folder, names):
            return folder if names & RUN_FILES else None
    return None


def find_run_dirs(root: str | Path, problems: list[str], *,
                  lister: Callable[[Path], set[str] | None] = list_names,
                  claim: Callable[[Path, Iterable[str], str], Iterable[tuple[str, Any]]] | None = None,
                  ) -> Iterator[tuple[Any, str, Any]]:
    """``(run folder, source, its file names)`` under ``root`` (or ``root`` itself when it is a run), one at a
    time as the walk finds them (with ``claim``, the root's names are read from the directory as claimed: a
    root of 100,000 runs is never one set).

    ``lister`` gives a folder's names below the root (None for a file): the catalog answers from what it
    kept for a folder that did not change. ``claim(folder, names, source)`` may take children first (the
    catalog's unchanged ended runs: one stat, no Path): it gives ``(name, answer)`` for the names left to
    list, in sorted order; an answer ``(path, source, what)`` is listed as is, a None is looked at here (a name it
    leaves out is one the catalog keeps to itself: a lean look's unchanged run)."""
    root = Path(root)
    names = list_names(root) if claim is None or parse_run_name(root.name) else _streamed(root, problems)
    if names is None:
        problems.append(f"{root}: " + ("not a folder" if root.exists() else "no such folder"))
        return
    if isinstance(names, set) and (_is_run(root, names) or names & {RunLayout.SUMMARY, RunLayout.METRICS_JSONL}):
        yield root, "", names
        return

    def walk(folder: Path, names: Iterable[str], depth: int, source: str) -> Iterator[tuple[Any, str, Any]]:
        shown = (name for name in names if not skipped_name(name))  # claim sorts what it leaves (it may leave most)
        for name, claimed in claim(folder, shown, source) if claim else ((name, None) for name in sorted(shown)):
            if claimed is not None:
                yield claimed
                continue
            child = folder / name
            inner = lister(child)
            if inner is None:
                continue  # a file, or unreadable
            if _is_run(child, inner):
                if not inner & RUN_FILES:
                    problems.append(f"{child}: named like a run but holds no summary.json, meta.json or "
                                    "metrics.jsonl; skipped")
                    continue
                yield child, source, inner
            elif depth > 1:
                yield from walk(child, inner, depth - 1, f"{source}/{name}" if source else name)

    yield from walk(root, names, MAX_DEPTH, "")



def _streamed(root: Path, problems: list[str]) -> Iterator[str] | set[str] | None:
    """The root's names as the directory gives them, one batch at a time (a root of 100,000 runs is never one
    set); its names as a set when it holds a run's files (the root is a run), None when it is not a folder."""
    if any(os.path.lexists(root / name) for name in (RunLayout.SUMMARY, RunLayout.METRICS_JSONL)):
        return list_names(root)
    try:
        listing = os.scandir(root)
    except OSError:
        return None

    def names() -> Iterator[str]:
        with listing:
            try:
                for entry in listing:
                    yield entry.name
            except OSError as exc:
                problems.append(f"{root}: not read to its end ({exc.strerror or exc})")

    return names()


def resolve_run(spec: str | Path, roots: Sequence[str | Path] = ("runs",)) -> Path:
    """A run folder from a path, a run name under ``roots``, or a unique part of a name; one-line errors."""
    path = Path(spec)
    if path.is_dir():
        return require_run_folder(path)
    problems: list[str] = []
    candidates = [p for root in roots if Path(root).is_dir() for p, _, _ in find_run_dirs(root, problems)]
    exact = [p for p in candidates if p.name == str(spec)]
    matches = exact or [p for p in candidates if str(spec) in p.name]
    if len(matches) == 1:
        return matches[0]
    where = ", ".join(str(r) for r in roots)
    if not matches:
        raise RunFolderError(f"{spec}: no such run folder, and no run under {where} is named like it")
    shown = ", ".join(p.name for p in matches[:5]) + (", ..." if len(matches) > 5 else "")
    raise RunFolderError(f"{spec}: {len(matches)} runs under {where} match ({shown}); give more of the name")
