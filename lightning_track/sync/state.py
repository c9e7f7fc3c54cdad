"""Per-file sync state, journaled as each file completes, so a killed sync resumes where it stopped.

Why a journal: one appended line per finished file is cheap enough to write after every file (no
full rewrite, no fsync per file), survives SIGKILL of the process, and is compacted atomically at
the end of a cycle. The mirror itself stays the truth for "what is there" (sizes and mtimes are
re-listed every cycle); the journal remembers what is *in flight*: which partial copy belongs to
which source version, so it can be continued instead of restarted -- and which runs are *settled*
(finished, unchanged for a while, mirrored whole): their folders' mtimes on both sides, so that a later
pass lists such a run only when one of its folders changed (see ``settled.SETTLE_S`` for the rule).

Why the settled runs are a table of arrays (:class:`SettledRuns`) and not a dict of records: a pass where
nothing changed loads one ``run`` line a run and needs, of each, only its name, its folders' mtimes and
its file count; kept as dicts that is ~1.5 KiB a run (100,000 runs: 150 MiB), as arrays ~0.1 KiB. The
journal's lines are the same as before either way (an older lt-sync reads this one's, and this one
an older's), and it is read and rewritten a line at a time.
"""

from __future__ import annotations

import hashlib
import os
import struct
from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..errors import JsonlProblem, SyncError
from ..folder.fileio import JsonlAppender, atomic_open, iter_jsonl, json_line
from .transport import Entry

__all__ = ["SyncState", "SettledRuns", "default_state_path"]


def default_state_path(src: str, dest: str) -> Path:
    """``$XDG_STATE_HOME/lightning_track/sync/<hash of SRC and DEST>.jsonl`` on the machine running lt-sync."""
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    key = hashlib.sha1(f"{src}\n{dest}".encode()).hexdigest()[:16]
    return base / "lightning_track" / "sync" / f"{key}.jsonl"


_OPS = ("done", "partial", "forget", "run", "unrun")
_NAME = ("utf-8", "surrogatepass")  # any str a listing gives (surrogate-escaped bytes too) and back, exactly
_DONE = struct.Struct("<qq16s")  # a done record kept packed: size, mtime, the tail hash's 16 bytes
_LINES_AT_ONCE = 1000  # lines of a compaction joined into one write


def _is_state_record(record: Any) -> bool:
    return isinstance(record, dict) and record.get("op") in _OPS and isinstance(record.get("path"), str)


def _is_int(value: Any) -> bool:
    return type(value) is int and -(1 << 63) <= value < (1 << 63)


class SettledRuns:
    """The settled runs: ``name -> (src folders' mtimes, dst folders' mtimes, files, cover)``, ~100 bytes a run.

    No dict, tuple or string a run: a row is the name's hash (rows found by open addressing) and its bytes (in
    one blob), the folders of each side as an index into the few distinct shapes (a run's folders relative to
    it: runs of one kind share them), their mtimes in one array (the source's, then the mirror's), the file
    count and the cover. A dropped run (``unrun``) keeps its row, not live, until the table is built again."""

    __slots__ = ("mask", "slots", "hashes", "ends", "blob", "src_shape", "dst_shape", "time_at", "times", "files",
                 "cover_of", "live", "count", "shapes", "shape_ids", "covers", "deep")

    def __init__(self) -> None:
        self.mask = 15
        self.slots = array("i", bytes(4 * 16))  # row + 1 at a name hash's place, 0: free
        self.hashes = array("q")
        self.ends = array("I", [0])  # row i's name is blob[ends[i]:ends[i + 1]]
        self.blob = bytearray()
        self.src_shape, self.dst_shape = array("I"), array("I")
        self.time_at = array("I")  # the row's first mtime in ``times``
        self.times = array("q")
        self.files = array("q")
        self.cover_of = array("I")
        self.live = bytearray()
        self.count = 0  # live rows
        self.shapes: list[tuple[str, ...]] = []  # sorted folders relative to the run ("": the run's own folder)
        self.shape_ids: dict[tuple[str, ...], int] = {}
        self.covers: list[str] = []
        self.deep = False  # some shape has a folder below the run's own

    def __len__(self) -> int:
        return self.count

    @property
    def rows(self) -> int:
        return len(self.hashes)

    def find(self, name: str) -> int:
        """``name``'s row (live or not), -1 when it has none."""
        h, mask, slots, hashes = hash(name), self.mask, self.slots, self.hashes
        at = h & mask
        row = slots[at]
        raw = None
        while row:
            if hashes[row - 1] == h:
                if raw is None:
                    raw = name.encode(*_NAME)
                if self.blob[self.ends[row - 1]:self.ends[row]] == raw:
                    return row - 1
            at = (at + 1) & mask
            row = slots[at]
        return -1

    def __contains__(self, name: str) -> bool:
        row = self.find(name)
        return row >= 0 and self.live[row] == 1

    def name(self, row: int) -> str:
        return self.blob[self.ends[row]:self.ends[row + 1]].decode(*_NAME)

    def cover_id(self, cover: str) -> int:
        """The cover's index, -1 when no row has it."""
        try:
            return self.covers.index(cover)
        except ValueError:
            return -1

    def _shape(self, top: str, folders: Any) -> tuple[int, list[int]] | None:
        """A side's folders as (shape index, their mtimes in the shape's order); None when not a run's record."""
        if not isinstance(folders, dict) or not _is_int(folders.get(top)):
            return None
        cut = len(top) + 1
        items = []
        for rel, mtime in folders.items():
            if not isinstance(rel, str) or not _is_int(mtime):
                return None
            if rel == top:
                items.append(("", mtime))
            elif rel.startswith(top + "/"):
                items.append((rel[cut:], mtime))
            else:
                return None
        items.sort()
        shape = tuple(sub for sub, _ in items)
        index = self.shape_ids.get(shape)
        if index is None:
            index = self.shape_ids[shape] = len(self.shapes)
            self.shapes.append(shape)
            self.deep = self.deep or len(shape) > 1
        return index, [mtime for _, mtime in items]

    def put(self, top: str, src: Any, dst: Any, files: Any, cover: Any) -> bool:
        """Record ``top`` settled (again); False (nothing recorded) for what is not a settled run's record."""
        if not isinstance(cover, str) or not isinstance(top, str) or not top or "/" in top:
            return False
        mine, theirs = self._shape(top, src), self._shape(top, dst)
        if mine is None or theirs is None:
            return False
        try:
            cover_index = self.covers.index(cover)
        except ValueError:
            cover_index = len(self.covers)
            self.covers.append(cover)
        row = self.find(top)
        if row < 0:
            row = self._add(top)
        elif self.live[row]:
            self.count -= 1
        self.src_shape[row], self.dst_shape[row] = mine[0], theirs[0]
        self.time_at[row] = len(self.times)
        self.times.extend(mine[1])
        self.times.extend(theirs[1])
        self.files[row] = files if _is_int(files) else 0
        self.cover_of[row] = cover_index
        self.live[row] = 1
        self.count += 1
        return True

    def _add(self, top: str) -> int:
        row = len(self.hashes)
        if (row + 1) * 2 > self.mask + 1:  # at most half full
            self._grow()
        h = hash(top)
        at = h & self.mask
        while self.slots[at]:
            at = (at + 1) & self.mask
        self.slots[at] = row + 1
        self.hashes.append(h)
        self.blob += top.encode(*_NAME)
        self.ends.append(len(self.blob))
        for column in (self.src_shape, self.dst_shape, self.time_at, self.cover_of):
            column.append(0)
        self.files.append(0)
        self.live.append(0)
        return row

    def _grow(self) -> None:
        size = (self.mask + 1) * 2
        mask, slots = size - 1, array("i", bytes(4 * size))
        for row, h in enumerate(self.hashes):
            at = h & mask
            while slots[at]:
                at = (at + 1) & mask
            slots[at] = row + 1
        self.mask, self.slots = mask, slots

    def drop(self, top: str) -> bool:
        row = self.find(top)
        if row < 0 or not self.live[row]:
            return False
        self.live[row] = 0
        self.count -= 1
        return True

    def folders(self, row: int, side: int) -> tuple[tuple[str, ...], int]:
        """Side 0 (source) or 1 (mirror): the row's folders relative to it, and where their mtimes start."""
        mine = self.shapes[self.src_shape[row]]
        if side == 0:
            return mine, self.time_at[row]
        return self.shapes[self.dst_shape[row]], self.time_at[row] + len(mine)

    def record(self, row: int) -> dict[str, Any]:
        """The row as the journal's ``run`` line holds it: ``src``, ``dst`` (folder -> mtime), ``files``, ``cover``."""
        top, times = self.name(row), self.times
        sides = []
        for side in (0, 1):
            shape, at = self.folders(row, side)
            sides.append({f"{top}/{sub}" if sub else top: times[at + i] for i, sub in enumerate(shape)})
        return {"src": sides[0], "dst": sides[1], "files": self.files[row], "cover": self.covers[self.cover_of[row]]}

    def live_rows(self, cover: int | None = None) -> Iterator[int]:
        """The live rows (of one cover)."""
        live, cover_of = self.live, self.cover_of
        for row in range(len(live)):
            if live[row] and (cover is None or cover_of[row] == cover):
                yield row


class SyncState:
    """``partial`` copies (which source version each holds), ``done`` files (size, mtime, tail hash of the
    source version copied) of the runs not settled, and the settled runs (:class:`SettledRuns`)."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self.done: dict[str, bytes | tuple[Any, Any, Any]] = {}  # file -> _DONE packed, or as read (an odd one)
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
        if not isinstance(rel, str):
            return
        if op == "done":
            self.done[rel] = _pack_done(record)
            self.partial.pop(rel, None)
        elif op == "partial":
            self.partial[rel] = (record.get("size"), record.get("mtime"))
        elif op == "forget":
            self.done.pop(rel, None)
            self.partial.pop(rel, None)
        elif op == "run":
            self.runs.put(rel, record.get("src"), record.get("dst"), record.get("files"), record.get("cover"))
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
        """Rewrite the journal as one line per settled run, per file of the other runs and per partial copy
        (atomically, a thousand lines at a time), dropping the history.

        A settled run's files need no line each (its one ``run`` line stands for them): the journal a
        nothing-changed pass loads stays one line per run, not one per file."""
        if self.path is None or not self._dirty:
            return
        self.close()
        self._dirty = False
        runs = self.runs
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(self.path, "wb") as out:
            lines: list[str] = []
            for line in self._lines():
                lines.append(line)
                if len(lines) >= _LINES_AT_ONCE:
                    out.write("".join(lines).encode("utf-8"))
                    lines.clear()
            out.write("".join(lines).encode("utf-8"))
        done = self.done  # the settled runs' done records are gone from the journal: from memory too
        for rel in [rel for rel in done if rel.split("/", 1)[0] in runs]:
            del done[rel]

    def _lines(self) -> Iterator[str]:
        runs = self.runs
        for row in runs.live_rows():
            yield json_line({"op": "run", "path": runs.name(row), **runs.record(row)})
        for rel, packed in self.done.items():
            if rel.split("/", 1)[0] not in runs:
                yield _done_line(rel, packed)
        for rel, (size, mtime) in self.partial.items():
            yield json_line({"op": "partial", "path": rel, "size": size, "mtime": mtime})

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None


def _pack_done(record: dict[str, Any]) -> bytes | tuple[Any, Any, Any]:
    """A done record in 32 bytes when it is the usual one (int size and mtime, a 32-hex-digit tail hash), else
    its values as read."""
    size, mtime, tail = record.get("size"), record.get("mtime"), record.get("tail")
    if _is_int(size) and _is_int(mtime) and isinstance(tail, str) and len(tail) == 32:
        try:
            raw = bytes.fromhex(tail)
        except ValueError:
            pass
        else:
            if raw.hex() == tail:
                return _DONE.pack(size, mtime, raw)
    return size, mtime, tail


def _done_line(rel: str, packed: bytes | tuple[Any, Any, Any]) -> str:
    if isinstance(packed, bytes):
        size, mtime, raw = _DONE.unpack(packed)
        tail: Any = raw.hex()
    else:
        size, mtime, tail = packed
    return json_line({"op": "done", "path": rel, "size": size, "mtime": mtime, "tail": tail})
