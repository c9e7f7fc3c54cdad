"""What a lean look (``lt ls``'s table) keeps of its unchanged runs: their catalog keys, nothing built.

Why: a listing of 100,000 runs prints 50 rows; the catalog already holds every run's start and brief, so
the look keeps only which entries it checked (a key a run), counts their briefs (the main metric, the
default columns) and lets SQLite order them (:mod:`.newest`). A run with problems, a running run and a
run read again stay whole runs (their lines and verdicts are the look's own).

A table's first look writes an ended run's entry without its record (summary, meta...: ~90 % of the
catalog's bytes, which only a built run needs): the first command that builds the run reads its files, as
a plain read does, and the record is kept then (:func:`keep_record`, written in chunks and at exit, only
beside the entry it was read for)."""

from __future__ import annotations

import atexit
import os
import sqlite3
from pathlib import Path
from typing import Any

import orjson

__all__ = ["Kept", "KEPT", "exact", "record_parts", "keep_record", "flush_records"]

KEPT: Any = object()  # Catalog.run's answer for a run read again and kept in the catalog, not built


class Kept:
    """The entries one lean look checked and found right (``keys``), with their briefs counted."""

    __slots__ = ("root", "keys", "inos", "dev", "briefs", "sourced", "spoilt", "rows", "records", "feed")

    def __init__(self, root: str, records: bool = True) -> None:
        self.root = root  # absolute
        self.records = records  # write the records of the runs read (else their entries only)
        self.keys: dict[str, str] = {}  # key -> the folder's stat the look found it under (the entry's)
        self.inos: set[int] = set()  # the inodes of every run folder found on the root's device
        try:
            self.dev: int | None = os.stat(root).st_dev  # runs on another device (a mount) are built
        except OSError:
            self.dev = None
        self.briefs: dict[bytes, int] = {}  # a brief's bytes -> how many kept runs have it
        self.sourced = False  # some kept run is below a source folder (the "source" column)
        self.spoilt = ""  # why the look cannot be answered from the keys (then a whole look is made)
        self.rows: Any = None  # the look's RowSource
        self.feed: Any = None  # a filter's ConfigFeed: the configs of the folders listed, parsed beside the look

    def note(self, dev: int, ino: int) -> None:
        """A folder the look found (a run built or kept): the same folder twice spoils the keys (a plain
        read lists a folder reached through a link once)."""
        if dev == self.dev:
            if ino in self.inos:
                self.spoilt = "the same run folder twice"
            self.inos.add(ino)

    def take(self, key: str, folder: str, dev: int, brief: bytes, source: str) -> bool:
        """Keep ``key`` (its folder noted already) unless its folder is on another device than the root."""
        if dev != self.dev:
            return False
        self.keys[key] = folder
        self.briefs[brief] = self.briefs.get(brief, 0) + 1
        if source:
            self.sourced = True
        return True


def exact(value: Any, parsed: bool = False) -> bytes | None:
    """``value`` as JSON bytes if reading them back gives it unchanged (a NaN or a huge int does not).

    ``parsed``: ``value`` is what JSON files parsed to (dicts, lists, str, int, float, bool, None); orjson
    refuses a huge int and writes a non-finite float as ``null``: bytes without ``null`` are exact."""
    try:
        data = orjson.dumps(value)
        return data if parsed and b"null" not in data or orjson.loads(data) == value else None
    except (TypeError, orjson.JSONEncodeError):
        return None


def record_parts(info: Any) -> dict[str, Any]:
    """What the catalog's record of a run holds; no annotations, exports, problems: left out."""
    parts = {"s": info.summary, "m": info.meta}
    for part, value in (("a", info.annotations), ("e", info.exports), ("p", info.problems)):
        if value is not None and value != []:
            parts[part] = value
    return parts


_pending: list[tuple[bytes, str, str]] = []
_pending_db: list[Path] = []  # the catalog they go to
_CHUNK = 2000


def keep_record(db: Path, key: str, folder: str, info: Any) -> None:
    """Keep the record of a run just read from its files beside its entry in ``db``, if the entry is still
    the one made under ``folder`` (a later change of the folder makes the next look read it again anyway)."""
    data = exact(record_parts(info), parsed=True)
    if data is None:
        return
    if _pending_db and _pending_db[0] != db:
        flush_records()
    if not _pending:
        atexit.register(flush_records)  # (unregistered by each flush: once per batch)
        _pending_db[:] = [db]
    _pending.append((data, key, folder))
    if len(_pending) >= _CHUNK:
        flush_records()


def flush_records() -> None:
    """Write the kept records (never raises: a cache)."""
    if not _pending:
        return
    rows, db = list(_pending), _pending_db[0]
    _pending.clear()
    atexit.unregister(flush_records)
    try:
        conn = sqlite3.connect(f"{db.as_uri()}?mode=rw", uri=True, timeout=3.0)  # as the catalog waits
        try:
            with conn:
                conn.executemany("INSERT OR REPLACE INTO records SELECT path, ? FROM runs WHERE path = ? AND "
                                 "folder = ?", rows)
        finally:
            conn.close()
    except sqlite3.Error:
        pass
