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
an older's), and it is read and rewritten a line at a time. The ``done`` lines (one a file of the runs not
settled: the live runs, tens of thousands of files on a busy server) are not kept in memory at all: nothing
a pass decides reads them, and a compaction carries the last one of each file over from the journal itself.
"""

from __future__ import annotations

import hashlib
import os
from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

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
_RUN_LINE = b'{"op":"run",'  # how this version (and the one before) starts a run line: skipped unread
_LINES_AT_ONCE = 1000  # lines of a compaction joined into one write


def _is_state_record(record: Any) -> bool:
    return isinstance(record, dict) and record.get("op") in _OPS and isinstance(record.get("path"), str)


_BIG = 1 << 63  # what an array of int64 holds
_OWN = ("",)  # the shape of a run with no folder inside
_OWN_LINE = b'{"op":"run","path":"%s","src":{"%s":%d},"dst":{"%s":%d},"files":%d,"cover":%s}\n'  # such a run's line


def _is_int(value: Any) -> bool:
    return type(value) is int and -_BIG <= value < _BIG


class SettledRuns:
    """The settled runs: ``name -> (src folders' mtimes, dst folders' mtimes, files, cover)``, ~80 bytes a run.

    No dict, tuple or string a run: a row is the name's hash (rows found by open addressing) and its bytes (in
    one blob), its kind (an index into the few distinct (source folders, mirror folders, cover): a run's folders
    relative to it, which runs of one kind share), its folders' mtimes in one array (the source's, then the
    mirror's) and its file count. A dropped run (``unrun``) keeps its row, not live, until the table is built
    again (a compaction)."""

    __slots__ = ("mask", "slots", "hashes", "ends", "blob", "kind_of", "time_at", "times", "files", "live", "count",
                 "shapes", "shape_ids", "kinds", "kind_ids", "covers", "cover_ids", "deep",
                 "shape_keys")

    def __init__(self) -> None:
        self.mask = 15
        self.slots = array("i", bytes(4 * 16))  # row + 1 at a name hash's place, 0: free
        self.hashes = array("q")
        self.ends = array("I", [0])  # row i's name is blob[ends[i]:ends[i + 1]]
        self.blob = bytearray()
        self.kind_of = array("I")
        self.time_at = array("I")  # the row's first mtime in ``times``
        self.times = array("q")
        self.files = array("q")
        self.live = bytearray()
        self.count = 0  # live rows
        self.shapes: list[tuple[str, ...]] = []  # sorted folders relative to the run ("": the run's own folder)
        self.shape_ids: dict[tuple[str, ...], int] = {}
        self.kinds: list[tuple[int, int, int]] = []  # (source shape, mirror shape, cover)
        self.kind_ids: dict[tuple[int, int, int], int] = {}
        self.covers: list[str] = []
        self.cover_ids: dict[str, int] = {}
        self.deep = False  # some shape has a folder below the run's own
        self.shape_keys: dict[int, list[bytes]] = {}  # a shape's keys as JSON text (journal lines written)

    def __len__(self) -> int:
        return self.count

    @property
    def rows(self) -> int:
        return len(self.hashes)

    def find(self, name: str) -> int:
        """``name``'s row (live or not), -1 when it has none."""
        return self._find(name, hash(name))

    def _find(self, name: str, h: int) -> int:
        mask, slots, hashes = self.mask, self.slots, self.hashes
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
        return self.cover_ids.get(cover, -1)

    def cover(self, row: int) -> int:
        """The row's cover index."""
        return self.kinds[self.kind_of[row]][2]

    def _shape(self, top: str, folders: Any) -> tuple[int, list[int]] | None:
        """A side's folders as (shape index, their mtimes in the shape's order: the run's own first, ``""`` sorting
        first); None when not a run's record."""
        if type(folders) is not dict:
            return None
        if len(folders) == 1:  # the run's own folder only: the usual run's shape, no sort
            mtime = folders.get(top)
            if type(mtime) is not int or not -_BIG <= mtime < _BIG:
                return None
            index = self.shape_ids.get(_OWN)
            return (self._new_shape(_OWN) if index is None else index), [mtime]
        if not _is_int(folders.get(top)):
            return None
        cut, inner = len(top) + 1, top + "/"
        items = []
        for rel, mtime in folders.items():
            if type(rel) is not str or not _is_int(mtime):
                return None
            if rel == top:
                items.append(("", mtime))
            elif rel.startswith(inner):
                items.append((rel[cut:], mtime))
            else:
                return None
        items.sort()
        shape = tuple(sub for sub, _ in items)
        index = self.shape_ids.get(shape)
        return (self._new_shape(shape) if index is None else index), [mtime for _, mtime in items]

    def _new_shape(self, shape: tuple[str, ...]) -> int:
        index = self.shape_ids[shape] = len(self.shapes)
        self.shapes.append(shape)
        self.deep = self.deep or len(shape) > 1
        return index

    def put(self, top: str, src: Any, dst: Any, files: Any, cover: Any) -> bool:
        """Record ``top`` settled (again); False (nothing recorded) for what is not a settled run's record."""
        if type(cover) is not str or type(top) is not str or not top or "/" in top:
            return False
        mine = self._shape(top, src)
        theirs = self._shape(top, dst) if mine is not None else None
        if theirs is None:
            return False
        assert mine is not None
        cover_index = self.cover_ids.get(cover)
        if cover_index is None:
            cover_index = self.cover_ids[cover] = len(self.covers)
            self.covers.append(cover)
        kind = (mine[0], theirs[0], cover_index)
        kind_index = self.kind_ids.get(kind)
        if kind_index is None:
            kind_index = self.kind_ids[kind] = len(self.kinds)
            self.kinds.append(kind)
        files = files if type(files) is int and 0 <= files < _BIG else 0
        times = self.times
        h = hash(top)
        row = self._find(top, h)
        if row < 0:  # a new row: each column appended to
            row = len(self.hashes)
            if (row + 1) * 2 > self.mask + 1:  # at most half full
                self._grow()
            mask, slots = self.mask, self.slots
            at = h & mask
            while slots[at]:
                at = (at + 1) & mask
            slots[at] = row + 1
            self.hashes.append(h)
            self.blob += top.encode(*_NAME)
            self.ends.append(len(self.blob))
            self.kind_of.append(kind_index)
            self.time_at.append(len(times))
            self.files.append(files)
            self.live.append(1)
        else:  # again: its mtimes appended anew (the old ones stay, unused, until a compaction)
            if self.live[row]:
                self.count -= 1
            self.kind_of[row], self.time_at[row], self.files[row], self.live[row] = kind_index, len(times), files, 1
        times.extend(mine[1])
        times.extend(theirs[1])
        self.count += 1
        return True

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
        src, dst, _ = self.kinds[self.kind_of[row]]
        mine = self.shapes[src]
        if side == 0:
            return mine, self.time_at[row]
        return self.shapes[dst], self.time_at[row] + len(mine)

    def record(self, row: int) -> dict[str, Any]:
        """The row as the journal's ``run`` line holds it: ``src``, ``dst`` (folder -> mtime), ``files``, ``cover``."""
        top, times = self.name(row), self.times
        sides = []
        for side in (0, 1):
            shape, at = self.folders(row, side)
            sides.append({f"{top}/{sub}" if sub else top: times[at + i] for i, sub in enumerate(shape)})
        return {"src": sides[0], "dst": sides[1], "files": self.files[row], "cover": self.covers[self.cover(row)]}

    def line(self, row: int) -> bytes:
        """The row's journal line (``{"op":"run",...}``), as ``json_line`` writes it, made from its parts' JSON."""
        try:
            name = orjson.dumps(self.name(row))[1:-1]
        except orjson.JSONEncodeError:  # not UTF-8 (surrogates): as json_line has it
            return json_line({"op": "run", "path": self.name(row), **self.record(row)}).encode("utf-8")
        src, dst, cover = self.kinds[self.kind_of[row]]
        at, times, files = self.time_at[row], self.times, self.files[row]
        if src == dst and len(self.shapes[src]) == 1:  # the usual run: its own folder only
            return _OWN_LINE % (name, name, times[at], name, times[at + 1], files, orjson.dumps(self.covers[cover]))
        sides = []
        for shape in (src, dst):
            keys = self._keys(shape)
            sides.append(b",".join(b'"%s%s":%d' % (name, key, times[at + i]) for i, key in enumerate(keys)))
            at += len(keys)
        return b'{"op":"run","path":"%s","src":{%s},"dst":{%s},"files":%d,"cover":%s}\n' % (
            name, sides[0], sides[1], files, orjson.dumps(self.covers[cover]))

    def _keys(self, shape: int) -> list[bytes]:
        """A shape's folders as the JSON text after the run's name in a key (``""``, ``/tensorboard_logs``...)."""
        keys = self.shape_keys.get(shape)
        if keys is None:
            keys = [orjson.dumps("/" + sub)[1:-1] if sub else b"" for sub in self.shapes[shape]]
            self.shape_keys[shape] = keys
        return keys

    def live_rows(self, cover: int | None = None) -> Iterator[int]:
        """The live rows (of one cover)."""
        live, kind_of = self.live, self.kind_of
        if cover is None:
            yield from (row for row in range(len(live)) if live[row])
            return
        mine = {i for i, kind in enumerate(self.kinds) if kind[2] == cover}
        for row in range(len(live)):
            if live[row] and kind_of[row] in mine:
                yield row


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
            last.put(path, number, op == "done" and path.split("/", 1)[0] not in runs)
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


class _LastDone:
    """Each file's last done-or-forget line of the journal, ~24 bytes a file: the path's hash -> its line number
    and whether it was a done line (open addressing in two arrays). Two paths of one hash keep the later line of
    the two: a done line lost from the journal, which no pass reads for a decision (the mirror is re-listed)."""

    __slots__ = ("mask", "hashes", "lines", "count")

    def __init__(self) -> None:
        self.mask, self.hashes, self.lines, self.count = 15, array("q", bytes(8 * 16)), array("q", bytes(8 * 16)), 0

    def _at(self, h: int) -> int:
        mask, hashes = self.mask, self.hashes
        at = h & mask
        while hashes[at] and hashes[at] != h:
            at = (at + 1) & mask
        return at

    def put(self, path: str, number: int, done: bool) -> None:
        h = hash(path) or 1
        at = self._at(h)
        if not self.hashes[at]:
            self.count += 1
        self.hashes[at], self.lines[at] = h, number * 2 + done
        if self.count * 2 > self.mask + 1:
            hashes, lines, size = self.hashes, self.lines, (self.mask + 1) * 2
            self.mask, self.hashes, self.lines = size - 1, array("q", bytes(8 * size)), array("q", bytes(8 * size))
            for i, h in enumerate(hashes):
                if h:
                    at = self._at(h)
                    self.hashes[at], self.lines[at] = h, lines[i]

    def kept(self, lines: int) -> bytearray:
        """A bit for each of ``lines`` journal lines: set for each file's last line when it is a done line to keep."""
        keep = bytearray((lines + 7) // 8)
        for h, line in zip(self.hashes, self.lines, strict=True):
            if h and line & 1:
                number = line >> 1
                keep[number >> 3] |= 1 << (number & 7)
        return keep
