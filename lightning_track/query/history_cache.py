"""A reader's cache of metric-history columns: each ``metrics.jsonl`` is parsed once, not at every look.

Why: parsing JSON is the whole cost of a history (about 0.4 s per 100k records of 10 metrics, most of it
building Python objects), and the same runs are read again and again (a notebook re-run, ``lt report``
after ``lt compare``), while a run being written only grows. So the columns of every file parsed are
kept as one ``.npz`` in the user's cache (:func:`~lightning_track.vocabulary.cache_root`, never in the
run folder: mirrors and other users' runs may be read-only, and a run folder holds what its run wrote),
with what they were built from: the file's device and inode, the bytes they cover, and a hash of the
first and last 4 KiB of those bytes. A read then parses only what was appended since; a file replaced
(a resume's rewind rewrites ``metrics.jsonl`` through a new inode), truncated or edited in place is
parsed whole again. Anything wrong with the cache (missing, torn, another version, not writable) means
parsing as if there were none: the cache can only make a read faster, never different.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ..folder.fileio import atomic_open, staged_writes
from ..vocabulary import cache_root

__all__ = ["CachedColumns", "is_cached", "load_cached", "save_cached", "MIN_BYTES"]

_VERSION = 1
_EDGE = 4096  # bytes hashed at each end of the covered part
MIN_BYTES = 1 << 20  # smaller files parse faster than the cache's own I/O
BUDGET_BYTES = 2 << 30  # past this, the files read longest ago are dropped


@dataclass
class CachedColumns:
    """Columns covering the first ``covered`` bytes (``lines`` whole lines) of one file."""

    covered: int
    lines: int
    steps: np.ndarray
    times: np.ndarray
    columns: dict[str, np.ndarray]
    held: dict[str, np.ndarray]
    problems: list[str]


def _cache_file(path: Path) -> Path:
    key = hashlib.sha1(str(path.resolve()).encode("utf-8", "surrogateescape")).hexdigest()
    return Path(cache_root()) / "history" / f"{key}.npz"


def _fingerprint(handle: io.BufferedReader, covered: int) -> str:
    handle.seek(0)
    head = handle.read(min(_EDGE, covered))
    start = max(0, covered - _EDGE)
    handle.seek(start)
    tail = handle.read(covered - start)
    return hashlib.sha1(head + b"\0" + tail).hexdigest()


def _fresh_meta(stored: Any, path: Path, stat: os.stat_result) -> dict[str, Any] | None:
    """The entry's description if it still describes the first bytes of ``path`` (no column is read)."""
    meta = orjson.loads(stored["meta"].tobytes())
    if (meta.get("version") != _VERSION or meta.get("path") != str(path.resolve())
            or meta.get("dev") != stat.st_dev or meta.get("ino") != stat.st_ino
            or not 0 < meta.get("covered", -1) <= stat.st_size):
        return None
    with open(path, "rb") as handle:
        return meta if _fingerprint(handle, meta["covered"]) == meta["fingerprint"] else None


_UNUSABLE = (OSError, ValueError, KeyError, TypeError, orjson.JSONDecodeError, EOFError, zipfile.BadZipFile)


def is_cached(path: Path, stat: os.stat_result) -> bool:
    """Whether :func:`load_cached` would find columns for ``path`` (reads the entry's description only)."""
    try:
        with np.load(_cache_file(path), allow_pickle=False) as stored:
            return _fresh_meta(stored, path, stat) is not None
    except _UNUSABLE:
        return False


def load_cached(path: Path, stat: os.stat_result) -> CachedColumns | None:
    """The cached columns of ``path`` if they still describe its first bytes, else None."""
    entry = _cache_file(path)
    try:
        with np.load(entry, allow_pickle=False) as stored:
            meta = _fresh_meta(stored, path, stat)
            if meta is None:
                return None
            keys = meta["keys"]
            columns = {key: stored[f"c{i}"] for i, key in enumerate(keys)}
            held = {keys[i]: stored[f"m{i}"] for i in meta["held"]}
            found = CachedColumns(meta["covered"], meta["lines"], stored["steps"], stored["times"], columns, held,
                                  list(meta["problems"]))
        os.utime(entry)  # recently used: the last to be pruned
        return found
    except _UNUSABLE:
        return None


def save_cached(path: Path, stat: os.stat_result, cached: CachedColumns) -> None:
    """Keep ``cached`` for the next read; any failure leaves the cache as it was (never raises)."""
    try:
        with open(path, "rb") as handle:
            fingerprint = _fingerprint(handle, cached.covered)
        keys = list(cached.columns)
        meta = {"version": _VERSION, "path": str(path.resolve()), "dev": stat.st_dev, "ino": stat.st_ino,
                "covered": cached.covered, "lines": cached.lines, "fingerprint": fingerprint, "keys": keys,
                "held": [i for i, key in enumerate(keys) if key in cached.held], "problems": cached.problems}
        arrays: dict[str, Any] = {"meta": np.frombuffer(orjson.dumps(meta), dtype=np.uint8),
                                  "steps": cached.steps, "times": cached.times}
        for i, key in enumerate(keys):
            arrays[f"c{i}"] = cached.columns[key]
            if key in cached.held:
                arrays[f"m{i}"] = cached.held[key]
        target = _cache_file(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with staged_writes(), atomic_open(target, "wb") as handle:  # a cache needs no fsync
            np.savez(handle, **arrays)
        _prune(target.parent, keep=target)
    except (OSError, ValueError, TypeError):
        pass


def _prune(folder: Path, *, keep: Path) -> None:
    """Drop the least recently used entries until the folder fits :data:`BUDGET_BYTES`."""
    entries = []
    for entry in os.scandir(folder):
        if entry.name.endswith(".npz") and entry.path != str(keep):
            stat = entry.stat()
            entries.append((stat.st_mtime, stat.st_size, entry.path))
    total = sum(size for _, size, _ in entries) + keep.stat().st_size
    for _, size, name in sorted(entries):
        if total <= BUDGET_BYTES:
            break
        Path(name).unlink(missing_ok=True)
        total -= size
