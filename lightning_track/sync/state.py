"""Per-file sync state, journaled as each file completes, so a killed sync resumes where it stopped.

Why a journal: one appended line per finished file is cheap enough to write after every file (no
full rewrite, no fsync per file), survives SIGKILL of the process, and is compacted atomically at
the end of a cycle. The mirror itself stays the truth for "what is there" (sizes and mtimes are
re-listed every cycle); the journal remembers what is *in flight*: which partial copy belongs to
which source version, so it can be continued instead of restarted -- and which runs are *settled*
(finished, unchanged for a while, mirrored whole): their folders' mtimes on both sides, so that a later
pass lists such a run only when one of its folders changed (see ``settled.SETTLE_S`` for the rule).

The settled runs are kept as a table of arrays (:class:`~.runtable.SettledRuns`, ~80 bytes a run where
dicts took ~1.5 KiB); the journal's lines are the same as before (an older lt-sync reads this one's, and
this one an older's), and it is read and rewritten a line at a time. The ``done`` lines (one a file of the runs not
settled: the live runs, tens of thousands of files on a busy server) are not kept in memory at all: nothing
a pass decides reads them, and a compaction carries the last one of each file over from the journal itself.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from ..errors import JsonlProblem, SyncError
from ..folder.fileio import JsonlAppender, atomic_open, iter_jsonl, json_line
from .hashslots import HashSlots
from .runtable import SettledRuns
from .transport import Entry

__all__ = ["SyncState", "default_state_path"]


def default_state_path(src: str, dest: str) -> Path:
    """``$XDG_STATE_HOME/lightning_track/sync/<hash of SRC and DEST>.jsonl`` on the machine running lt-sync."""
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    key = hashlib.sha1(f"{src}\n{dest}".encode()).hexdigest()[:16]
    return base / "lightning_track" / "sync" / f"{key}.jsonl"


_OPS = ("done", "partial", "forget", "run", "unrun")
_RUN_LINE = b'{"op":"run",'  # how this version (and the one before) starts a run line: skipped unread
_LINES_AT_ONCE = 1000  # lines of a compaction joined into one write


def _is_state_record(record: Any) -> bool:
    return isinstance(record, dict) and record.get("op") in _OPS and isinstance(record.get("path"), str)


class SyncState:
    """``partial`` copies (which source version each holds) and the settled runs (:class:`SettledRuns`); the
    journal also says which files are ``done`` (size, mtime, tail hash of the source version copied)."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self.partial: dict[str, tuple[Any, Any]] = {}  # file -> (size, mtime) of the source version
        self.runs = SettledRuns()
        self.problems: list[JsonlProblem] = []
        self._journal: JsonlAppender | None = None
        self._dirty = False
        if self.path is not None and self.path.exists():
            records = 0
            for _, record in iter_jsonl(self.path, self.problems):  # a line at a time: never the file whole
                if not _is_state_record(record):
                    records = -1
                    break
                records += 1
                self._apply(record)
            if records < 0 or (not records and self.path.stat().st_size):
                raise SyncError(f"--state {self.path}: not an lt-sync state file (its lines are not lt-sync's "
                                "records); give a new file name, it would be overwritten")

    def _apply(self, record: dict[str, Any]) -> None:
        op, rel = record.get("op"), record.get("path")
        if type(rel) is not str:
            return
        if op == "run":
            self.runs.put(rel, record.get("src"), record.get("dst"), record.get("files"), record.get("cover"))
        elif op == "done" or op == "forget":
            self.partial.pop(rel, None)
        elif op == "partial":
            self.partial[rel] = (record.get("size"), record.get("mtime"))
        elif op == "unrun":
            self.runs.drop(rel)

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
        return self.partial.get(rel) == (src.size, src.mtime)

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
        """Rewrite the journal as one line per settled run, per file of the other runs (its last ``done``, read
        from the journal as it is) and per partial copy: atomically, a thousand lines at a time, the history dropped.

        A settled run's files need no line each (its one ``run`` line stands for them): the journal a
        nothing-changed pass loads stays one line per run, not one per file."""
        if self.path is None or not self._dirty:
            return
        self.close()
        self._dirty = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        runs = self.runs
        last, lines_read = _LastDone(), 0
        for number, path, op in self._files_said():  # each file's last line; a settled run's files: none
            last.note(path, number, op == "done" and path.split("/", 1)[0] not in runs)
            lines_read = number + 1
        keep = last.kept(lines_read)  # a bit a journal line: the done lines carried over
        with atomic_open(self.path, "wb") as out:
            lines: list[bytes] = []

            def write(line: bytes) -> None:
                lines.append(line)
                if len(lines) >= _LINES_AT_ONCE:
                    out.write(b"".join(lines))
                    lines.clear()

            for row in runs.live_rows():
                write(runs.line(row))
            if any(keep):
                with open(self.path, "rb") as journal:
                    for number, raw in zip(range(lines_read), journal):  # noqa: B905 (the journal may be longer)
                        if keep[number >> 3] >> (number & 7) & 1:
                            write(raw if raw.endswith(b"\n") else raw + b"\n")
            for rel, (size, mtime) in self.partial.items():
                write(json_line({"op": "partial", "path": rel, "size": size, "mtime": mtime}).encode("utf-8"))
            out.write(b"".join(lines))

    def _files_said(self) -> Iterator[tuple[int, str, str]]:
        """The journal's ``done`` and ``forget`` lines as (line number, path, op), read a line at a time; run lines
        are passed by unread."""
        assert self.path is not None
        try:
            handle = open(self.path, "rb")
        except FileNotFoundError:
            return
        with handle:
            for number, raw in enumerate(handle):
                if raw.startswith(_RUN_LINE):
                    continue
                try:
                    record = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue  # a torn last line, a line only the stdlib reads: no done line to keep
                if type(record) is not dict or type(record.get("path")) is not str:
                    continue
                op = record.get("op")
                if op == "done" or op == "forget":
                    yield number, record["path"], op

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None


class _LastDone(HashSlots):
    """Each file's last done-or-forget line of the journal, ~24 bytes a file: the path's hash -> its line number
    and whether it was a done line. Two paths of one hash keep the later line of the two: a done line lost from
    the journal, which no pass reads for a decision (the mirror is re-listed)."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(values=True)

    def note(self, path: str, number: int, done: bool) -> None:
        self.put(path, number * 2 + done)

    def kept(self, lines: int) -> bytearray:
        """A bit for each of ``lines`` journal lines: set for each file's last line when it is a done line to keep."""
        keep = bytearray((lines + 7) // 8)
        for line in self.values_held():
            if line & 1:
                number = line >> 1
                keep[number >> 3] |= 1 << (number & 7)
        return keep
