"""``checkpoints.json``: every checkpoint a run wrote, and where each attempt resumed from.

Why: a model or an evaluation is only traceable when the checkpoint it came from is named by its
content, not only by a path that a later save may replace. Each entry says which attempt wrote it, at
which step and epoch, with what metrics (and the metric its ModelCheckpoint monitors), its size and its
SHA-256. A checkpoint StepCheckpoint writes is hashed from its bytes as they are written (:meth:`written`,
no read at all); any other is read once on one daemon thread, off the training thread, and an
asynchronously written one is waited for. Each entry says which (``hashed``). That thread alone writes the
index, kept in memory (read from disk once, for an earlier attempt's entries) and rewritten atomically: once
with a checkpoint whose hash is known, else when it is announced and again with its hash, so a killed run
still lists every checkpoint it announced.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import one_line
from ..folder.checkpoint_index import HASH, HASHED, READ, WHILE_WRITING, read_index
from ..folder.fileio import atomic_write_json, file_sha256
from ..folder.layout import RunLayout
from ..vocabulary import iso_time

__all__ = ["CheckpointIndex"]

_WAIT_FOR_FILE_S = 60.0  # an asynchronous save lands a little after Lightning announces it


class CheckpointIndex:
    """Announce checkpoints with :meth:`add` (cheap, any thread); :meth:`close` waits, with a cap, for
    the hashes still being computed."""

    def __init__(self, layout: RunLayout) -> None:
        self.layout = layout
        self._queue: queue.Queue[tuple[dict[str, Any], Path, Callable[[dict[str, Any]], None] | None] | None] = \
            queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._written: dict[str, tuple[str, int]] = {}  # absolute path -> (sha256, size), hashed as written

    def add(self, path: str | Path, *, step: int | None, epoch: int | None, attempt: int,
            metrics: Mapping[str, float] | None = None, monitor: Mapping[str, str] | None = None) -> None:
        """Announce a checkpoint (``monitor``: the metric and mode its callback ranks checkpoints by)."""
        entry: dict[str, Any] = {"file": self.layout.relative(path), "step": step, "epoch": epoch,
                                 "attempt": attempt, "time": iso_time(), "metrics": dict(metrics or {})}
        if monitor:
            entry["monitor"] = dict(monitor)
        self._put(entry, Path(path), None)

    def written(self, path: str | Path, sha256: str, size: int) -> None:
        """The writer hashed ``path``'s bytes as it wrote them (any thread, before or after :meth:`add`, before
        the file appears under its name): the index takes this hash instead of reading the file."""
        with self._lock:
            self._written[os.path.abspath(path)] = (sha256, size)

    def add_model(self, folder: str | Path, *, step: int | None, attempt: int) -> None:
        """An exported model (``final_model/``): its weight files' hashes and the checkpoint of the same step
        (the same weights) it can be traced to, found once that checkpoint is hashed."""
        entry: dict[str, Any] = {"file": self.layout.relative(folder), "kind": "model", "step": step,
                                 "attempt": attempt, "time": iso_time()}
        self._put(entry, Path(folder), None)

    def resumed_from(self, step: int) -> dict[str, Any] | None:
        """The checkpoint a resume at ``step`` continues from (``file``, ``step``, ``sha256`` from the index,
        None when the index lacks it: see :meth:`hash_later`), or None when the run has none at that step."""
        found = [path for s, path in self.layout.checkpoint_steps() if s == step]
        if not found:
            return None
        record: dict[str, Any] = {"file": self.layout.relative(found[0]), "step": step, HASH: None}
        known = [e for e in read_index(self.layout) if e.get("file") == record["file"] and e.get(HASH)]
        if known:
            record[HASH] = known[-1][HASH]
        return record

    def note_resume(self, step: int, update_attempt: Callable[..., None]) -> None:
        """Record in the resumed attempt's entry (``update_attempt(resumed_from=...)``) the checkpoint it
        continues from; a hash the index lacks follows when computed, off this thread."""
        record = self.resumed_from(step)
        if record is None:
            return
        update_attempt(resumed_from=record)
        if not record.get(HASH):
            self.hash_later(record, lambda found: update_attempt(resumed_from=found))

    def hash_later(self, record: dict[str, Any], on_hashed: Callable[[dict[str, Any]], None]) -> None:
        """Hash a checkpoint the index does not know (its attempt was killed first) off this thread: it is
        added to the index, and ``on_hashed`` gets ``record`` with its hash."""
        def hashed(entry: dict[str, Any]) -> None:
            on_hashed({**record, HASH: entry.get(HASH)})

        note = "found at a resume: its attempt ended before it was indexed"
        self._put({"file": record["file"], "step": record["step"], "epoch": None, "attempt": None,
                   "time": iso_time(), "metrics": {}, "note": note}, self.layout.run_dir / record["file"], hashed)

    def _put(self, entry: dict[str, Any], path: Path,
             then: Callable[[dict[str, Any]], None] | None) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="lightning_track-lineage", daemon=True)
                self._thread.start()
        self._queue.put((entry, path, then))

    def _hashed_already(self, path: Path) -> bool:
        with self._lock:
            return os.path.abspath(path) in self._written and path.exists()

    def _take_written(self, path: Path) -> tuple[str, int] | None:
        with self._lock:
            return self._written.pop(os.path.abspath(path), None)

    def __getstate__(self) -> dict[str, Any]:  # ddp_spawn pickles the run: a thread does not travel
        return {"layout": self.layout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["layout"])  # type: ignore[misc]

    def close(self, timeout: float = 30.0) -> bool:
        """Wait at most ``timeout`` for the announced checkpoints' hashes; True when all are written."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return True
        self._queue.put(None)
        thread.join(timeout)
        return not thread.is_alive()

    # -- the thread --------------------------------------------------------------------------------
    def _work(self) -> None:
        entries: list[dict[str, Any]] | None = None
        while (item := self._queue.get()) is not None:
            entry, path, then = item
            if entries is None:  # an earlier attempt's entries, read once
                entries = read_index(self.layout)
            entries.append(entry)
            if entry.get("kind") == "model":
                self._write(entries)
                entry.update(self._hash_model(path, entry.get("step"), entries))
            else:
                if not self._hashed_already(path):  # listed while it is waited for (async) or read
                    self._write(entries)
                entry.update(self._hash(path))
            self._write(entries)
            if then is not None:
                then(entry)

    def _hash(self, path: Path) -> dict[str, Any]:
        deadline = time.monotonic() + _WAIT_FOR_FILE_S
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        known = self._take_written(path)  # the writer gives it before the file appears under its name
        try:
            size = path.stat().st_size
            if known is not None and known[1] == size:
                return {"size": size, HASH: known[0], HASHED: WHILE_WRITING}
            return {"size": size, HASH: file_sha256(path), HASHED: READ}
        except OSError as exc:
            return {"size": None, HASH: None, "problem": f"not hashed: {one_line(exc)}"}

    def _hash_model(self, folder: Path, step: int | None, entries: list[dict[str, Any]]) -> dict[str, Any]:
        weights = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth")) \
            if folder.is_dir() else []
        try:
            found: dict[str, Any] = {"files": {p.name: file_sha256(p) for p in weights}}
        except OSError as exc:
            return {"files": {}, "problem": f"not hashed: {one_line(exc)}"}
        same = [e for e in entries if e.get("kind") != "model" and step is not None and e.get("step") == step
                and e.get(HASH)]  # a checkpoint of the same step holds the same weights
        found["from_checkpoint"] = {"file": same[-1]["file"], HASH: same[-1][HASH]} if same else None
        return found

    def _write(self, entries: list[dict[str, Any]]) -> None:
        try:
            atomic_write_json(self.layout.checkpoints_index, {"checkpoints": entries})
        except OSError:
            pass  # the index describes; the checkpoints themselves are safe
