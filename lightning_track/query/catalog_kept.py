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
import re
import sqlite3
from array import array
from collections.abc import Callable, Iterable
from operator import itemgetter
from pathlib import Path
from stat import S_ISLNK
from typing import Any

import orjson

from . import folder_stats
from .discover import skipped_name
from .folder_stats import ChildStats
from .kept_beside import Beside, answers_query, data_version

__all__ = ["Kept", "KeptKeys", "KEPT", "TAKEN", "dir_key", "storable", "exact", "record_parts", "keep_record",
           "flush_records"]

KEPT: Any = object()  # Catalog.run's answer for a run read again and kept in the catalog, not built
NO, YES, ASK, NO_CONFIG, DEEP = 0, 1, 2, 3, 4  # KeptKeys.states: a filter's answer for a row (two bits), DEEP
TAKEN = -2  # KeptKeys.place of a run read again and kept (not a row)
_DIGITS = bytes.maketrans(b"01234567", bytes(range(8)))  # kept_beside's states text -> states
_UNSURE = re.compile(rb"[\x02\x03\x06\x07]")  # states Python answers (ASK, NO_CONFIG; with DEEP or not)


class KeptKeys:
    """The ended entries under a lean look's root, ~40 bytes a run (no string, no tuple a run): a path's hash
    -> its row (open addressing), the hash of the folder stat its entry was made under, its brief (an index
    into the few distinct ones), its rowid, and whether the look kept it. The runs read again and kept
    (``taken``) are a dict: few. A filter's matches narrow both (:meth:`narrow_to`)."""

    __slots__ = ("mask", "slots", "paths", "folders", "brief_of", "rowids", "kept", "briefs", "count", "taken",
                 "states", "extra")

    def __init__(self) -> None:
        self.mask = 0
        self.slots = array("i", [0])  # row + 1 at a path hash's place, 0: free
        self.paths, self.folders, self.rowids = array("q"), array("q"), array("q")
        self.brief_of = array("I")
        self.kept = bytearray()
        self.briefs: list[bytes] = []  # the distinct briefs (a sweep's runs share a few)
        self.count = 0  # rows kept
        self.taken: dict[str, str] = {}  # key -> folder of a run read again and kept
        self.states: bytearray | None = None  # a filter's answer for each row (:meth:`load_answered`)
        self.extra: dict[int, tuple[Any, ...]] = {}  # row -> its catalog row, where Python answers

    def load(self, rows: Iterable[tuple[Any, ...]], size: int) -> None:
        """The root's ended entries (``size`` of them, about: more are left out, then read as new runs):
        (rowid, path, folder, brief) rows."""
        self._fill(rows, size, None, False, 0)

    def load_answered(self, rows: Iterable[tuple[Any, ...]], size: int, tagged: bool, below: int) -> None:
        """:meth:`load` of rows that carry a filter's answer (``Kept.load`` with a plan): (rowid, path, folder,
        brief, answer: :data:`NO`, :data:`YES`, :data:`ASK`: Python answers, :data:`NO_CONFIG`); a row's state:
        its answer, and :data:`DEEP` when its path has a "/" after ``below`` (the root's length + 1: a run
        below a source folder). The rows Python answers (and with ``tagged``, a filter on tags, those with
        tags) are kept whole in :attr:`extra`, their state's answer :data:`ASK`."""
        self.states = bytearray()
        self._fill(rows, size, self.states, tagged, below)

    def _fill(self, rows: Iterable[tuple[Any, ...]], size: int, states: bytearray | None, tagged: bool,
              below: int) -> None:
        capacity = 1 << max(4, (2 * size + 2).bit_length())  # at most half full
        mask, slots, paths, folders = capacity - 1, array("i", bytes(4 * capacity)), self.paths, self.folders
        index: dict[bytes, int] = {}
        briefs, brief_of, rowids, extra = self.briefs, self.brief_of, self.rowids, self.extra
        for row in rows:
            rowid, path, folder, brief = row[0], row[1], row[2], row[3]
            if len(paths) * 4 >= capacity * 3:
                break
            h = hash(path)
            at = h & mask
            found = slots[at]
            while found and paths[found - 1] != h:
                at = (at + 1) & mask
                found = slots[at]
            if found:  # two paths of one hash: neither kept (read as a plain read does)
                folders[found - 1] = 0
                continue
            if states is not None:
                state = row[4]
                if state & 2 or tagged and b'"t":true' in brief:
                    extra[len(paths)] = row
                    state = ASK
                if path.find("/", below) != -1:
                    state |= DEEP
                states.append(state)
            slots[at] = len(paths) + 1
            paths.append(h)
            folders.append(hash(folder) or 1)  # (0: never matches)
            b = index.get(brief)
            if b is None:
                b = index[brief] = len(briefs)
                briefs.append(brief)
            brief_of.append(b)
            rowids.append(rowid)
        self.mask, self.slots, self.kept = mask, slots, bytearray(len(paths))

    def take_answers(self, got: tuple[Any, ...], tagged: bool, conn: sqlite3.Connection) -> bool:
        """Take the states :mod:`.kept_beside`'s query gave (``got``: its rowids' and its states' texts) as
        :meth:`load_answered` makes them, if they are of exactly the loaded rows, in their order; else False
        (also when the rows Python answers, fetched whole by rowid, cannot be fetched: a cache, never a
        reason to give the catalog up)."""
        ids, text = got[0] or "", (got[1] or "").encode()
        if len(text) != len(self.rowids) or text.translate(None, b"01234567") or ids != ",".join(map(str, self.rowids)):
            return False
        states = bytearray(text.translate(_DIGITS))
        asked = [m.start() for m in _UNSURE.finditer(states)]
        marked = {b for b, brief in enumerate(self.briefs) if b'"t":true' in brief} if tagged else ()
        if marked:
            asked = sorted({*asked, *(i for i, b in enumerate(self.brief_of) if b in marked)})
        if asked:
            try:
                rows = {row[0]: row for row in conn.execute(
                    "SELECT rowid, path, folder, brief FROM runs WHERE rowid IN (SELECT value FROM json_each(?))",
                    (orjson.dumps([self.rowids[i] for i in asked]).decode(),))}
            except sqlite3.Error:
                return False
            for i in asked:
                row = rows.get(self.rowids[i])
                if row is None or hash(row[1]) != self.paths[i] or (hash(row[2]) or 1) != self.folders[i]:
                    return False  # written again since: not the row loaded
                self.extra[i] = (*row, states[i] & 3)
                states[i] = ASK | states[i] & DEEP
        self.states = states
        return True

    def narrow_to(self, rows: list[int], taken: dict[str, str]) -> None:
        """Keep only ``rows`` (of the kept rows) and ``taken`` (of the runs read again): a filter's matches."""
        kept = bytearray(len(self.kept))
        for row in rows:
            kept[row] = 1
        self.kept, self.count, self.taken = kept, len(rows), taken

    def row(self, key: str) -> int:
        """``key``'s row, or -1."""
        h, mask, slots, paths = hash(key), self.mask, self.slots, self.paths
        at = h & mask
        row = slots[at]
        while row and paths[row - 1] != h:
            at = (at + 1) & mask
            row = slots[at]
        return row - 1

    def has(self, key: str, folder: str) -> bool:
        """Whether the look kept ``key`` with its entry made under ``folder`` (a later entry: not the one checked)."""
        return self.place(key, folder) != -1

    def place(self, key: str, folder: str) -> int:
        """Where :meth:`has` found ``key``: its row, :data:`TAKEN` (a run read again and kept), or -1: not kept."""
        taken = self.taken.get(key)
        if taken is not None:
            return TAKEN if taken == folder else -1
        row = self.row(key)
        return row if row >= 0 and self.kept[row] == 1 and self.folders[row] == (hash(folder) or 1) else -1

    def __contains__(self, key: str) -> bool:
        if key in self.taken:
            return True
        row = self.row(key)
        return row >= 0 and self.kept[row] == 1

    def __len__(self) -> int:
        return self.count + len(self.taken)

    def unkept(self) -> list[int]:
        """The rowids of the entries the look did not keep."""
        return [rowid for rowid, kept in zip(self.rowids, self.kept, strict=True) if not kept]


class Kept:
    """The entries one lean look checked and found right (``keys``), with their briefs counted."""

    __slots__ = ("root", "_keys", "real", "dev", "briefs", "sourced", "spoilt", "rows", "records", "feed", "plan",
                 "tagged", "beside", "stats")

    def __init__(self, root: str, records: bool = True) -> None:
        self.root = root  # absolute
        self.records = records  # write the records of the runs read (else their entries only)
        self._keys = KeptKeys()
        self.real = ""  # the root with its links resolved (on the first link met)
        try:
            self.dev: int | None = os.stat(root).st_dev  # runs on another device (a mount) are built
        except OSError:
            self.dev = None
        self.briefs: dict[bytes, int] = {}  # a brief's bytes -> how many kept runs have it
        self.sourced = False  # some kept run is below a source folder (the "source" column)
        self.spoilt = ""  # why the look cannot be answered from the keys (then a whole look is made)
        self.rows: Any = None  # the look's RowSource
        self.feed: Any = None  # a filter's ConfigFeed: the configs of the folders listed, parsed beside the look
        self.plan: Any = None  # a filter's filters_sql.Plan: answered for every entry as they are loaded
        self.tagged = False  # the filter asks a run's tags (a kept row with tags is built to be asked)
        self.beside = False  # the plan's answers came from the second connection (kept_beside), not the scan
        self.stats: ChildStats | None = None  # the root's children stat'ed by a helper (folder_stats)

    @property
    def keys(self) -> KeptKeys:
        """The kept runs: ``key in keys``, ``keys.has(key, folder)``, ``len(keys)``; a filter narrows them
        (:meth:`KeptKeys.narrow_to`)."""
        return self._keys

    def load(self, conn: sqlite3.Connection, prefix: str, db: Path | None = None, limit: int | None = None) -> None:
        """The root's ended entries, from the catalog (raises sqlite3.Error); with a :attr:`plan`, each with
        the filter's answer: asked beside the scan on a second connection to ``db`` (:mod:`.kept_beside`), or
        in the same scan (:meth:`KeptKeys.load_answered`). A root of many entries has its children stat'ed
        by a helper meanwhile (:mod:`.folder_stats`; ``limit``: the catalog's settled time, ns)."""
        where = ("path >= ? AND path < ? AND ended", (prefix + "/", prefix + "0"))
        size = conn.execute(f"SELECT count(*) FROM runs WHERE {where[0]}", where[1]).fetchone()[0]
        if size >= folder_stats.FROM_ENTRIES and limit is not None and self.dev is not None and self.stats is None:
            try:
                self.stats = ChildStats(prefix, limit, self.dev, skipped_name)
            except (OSError, ValueError, TypeError):  # (no interpreter to start: the look stats its folders itself)
                pass
        plain = f"SELECT rowid, path, folder, brief FROM runs WHERE {where[0]} ORDER BY path"
        if self.plan is not None:
            below = len(self.root.rstrip("/")) + 1
            if db is not None:
                keys, version = KeptKeys(), data_version(conn)
                beside = Beside(db, answers_query(self.plan, prefix, below, self._answer()))
                try:
                    keys.load(conn.execute(plain, where[1]), size)
                except BaseException:
                    beside.cancel()
                    raise
                got = beside.result()
                if got is not None and data_version(conn) == version and keys.take_answers(got, self.tagged, conn):
                    self._keys, self.beside = keys, True
                    return
            try:
                self._keys.load_answered(conn.execute(*self._answered(prefix)), size, self.tagged, below)
                return
            except sqlite3.Error:  # (a kept config SQLite cannot read as JSON): the filter asked in Python
                self._keys, self.plan = KeptKeys(), None
        self._keys.load(conn.execute(plain, where[1]), size)

    def _answer(self) -> str:
        """The SQL of a row's answer (:data:`YES`, :data:`NO`, :data:`ASK`, :data:`NO_CONFIG`) over the
        columns of the plan's ``extract`` and ``c`` (the run has a kept config)."""
        return f"CASE WHEN c THEN coalesce({self.plan.decision}, {ASK}) ELSE {NO_CONFIG} END"

    def _answered(self, prefix: str) -> tuple[str, list[Any]]:
        """The query of :meth:`load` with the plan's answer: each config's asked values taken once (a subquery
        SQLite does not flatten), the answer and the state's bits over them."""
        runs, params = self.plan.select("runs.rowid AS r, path, folder, brief, config IS NOT NULL AS c",
                                        "path >= ? AND path < ? AND ended", [prefix + "/", prefix + "0"])
        return f"SELECT r, path, folder, brief, {self._answer()} FROM {runs}", params

    def unkept(self, conn: sqlite3.Connection) -> list[str]:
        """The paths of the root's ended entries the look did not keep (raises sqlite3.Error)."""
        rowids = self._keys.unkept()
        if not rowids:
            return []
        return [row[0] for row in conn.execute(
            "SELECT path FROM runs WHERE rowid IN (SELECT value FROM json_each(?)) AND path >= ? AND path < ?",
            (orjson.dumps(rowids), self.root + "/", self.root + "0"))]

    def linked(self, path: str) -> None:
        """``path`` (a run or source folder below the root) is a link: one that leads back into the root (or
        above it) can show a run folder twice, which a plain read lists once: the keys are spoilt then."""
        target = os.path.realpath(path)
        if not self.real:
            self.real = os.path.realpath(self.root)
        root = self.real
        if target == root or target.startswith(root.rstrip("/") + "/") or root.startswith(target.rstrip("/") + "/"):
            self.spoilt = "the same run folder twice"

    def take(self, key: str, folder: str, dev: int, brief: bytes, source: str) -> bool:
        """Keep ``key`` (a run read again) unless its folder is on another device than the root."""
        if dev != self.dev:
            return False
        self._keys.taken[key] = folder
        self.briefs[brief] = self.briefs.get(brief, 0) + 1
        if source:
            self.sourced = True
        return True

    def claim(self, names: Iterable[str], prefix: str, found: str, source: str, limit: int,
              known: dict[str, tuple[Any, ...]], claimed: Callable[[str, os.stat_result], Any],
              conn: sqlite3.Connection) -> list[Any]:
        """:meth:`~.catalog.Catalog.claim` in a lean look (``names``: an iterator, maybe of a folder being
        listed): an unchanged ended run without problems on the root's device is kept by its row; one on
        another device or with problems (its lines are the look's: brief_of writes "p":true, no spaces) is
        answered ``(path as found, source, claimed)``, its entry put in ``known``; every other name None.
        Sorted by name. The root's names take the helper's stats (:attr:`stats`) where it has them. Raises
        sqlite3.Error."""
        keys, folder = self._keys, prefix.rstrip("/") or "/"
        if folder != self.root and os.path.islink(folder):  # a source folder that is a link
            self.linked(folder)
        mask, slots, paths, folders, kept, brief_of = keys.mask, keys.slots, keys.paths, keys.folders, keys.kept, \
            keys.brief_of
        briefs, counts, dev, lstat, out, count = keys.briefs, self.briefs, self.dev, os.lstat, [], 0
        stats = self.stats if prefix == self.root.rstrip("/") + "/" else None
        if stats is not None and stats.root() != _identity(self.root):  # (a root link changed since it listed)
            self.close()
            stats = None
        helper_key = stats.key if stats is not None else _no_key
        try:
            for name in names:
                key = prefix + name
                folder_key = helper_key(name)  # (asked of every name: the helper's listing kept in step with this one)
                h = hash(key)
                at = h & mask
                row = slots[at]
                while row and paths[row - 1] != h:  # KeptKeys.row, inlined (the loop of a look at 100,000 runs)
                    at = (at + 1) & mask
                    row = slots[at]
                if not row:
                    out.append((name, None))
                    continue
                row -= 1
                st = None
                if not folder_key:  # not stat'ed by the helper (or no helper): here
                    try:
                        st = lstat(key)
                        if S_ISLNK(st.st_mode):
                            self.linked(key)
                            st = os.stat(key)
                    except OSError:
                        out.append((name, None))
                        continue
                    folder_key = f"{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:{st.st_dev}"  # dir_key, inlined
                    if max(st.st_mtime_ns, st.st_ctime_ns) >= limit:
                        out.append((name, None))
                        continue
                if folders[row] != (hash(folder_key) or 1):
                    out.append((name, None))
                    continue
                brief = briefs[brief_of[row]]
                if (st is None or st.st_dev == dev) and b'"p":true' not in brief:
                    if not kept[row]:
                        kept[row] = 1
                        count += 1
                        counts[brief] = counts.get(brief, 0) + 1
                        self.sourced = self.sourced or bool(source)
                    continue
                if st is None:  # a run with problems the helper stat'ed: its stat_result, here
                    try:
                        st = lstat(key)
                    except OSError:
                        out.append((name, None))
                        continue
                    if dir_key(st) != folder_key:
                        out.append((name, None))  # changed since the helper's stat: read again
                        continue
                start = conn.execute("SELECT start FROM runs WHERE path = ?", (key,)).fetchone()  # (few such runs)
                known[key] = (folder_key, "", "", 1, start and start[0], brief)  # as Catalog.load_root's ended entry
                out.append((name, (found + name, source, claimed(key, st))))
        finally:
            if stats is not None:
                self.close()
        keys.count += count
        out.sort(key=itemgetter(0))
        return out

    def close(self) -> None:
        """Stop the helper of a look that ends before its root's names were claimed."""
        if self.stats is not None:
            self.stats.close()
            self.stats = None


def _no_key(name: str) -> str:
    return ""


def dir_key(stat: os.stat_result) -> str:
    """A folder's stat as the catalog keeps it: the entry was read under it (mtime, ctime, inode, device)."""
    return f"{stat.st_mtime_ns}:{stat.st_ctime_ns}:{stat.st_ino}:{stat.st_dev}"


def _identity(path: str) -> str:
    """The folder at ``path`` as folder_stats' helper names the one it listed."""
    try:
        st = os.stat(path)
    except OSError:
        return "?"
    return f"{st.st_dev}:{st.st_ino}"


def storable(path: str) -> bool:
    """Whether SQLite can hold ``path`` (a name that is not UTF-8 comes as surrogates, which it refuses)."""
    try:
        path.encode()
        return True
    except UnicodeEncodeError:
        return False


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
