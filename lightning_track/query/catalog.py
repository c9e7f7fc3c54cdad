"""A catalog of runs in the user's cache, so a look at 10,000 runs does not open 30,000 files.

Why: ``lt ls``, ``load_runs`` and ``lt report`` read every run's ``summary.json``, ``meta.json`` (and
``annotations.json``) and list every run folder; at 10,000 runs that is seconds, at 100,000 a minute, and
almost none of it changed since the last look. The catalog keeps, per run folder, what those reads gave
(the parsed files, their problems, the folder's names, the flattened config once something asked for it)
with the ``stat`` of everything they came from, and as columns what a listing needs of every run (start,
ended or not, the best metrics' names, tags/exports/problems present: :mod:`.catalog_rows`). A later look
stats each run folder; an ended run whose folder did not change is taken as kept (why that cannot miss
an atomic write: :meth:`Catalog.lister`), a running run's files are stat'ed too, and only what changed is
read again: a file atomically replaced has a new inode and changes the folder's times; a running run's
file written in place, or copied over with its old mtime kept (``cp -p``, a mirror), still changes its
``ctime``, which nobody can set. Values written within :data:`RACY_S` of being read are not kept (a
coarse clock could give the next write the same times), so a run being written is read again.

Format: SQLite (the standard library's) in WAL mode, one file per catalog version in
:func:`~lightning_track.vocabulary.cache_root` (never in a runs folder: mirrors and other people's runs
may be read-only, and a run folder holds what its run wrote). SQLite because a crash mid-write or two
``lt ls`` writing at once cannot tear it (transactions), and a lookup of 100,000 entries is one query.
A damaged catalog is deleted and built again, one from another version is emptied, an unwritable one is
passed by; each with at most one warning line. Nothing in it is trusted without the stat check: it can
make a read faster, never different.
"""

from __future__ import annotations

import atexit
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from stat import S_ISDIR
from typing import Any

from ..folder.exports import EXPORT_RECORDS
from ..folder.layout import RunLayout
from ..vocabulary import RUNNING, cache_root
from .catalog_kept import KEPT, Kept, flush_records, record_parts, storable
from .catalog_kept import dir_key as _dir_key
from .catalog_kept import exact as _exact
from .catalog_rows import CatalogRun, RowSource, brief_of

__all__ = ["Catalog", "Claimed", "open_catalog", "catalog_path", "stat_key", "flush_configs", "last_look",
           "keep_config", "keep_frame", "RACY_S", "VERSION"]

VERSION = 3
RACY_S = 2.0  # times this close to the read may be shared by the next write on a coarse-clock filesystem
_KEPT_RUN = frozenset({RunLayout.SUMMARY, RunLayout.METRICS_JSONL})  # the lister's "a run, as kept"
TRACKED = (RunLayout.SUMMARY, RunLayout.META, RunLayout.ANNOTATIONS, *EXPORT_RECORDS)  # the files a listing reads
_CHUNK = 2000  # entries written at once during a look
_BUSY_MS = 3000  # another lt ls writing: wait this long, then leave the catalog as it is

# Narrow rows a look reads for every run, the wide parts in tables of their own (one row each, deleted
# with the run's entry): a scan of 100,000 runs then reads ~25 MB of pages, not the ~400 MB of records.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    path TEXT PRIMARY KEY,  -- the run folder, absolute
    folder TEXT NOT NULL,   -- the folder's stat the record was read under
    names TEXT NOT NULL,    -- the folder's names, NUL-separated
    files TEXT NOT NULL,    -- the stat of each file read (TRACKED)
    ended INTEGER NOT NULL, -- 1: the summary does not say running (the verdict needs no clock)
    start REAL,             -- RunInfo.start: a listing's order
    brief BLOB NOT NULL     -- what a listing needs of every run (catalog_rows.brief_of)
);
CREATE INDEX IF NOT EXISTS runs_by_start ON runs(coalesce(start, 0.0));  -- lt ls's order (newest.py)
-- {"s": summary, "m": meta, "a": annotations, "e": exports, "p": problems}: "a" left out when None, "e"/"p" when []
CREATE TABLE IF NOT EXISTS records (path TEXT PRIMARY KEY, record BLOB NOT NULL);
-- the flattened config.yaml and its stat when kept
CREATE TABLE IF NOT EXISTS configs (path TEXT PRIMARY KEY, config_stat TEXT NOT NULL, config BLOB NOT NULL);
-- an ended run's load_runs row (catalog_rows.frame_row), kept by the first load_runs
CREATE TABLE IF NOT EXISTS frames (path TEXT PRIMARY KEY, frame BLOB NOT NULL);
"""
_TABLES = ("runs", "records", "configs", "frames")


last_look = {"runs": 0, "read": 0}  # the last look's runs and how many were read from their files


def catalog_path() -> Path:
    return Path(cache_root()) / f"catalog-v{VERSION}.sqlite"


def stat_key(stat: os.stat_result) -> str:
    """What changes whenever a file's content can have: size, mtime, ctime (unsettable), inode."""
    return f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}:{stat.st_ino}"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class Claimed:
    """An unchanged ended run found by :meth:`Catalog.claim`: its key and its folder's identity."""

    __slots__ = ("key", "identity")

    def __init__(self, key: str, stat: os.stat_result) -> None:
        self.key, self.identity = key, (stat.st_dev, stat.st_ino)


class Catalog:
    """One open catalog for one look (a ``find_runs`` call); :meth:`save` writes what the look learnt."""

    def __init__(self, conn: sqlite3.Connection, path: Path, problems: list[str]) -> None:
        self.conn, self.path, self.problems = conn, path, problems
        self.started = time.time()
        self._limit = int((self.started - RACY_S) * 1e9)  # times before this are settled
        self._known: dict[str, tuple[Any, ...]] = {}  # path -> (folder, names, files, ended, start, brief)
        self._parents: dict[str, str] = {}
        self._stats: dict[str, tuple[str, os.stat_result]] = {}  # folder as found -> (absolute, stat)
        self._put: list[tuple[str, str, str, str, bytes]] = []
        self._gone: list[str] = []  # entries to drop that no look covered (write_through)
        self._seen: set[str] = set()
        self._trusted: set[str] = set()  # ended runs whose folder the lister found unchanged
        self._broken = False
        self._unwritten = False  # a write failed: the rest of this look's entries are not written either
        self._read = 0
        self.lean: Kept | None = None  # a lean look's kept keys (catalog_kept), set by find_runs

    # -- reading ------------------------------------------------------------------------------------
    def _key(self, path: Path) -> str:
        """The absolute path (one ``abspath`` per parent folder, not per run)."""
        head, name = os.path.split(str(path))
        parent = self._parents.get(head)
        if parent is None:
            parent = self._parents[head] = os.path.abspath(head or os.curdir)
        return os.path.join(parent, name)

    def load_root(self, root: str | Path) -> None:
        """Every entry under ``root`` in one query, without the records (fetched for the runs used)."""
        prefix = os.path.abspath(root)
        if self._broken:
            return
        try:
            # an ended run's names and files are never compared (its folder alone says): not fetched; a lean
            # look's ended runs below the root are kept compactly (catalog_kept.KeptKeys), not as tuples
            lean = "" if self.lean is None else " AND NOT ended"
            if lean:
                self.lean.load(self.conn, prefix, self.path, self._limit)
            rows = self.conn.execute("SELECT path, folder, CASE WHEN ended THEN '' ELSE names END, CASE WHEN ended "
                                     "THEN '' ELSE files END, ended, start, brief FROM runs WHERE "
                                     f"path = ? OR (path >= ? AND path < ?{lean})",
                                     (prefix, prefix + "/", prefix + "0")).fetchall()
        except sqlite3.Error as exc:
            self._damaged(exc)
            return
        for row in rows:
            self._known[row[0]] = row[1:]

    def lister(self, folder: Path) -> set[str] | frozenset[str] | None:
        """A folder's names: from the catalog when the folder did not change, else ``os.listdir``.

        An ended run's folder found unchanged is taken as it was kept, its files not looked at (one stat
        a run instead of four): every writer of a run replaces its files atomically (a new file renamed
        over the old), which changes the folder's mtime and ctime, and a copy that sets the old mtime back
        (``cp -p``, rsync) still changes the ctime, which nobody can set. A writer in place (an editor that
        truncates and writes, ``rsync --inplace``) leaves the folder as it was: after one, ``touch RUN``
        makes the next look read it. A running run is checked file by file (its writers are live)."""
        key = self._key(folder)
        try:
            stat = os.stat(key)
        except OSError:
            return None
        if not S_ISDIR(stat.st_mode):
            return None
        self._stats[str(folder)] = (key, stat)
        entry = self._known.get(key)
        if entry is not None and entry[0] == _dir_key(stat) and self._settled(stat):
            if entry[3]:
                self._trusted.add(key)
                return _KEPT_RUN
            return set(entry[1].split("\0"))
        try:
            return set(os.listdir(key))
        except OSError:
            return None

    def claim(self, folder: Path, names: Iterable[str],
              source: str) -> list[tuple[str, tuple[str, str, Claimed] | None]]:
        """``(name, answer)`` for ``folder``'s ``names``, sorted: ``(path as found, source, Claimed)`` when it is an
        ended run the catalog holds whose folder did not change (the rule of :meth:`lister`), else None; no
        Path, no listing, one stat a run (one call a folder: this loop is most of a look at 100,000 runs).
        In a lean look (:attr:`lean`) such a run is kept by its key alone and left out of the answer."""
        shown = str(folder)
        parent = self._parents.get(shown)
        if parent is None:
            parent = self._parents[shown] = os.path.abspath(shown)
        prefix = f"{parent}/" if parent != "/" else "/"
        found = prefix if shown == parent else "" if shown == "." else f"{shown}/"  # a path as a plain read has it
        lean = self.lean
        if lean is not None:
            try:
                return lean.claim(names, prefix, found, source, self._limit, self._known, Claimed, self.conn)
            except sqlite3.Error as exc:  # (the look then answers as a whole look)
                self._damaged(exc)
                return []
        known, limit, stat, out = self._known, self._limit, os.stat, []
        for name in sorted(names):  # the answer in the walk's order
            key = prefix + name
            entry = known.get(key)
            if entry is None or not entry[3]:
                out.append((name, None))
                continue
            try:
                st = stat(key)
            except OSError:
                out.append((name, None))
                continue
            if entry[0] != f"{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:{st.st_dev}" or \
                    max(st.st_mtime_ns, st.st_ctime_ns) >= limit:  # _dir_key and _settled, inlined
                out.append((name, None))
                continue
            out.append((name, (found + name, source, Claimed(key, st))))
        return out

    def claimed(self, path: str, source: str, what: Claimed, rows: RowSource) -> CatalogRun:
        self._seen.add(what.key)
        return CatalogRun(path, what.key, source, self._known.pop(what.key), rows, True)

    def stat_of(self, path: Path) -> os.stat_result | None:
        """The folder's stat taken while listing (None when it was not listed through the catalog)."""
        found = self._stats.get(str(path))
        return None if found is None else found[1]

    def run(self, path: Path, source: str, names: set[str], read: Callable[[], Any], rows: RowSource | None, *,
            keep_recent: bool = False) -> Any:
        """The run at ``path``: a :class:`~.catalog_rows.CatalogRun` when its folder (an ended run) or its
        folder and files (a running one) are as they were when kept, else ``read()`` (a plain read), kept
        for next time. Without ``rows`` (a writer refreshing entries): None for an entry still right.

        ``keep_recent``: keep it even when written a moment ago, for the folder's only writer, which has
        finished writing it (see :func:`write_through`)."""
        key, stat = self._stats.pop(str(path), None) or (self._key(path), None)
        self._seen.add(key)
        entry = self._known.pop(key, None)
        if stat is None:  # (a trusted entry's folder was stat'ed by the lister)
            try:
                stat = os.stat(key)
            except OSError:
                return self._plain(read)
        if self.lean is not None and os.path.islink(key):
            self.lean.linked(key)
        if entry is not None and key in self._trusted:
            return None if rows is None else CatalogRun(str(path), key, source, entry, rows, True)
        settled = self._settled(stat)
        files = []
        for name in TRACKED:
            if name in names:
                try:
                    file_stat = os.stat(f"{key}/{name}")
                except OSError:
                    return self._plain(read)  # gone since the listing: the plain read says how
                files.append(f"{name}={stat_key(file_stat)}")
                settled = settled and self._settled(file_stat)
        files_key = ";".join(files)
        folder_key = _dir_key(stat)
        # an unchanged folder has the names it had (the lister gave them from the entry)
        if entry is not None and settled and entry[0] == folder_key and entry[2] == files_key:
            return None if rows is None else CatalogRun(str(path), key, source, entry, rows, False)
        info = read()
        self._read += 1
        info._config_sink = self.config_sink(key)
        if (settled or keep_recent) and storable(key):  # (a path that is not UTF-8 has no entry)
            ended, brief, lean = info.summary.get("status") != RUNNING, brief_of(info), self.lean
            # a lean look keeps the key of an ended run it read; a table's, without its record (catalog_kept)
            keep = lean is not None and rows is not None and ended and not info.problems
            record = None if keep and not lean.records else _exact(record_parts(info), parsed=True)
            if record is not None or keep and not lean.records:
                self._put.append((key, folder_key, "\0".join(sorted(names)), files_key, int(ended), info.start,
                                  brief, record))
                kept = keep and lean.take(key, folder_key, stat.st_dev, brief, source)
                if len(self._put) >= _CHUNK:
                    self._write()
                if kept:
                    return KEPT
        return info

    def _plain(self, read: Callable[[], Any]) -> Any:
        self._read += 1
        return read()

    def _settled(self, stat: os.stat_result) -> bool:
        return max(stat.st_mtime_ns, stat.st_ctime_ns) < self._limit

    def config_sink(self, key: str) -> Callable[[Any, os.stat_result, dict[str, Any], bytes | None], None]:
        def keep(_run: Any, stat: os.stat_result, flat: dict[str, Any], exact: bytes | None = None) -> None:
            keep_config(key, stat_key(stat), max(stat.st_mtime_ns, stat.st_ctime_ns), self._limit, exact, flat)

        return keep

    # -- writing ------------------------------------------------------------------------------------
    def save(self) -> None:
        """Write the entries read this time and forget runs gone from under the roots looked at."""
        last_look.update(runs=len(self._seen) + (len(self.lean.keys) if self.lean is not None else 0),
                         read=self._read)
        if not self._broken:
            gone = [p for p in self._known if p not in self._seen]  # entries no run took
            try:
                gone += [p for p in self.lean.unkept(self.conn) if p not in self._seen] if self.lean else []
            except sqlite3.Error as exc:
                self._damaged(exc)
            self._write(gone + self._gone)
        if self.lean is not None and self._unwritten and not self.lean.spoilt:
            self.lean.spoilt = "catalog not written"  # its keys name entries that are not there
        self.close()

    def _write(self, gone: list[str] = ()) -> None:
        """The entries read so far (chunks during a look: 100,000 records are never held at once), a chunk
        a transaction: a crash keeps whole entries or none."""
        put, self._put = self._put, []
        if self._broken or self._unwritten or not put and not gone:
            self._unwritten = self._unwritten or bool(put)
            return
        try:
            with self.conn:
                # a new record drops the kept config and row: they were made under the old folder
                for table in _TABLES:
                    self.conn.executemany(f"DELETE FROM {table} WHERE path = ?",
                                          [(p,) for p in gone] + [(entry[0],) for entry in put])
                self.conn.executemany("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?)", (p[:7] for p in put))
                self.conn.executemany("INSERT INTO records VALUES (?, ?)", ((p[0], p[7]) for p in put if p[7]))
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):  # another look writing: it keeps it warm
                self.problems.append(f"{self.path}: catalog not written ({_one_line(exc)}); the next look reads "
                                     "the run files again")
        except sqlite3.Error as exc:
            self._damaged(exc)
        self._unwritten = True

    def forget(self, paths: list[str]) -> None:
        """Drop these runs' entries at :meth:`save` (absolute paths)."""
        self._gone.extend(paths)

    def close(self) -> None:
        try:
            self.conn.close()
        except sqlite3.Error:
            pass

    def _damaged(self, exc: BaseException) -> None:
        if self._broken:
            return
        self._broken = True
        if self.lean is not None:
            self.lean.spoilt = self.lean.spoilt or "catalog damaged"
        self._known.clear()
        self.close()
        _remove(self.path)
        self.problems.append(f"{self.path}: catalog damaged ({_one_line(exc)}); deleted, runs read from their "
                             "files and the catalog built again on the next look")


def _remove(path: Path) -> None:
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
        try:
            name.unlink()
        except OSError:
            pass


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=_BUSY_MS / 1000, isolation_level=None, check_same_thread=False)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, VERSION):  # another version's layout under this name: start it over
            for table in _TABLES:
                conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # a cache: a power cut may lose the last look, never tear it
        conn.executescript(_SCHEMA)
        if version != VERSION:
            conn.execute(f"PRAGMA user_version = {VERSION}")
        conn.isolation_level = ""  # the writes of a look: one transaction
        return conn
    except BaseException:
        conn.close()
        raise


def open_catalog(problems: list[str]) -> Catalog | None:
    """The catalog, or None (with one line in ``problems``) when the cache cannot hold one."""
    path = catalog_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for older in range(1, VERSION):  # an earlier version's file is never read again: its space back
            _remove(path.with_name(f"catalog-v{older}.sqlite"))
        return Catalog(_connect(path), path, problems)
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            return None  # another look is creating it: read the files this once
        if not isinstance(exc, sqlite3.OperationalError) or "not a database" in str(exc) or "malformed" in str(exc):
            _remove(path)
            problems.append(f"{path}: catalog damaged ({_one_line(exc)}); built again from the run files")
            try:
                return Catalog(_connect(path), path, problems)
            except sqlite3.Error:
                return None
        problems.append(f"{path}: catalog not usable ({_one_line(exc)}); runs read from their files")
    except OSError as exc:
        problems.append(f"{path.parent}: catalog not usable ({_one_line(exc)}); runs read from their files")
    return None


# -- flattened configs (a filter on config.* asks for them lazily) and load_runs rows found after the look

_pending_configs: list[tuple[str, str, bytes]] = []
_pending_frames: list[tuple[bytes, str, str]] = []
_flush_registered = False


def _register_flush() -> None:
    global _flush_registered
    if not _flush_registered:
        _flush_registered = True
        atexit.register(flush_configs)


def keep_config(key: str, stat: str, changed_ns: int, limit_ns: int, data: bytes | None, flat: Any = None) -> None:
    """Keep a run's flattened config (``data``: its JSON; None: ``flat``'s, if exact) beside its entry at the next
    flush, if its file (``stat``: its stat key) last changed (``changed_ns``) before ``limit_ns``: settled."""
    if changed_ns < limit_ns and storable(key):
        data = data if data is not None else _exact(flat)
        if data is not None:
            _pending_configs.append((key, stat, data))
            _register_flush()


def keep_frame(key: str, folder: str, row: dict[str, Any]) -> None:
    """Keep an ended run's ``load_runs`` row beside its entry at the next flush, if the entry is still the
    one read under ``folder`` (built on the first ``load_runs``, so ``lt ls`` never pays for it)."""
    data = _exact(row)
    if data is not None:
        _pending_frames.append((data, key, folder))
        _register_flush()


def flush_configs() -> None:
    """Keep the configs (and load_runs rows, records) found since the last flush beside their runs' entries
    (never raises)."""
    flush_records()
    if not _pending_configs and not _pending_frames:
        return
    rows = [(stat, data, path) for path, stat, data in _pending_configs]
    frames = list(_pending_frames)
    _pending_configs.clear()
    _pending_frames.clear()
    try:
        conn = sqlite3.connect(f"{catalog_path().as_uri()}?mode=rw", uri=True, timeout=_BUSY_MS / 1000)
        try:
            conn.execute("PRAGMA synchronous=NORMAL")  # as a look's writes (_connect): no fsync of the WAL
            with conn:
                conn.executemany("INSERT OR REPLACE INTO configs SELECT path, ?, ? FROM runs WHERE path = ?", rows)
                conn.executemany("INSERT OR REPLACE INTO frames SELECT path, ? FROM runs WHERE path = ? AND "
                                 "folder = ? AND ended", frames)
        finally:
            conn.close()
    except sqlite3.Error:
        pass
