"""Reading ``checkpoints.json``, the index of every checkpoint a run wrote (written by
:mod:`lightning_track.run.lineage`): ``{"checkpoints": [{"file", "step", "epoch", "attempt", "time",
"metrics", "monitor", "size", "sha256", "hashed"}, ...]}``, paths relative to the run folder; and which of
them a later step means by ``last`` and ``best`` (pure choices over the entries); the writer that hashes a
checkpoint as it is written."""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

from .fileio import read_json
from .layout import RunLayout

__all__ = ["read_index", "HASH", "HASHED", "WHILE_WRITING", "READ", "checkpoint_entries", "last_checkpoint",
           "best_checkpoint", "EVALUATED", "HashingWriter"]

HASH = "sha256"  # the key of an entry's content hash (hex, as sha256sum prints it)
HASHED = "hashed"  # how the hash was made: from the bytes as they were written, or by reading the file once
WHILE_WRITING, READ = "while writing", "read"
EVALUATED = "evaluated"  # meta.json's key: the checkpoints of other runs this run was started to evaluate


def read_index(layout: RunLayout) -> list[dict[str, Any]]:
    """The entries of ``checkpoints.json`` (none when it is missing or unreadable)."""
    try:
        data = read_json(layout.checkpoints_index)
    except (OSError, ValueError):
        return []
    entries = data.get("checkpoints") if isinstance(data, dict) else None
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def checkpoint_entries(entries: Sequence[Mapping[str, Any]],
                       exists: Callable[[str], bool]) -> list[Mapping[str, Any]]:
    """The newest entry of each checkpoint file still on disk (``exists(file)``), exported models left out,
    in the order they were written."""
    newest: dict[str, Mapping[str, Any]] = {}
    for entry in entries:
        name = entry.get("file")
        if isinstance(name, str) and entry.get("kind") != "model":
            newest.pop(name, None)
            newest[name] = entry
    return [e for name, e in newest.items() if exists(name)]


def _step(entry: Mapping[str, Any]) -> int:
    step = entry.get("step")
    return step if isinstance(step, int) and not isinstance(step, bool) else -1


def last_checkpoint(entries: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The checkpoint of the highest step (of two at one step, the one written last; a ``last.ckpt`` copy
    only when no step file has that step)."""
    if not entries:
        return None
    order = {id(e): i for i, e in enumerate(entries)}
    return max(entries, key=lambda e: (_step(e), str(e.get("file", "")).rsplit("/", 1)[-1]
                                       != RunLayout.LAST_CHECKPOINT, order[id(e)]))


def best_checkpoint(entries: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The checkpoint whose monitored metric (the ``monitor`` its ModelCheckpoint recorded: metric and mode)
    is best; a tie goes to the later one. None when no checkpoint has a monitored value."""
    scored: list[tuple[float, int, Mapping[str, Any]]] = []
    for i, entry in enumerate(entries):
        monitor = entry.get("monitor") if isinstance(entry.get("monitor"), Mapping) else None
        metrics = entry.get("metrics") if isinstance(entry.get("metrics"), Mapping) else {}
        value = metrics.get(monitor.get("metric")) if monitor else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            scored.append((-value if monitor.get("mode") == "max" else value, -i, entry))
    return min(scored, key=lambda s: (s[0], s[1]))[2] if scored else None


class HashingWriter:
    """A binary writer that hashes (SHA-256) the bytes as they pass to ``handle``, so a file written once
    (a checkpoint) never has to be read again for its hash; ``size`` counts them.

    A large piece (a tensor's storage) is hashed on a helper thread while it is being written (both release
    the GIL), so the hash adds little to the write on a machine with a core to spare."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: Any) -> int:
        if memoryview(data).nbytes < _BESIDE_MIN:
            self._hash.update(data)
            written = self._handle.write(data)
        else:
            hashing = _hash_thread().submit(self._hash.update, data)
            try:
                written = self._handle.write(data)
            finally:
                hashing.result()  # in order: the next piece is hashed after this one
        self.size += written
        return written

    def flush(self) -> None:
        self._handle.flush()

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


_BESIDE_MIN = 1 << 20  # pieces from this size are hashed beside their write


@functools.cache
def _hash_thread() -> ThreadPoolExecutor:
    """One helper thread for every writer, started on first use (each writer waits for its own pieces)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="lightning_track-hash")
