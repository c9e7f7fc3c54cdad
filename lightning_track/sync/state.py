"""Per-file sync state, journaled as each file completes, so a killed sync resumes where it stopped.

Why a journal: one appended line per finished file is cheap enough to write after every file (no
full rewrite, no fsync per file), survives SIGKILL of the process, and is compacted atomically at
the end of a cycle. The mirror itself stays the truth for "what is there" (sizes and mtimes are
re-listed every cycle); the journal remembers what is *in flight*: which partial copy belongs to
which source version, so it can be continued instead of restarted -- and which runs are *settled*
(finished, unchanged for a while, mirrored whole): their folders' mtimes on both sides, so that a later
pass lists such a run only when one of its folders changed (see ``engine.SETTLE_S`` for the rule).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import JsonlProblem, SyncError
from ..folder.fileio import JsonlAppender, atomic_write_text, iter_jsonl, json_line
from .transport import Entry

__all__ = ["SyncState", "default_state_path"]


def default_state_path(src: str, dest: str) -> Path:
    """``$XDG_STATE_HOME/lightning_track/sync/<hash of SRC and DEST>.jsonl`` on the machine running lt-sync."""
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    key = hashlib.sha1(f"{src}\n{dest}".encode()).hexdigest()[:16]
    return base / "lightning_track" / "sync" / f"{key}.jsonl"


_OPS = ("done", "partial", "forget", "run", "unrun")


def _is_state_record(record: Any) -> bool:
    return isinstance(record, dict) and record.get("op") in _OPS and isinstance(record.get("path"), str)


class SyncState:
    """``done`` files (size, mtime, tail hash of the source version copied) and ``partial`` copies."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self.done: dict[str, dict[str, Any]] = {}
        self.partial: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}  # settled top-level folder -> src/dst folder mtimes, files, cover
        self.problems: list[JsonlProblem] = []
        self._journal: JsonlAppender | None = None
        self._dirty = False
        if self.path is not None and self.path.exists():
            records = [record for _, record in iter_jsonl(self.path, self.problems)]
            if not all(_is_state_record(r) for r in records) or (not records and self.path.stat().st_size):
                raise SyncError(f"--state {self.path}: not an lt-sync state file (its lines are not lt-sync's "
                                "records); give a new file name, it would be overwritten")
            for record in records:
                self._apply(record)

    def _apply(self, record: dict[str, Any]) -> None:
        op, rel = record.get("op"), record.get("path")
        if not isinstance(rel, str):
            return
        if op == "done":
            self.done[rel] = {k: record.get(k) for k in ("size", "mtime", "tail")}
            self.partial.pop(rel, None)
        elif op == "partial":
            self.partial[rel] = {k: record.get(k) for k in ("size", "mtime")}
        elif op == "forget":
            self.done.pop(rel, None)
            self.partial.pop(rel, None)
        elif op == "run":
            if isinstance(record.get("src"), dict) and isinstance(record.get("dst"), dict):
                self.runs[rel] = {k: record.get(k) for k in ("src", "dst", "files", "cover")}
        elif op == "unrun":
            self.runs.pop(rel, None)

    def _write(self, record: dict[str, Any]) -> None:
        self._apply(record)
        self._dirty = True
        if self.path is None:
            return
        if self._journal is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._journal = JsonlAppender(self.path)
        self._journal.append(record)

    def start_partial(self, rel: str, src: Entry) -> None:
        self._write({"op": "partial", "path": rel, "size": src.size, "mtime": src.mtime})

    def partial_matches(self, rel: str, src: Entry) -> bool:
        """True when a leftover partial copy was made from this same source version."""
        return self.partial.get(rel) == {"size": src.size, "mtime": src.mtime}

    def mark_done(self, rel: str, size: int, mtime: int, tail: str) -> None:
        self._write({"op": "done", "path": rel, "size": size, "mtime": mtime, "tail": tail})

    def done_many(self, files: Iterable[tuple[str, int, int, str]]) -> None:
        """``mark_done`` for many files (path, size, mtime, tail hash) in one journal write: a whole run copied."""
        records = [{"op": "done", "path": rel, "size": size, "mtime": mtime, "tail": tail}
                   for rel, size, mtime, tail in files]
        for record in records:
            self._apply(record)
        self._dirty = True
        if self.path is None or not records:
            return
        if self._journal is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._journal = JsonlAppender(self.path)
        self._journal.write_lines([json_line(r) for r in records])

    def forget(self, rel: str) -> None:
        self._write({"op": "forget", "path": rel})

    def settle(self, top: str, src: dict[str, int], dst: dict[str, int], files: int, cover: str) -> None:
        """``top`` is mirrored whole and finished: skip it while these folder mtimes hold on both sides."""
        self._write({"op": "run", "path": top, "src": src, "dst": dst, "files": files, "cover": cover})

    def unsettle(self, top: str) -> None:
        if top in self.runs:
            self._write({"op": "unrun", "path": top})

    def compact(self) -> None:
        """Rewrite the journal as one line per file (atomically), dropping the history.

        A settled run's files need no line each (its one ``run`` line stands for them): the journal a
        nothing-changed pass loads stays one line per run, not one per file."""
        if self.path is None or not self._dirty:
            return
        self.close()
        self._dirty = False
        runs = self.runs
        lines = [json_line({"op": "run", "path": top, **info}) for top, info in sorted(runs.items())]
        lines += [json_line({"op": "done", "path": rel, **info}) for rel, info in sorted(self.done.items())
                  if rel.split("/", 1)[0] not in runs]
        lines += [json_line({"op": "partial", "path": rel, **info}) for rel, info in sorted(self.partial.items())]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, "".join(lines))

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None
