"""A reader's cache of flattened ``config.yaml`` files, so filtering on config values does not re-parse YAML.

Why: ``lt ls -f "model.lr<1e-3"`` reads every run's ``config.yaml``, and PyYAML's constructor (even over
libyaml) costs about 0.1-0.4 ms a file: most of a listing of 1,000 runs. A run's
config never changes once written, so each file's flattened values are kept in one JSON file in the user's
cache (:func:`~lightning_track.vocabulary.cache_root`), keyed by the file's absolute path and checked against its size,
mtime, ctime and inode before use. Only values JSON gives back unchanged are kept (a YAML date or a NaN is
parsed again each time), so the cache can make a read faster, never different. Written once, at exit,
and only when something new was parsed. A look through the catalog keeps its configs in the catalog
instead (:mod:`.catalog`): this cache is for reads without one (``catalog=False``, no usable catalog).
"""

from __future__ import annotations

import atexit
import os
from pathlib import Path
from typing import Any

import orjson

from ..folder.fileio import atomic_write_bytes, staged_writes
from ..vocabulary import cache_root

__all__ = ["cached_config", "remember_config", "flush"]

_VERSION = 2
_MAX_ENTRIES = 50_000
_entries: dict[str, list[Any]] | None = None  # path -> [size, mtime_ns, ctime_ns, ino, flat config]
_dirty = False


def _cache_file() -> Path:
    return Path(cache_root()) / f"configs-v{_VERSION}.json"


def _load() -> dict[str, list[Any]]:
    global _entries
    if _entries is None:
        try:
            data = orjson.loads(_cache_file().read_bytes())
            _entries = data["entries"] if data.get("version") == _VERSION else {}
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            _entries = {}
    return _entries


def _key(stat: os.stat_result) -> list[int]:
    """The ctime too: a file copied over in place with its old mtime kept (``cp -p``) changes only that."""
    return [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]


def _path_key(path: Path) -> str:
    """The absolute path, not resolved: resolving costs a ``lstat`` per part, more than the YAML it saves
    on a first look at 10,000 runs, and the entry is checked against the file's own stat anyway."""
    return os.path.abspath(path)


def cached_config(path: Path, stat: os.stat_result) -> dict[str, Any] | None:
    """The flattened config kept for ``path`` if the file is unchanged since, else None."""
    entry = _load().get(_path_key(path))
    if isinstance(entry, list) and len(entry) == 5 and entry[:4] == _key(stat) and isinstance(entry[4], dict):
        return entry[4]
    return None


def remember_config(path: Path, stat: os.stat_result, flat: dict[str, Any]) -> None:
    """Keep ``flat`` for ``path`` when JSON gives it back unchanged."""
    global _dirty
    try:
        if orjson.loads(orjson.dumps(flat)) != flat:
            return
    except (TypeError, orjson.JSONEncodeError):
        return
    entries = _load()
    if len(entries) >= _MAX_ENTRIES:
        entries.clear()
    entries[_path_key(path)] = [*_key(stat), flat]
    if not _dirty:
        _dirty = True
        atexit.register(flush)


def flush() -> None:
    """Write what was added (once; any failure leaves the cache as it was)."""
    global _dirty
    if not _dirty or _entries is None:
        return
    _dirty = False
    try:
        target = _cache_file()
        target.parent.mkdir(parents=True, exist_ok=True)
        with staged_writes():
            atomic_write_bytes(target, orjson.dumps({"version": _VERSION, "entries": _entries}))
    except (OSError, TypeError, orjson.JSONEncodeError):
        pass
