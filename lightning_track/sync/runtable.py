"""The settled runs of lt-sync's journal as a table of arrays (:class:`SettledRuns`), ~80 bytes a run.

Why a table and not a dict of records: a pass where nothing changed loads one ``run`` line a run and needs,
of each, only its name, its folders' mtimes on both sides, its file count and its cover; as dicts that was
~1.5 KiB a run (100,000 runs: 150 MiB), here it is a few arrays. The journal's lines stay what they were
(:meth:`SettledRuns.line` writes them as ``json_line`` does): an older lt-sync reads them, and a record this
table does not take (not a run's record) leaves the run unsettled: listed, never skipped wrongly.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from typing import Any

import orjson

from ..folder.fileio import json_line

__all__ = ["SettledRuns"]

_NAME = ("utf-8", "surrogatepass")  # any str a listing gives (surrogate-escaped bytes too) and back, exactly
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
