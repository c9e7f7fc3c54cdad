"""A run as the catalog listed it: what a listing sorts and chooses columns by, the rest on first use.

Why: at 100,000 runs, parsing every run's kept summary into a :class:`~.runs.RunInfo` (about 80 Python
objects) costs seconds and ~7 KiB a run, though ``lt ls`` prints 50 rows. A :class:`CatalogRun` holds
the catalog's columns (start, name, the best metrics' names, whether it has tags, exports, problems, an
ended run's status) and builds the full run, from the kept record, only when something else is asked
of it (a cell, a record, a filter on a field the columns lack). It answers every question a RunInfo
answers, with the same values: attributes it lacks are the built run's.
"""

from __future__ import annotations

import math
import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from stat import S_ISREG
from typing import Any

import orjson

from ..folder.layout import RunLayout
from .filters import MISSING
from .filters_sql import path_of, sayable

__all__ = ["CatalogRun", "RowSource", "brief_of", "frame_row"]

_NOT_CONFIG = ("best", "final", "summary", "meta")
_OWN = frozenset({"status", "name", "source", "start", "tag"})  # answered by CatalogRun.value itself
UNKNOWN: Any = object()  # RowSource.config_value: the kept config cannot say (read the run's config instead)
_ONE_BY_ONE = 64  # running runs' records asked for one by one before all come in one query
_RECORD = "folder, record, config_stat, config FROM runs JOIN records USING (path) LEFT JOIN configs USING (path)"


def brief_of(info: Any) -> bytes:
    """The columns a listing needs without the record: kept beside it when the entry is written."""
    return orjson.dumps({"b": info.metric_names("best"), "t": bool(info.tags), "x": bool(info.exports),
                         "p": bool(info.problems), "s": info.status})


def frame_row(run: Any) -> dict[str, Any]:
    """One run's row of :func:`~.frames.load_runs` (kept for an ended run: it needs no clock)."""
    row = run.record(metrics=False)
    row.pop("problems", None)
    row["start"], row["end"] = run.start, run.end
    for which in ("best", "final"):
        for key in run.metric_names(which):
            value = run.metric(which, key)
            row[f"{which}.{key}"] = value if isinstance(value, float) else math.nan
    return row


class RowSource:
    """Where the runs of one look get their kept records once the look is over (its own connection)."""

    def __init__(self, db: Path, build: Callable[..., Any], read: Callable[[Path, str], Any],
                 sink: Callable[[str], Any], fields: tuple[str, ...],
                 keep_frame: Callable[[str, str, dict[str, Any]], None]) -> None:
        self.db, self.build, self.read, self.sink, self.fields = db, build, read, sink, frozenset(fields)
        self.briefs: dict[bytes, dict[str, Any]] = {}  # a brief's bytes -> its columns, shared read-only
        self.config_names: dict[str, str] = {}  # a key asked of CatalogRun.value -> its config key, "" if none
        self.keep_frame = keep_frame
        self._conn: sqlite3.Connection | None = None
        self._bulk: dict[str, dict[str, tuple[str, bytes]]] = {}
        self._values: dict[str, dict[str, tuple[str, Any, str]]] = {}  # config key -> path -> (folder, value, stat)
        self._frames: dict[str, tuple[str, bytes, bytes | None]] | None = None
        self._running: dict[str, tuple[Any, ...]] | None = None
        self._asked = 0  # running runs' records asked for one at a time
        self.streamed = False  # runs built one at a time and let go (--json): never every running record at once
        self.given: dict[str, tuple[Any, ...]] = {}  # path -> a row of _RECORD fetched ahead (newest.py's stream)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = sqlite3.connect(f"{self.db.as_uri()}?mode=ro", uri=True, check_same_thread=False)
        return self._conn

    def record(self, path: str, folder: str, running: bool = False) -> tuple[bytes, str | None, bytes | None] | None:
        """The kept record, if the entry is still the one this look checked (same folder key). ``running``:
        the records of every running run come in one query on the first ask (``load_runs`` and ``--json``
        build each running run: a query a run cost more than building its row)."""
        try:
            if running and self._running is None:
                self._asked += 1  # (a table's few running rows: a query each, not every running run's record)
                if self._asked > _ONE_BY_ONE and not self.streamed:
                    self._running = {row[0]: row[1:] for row in self._connection().execute(
                        f"SELECT path, {_RECORD} WHERE NOT ended")}
            row = self._running.get(path) if running and self._running else self.given.pop(path, None)
            if row is None:
                row = self._connection().execute(f"SELECT {_RECORD} WHERE path = ?", (path,)).fetchone()
        except sqlite3.Error:
            return None
        return None if row is None or row[0] != folder else row[1:]

    def column(self, name: str, path: str, folder: str) -> bytes | None:
        """A settled run's kept ``config`` or ``frame`` (all of them fetched in one query, on the first ask)."""
        kept = self._bulk.get(name)
        if kept is None:
            kept = self._bulk[name] = {}
            try:
                for key, kept_folder, data in self._connection().execute(
                        f"SELECT path, folder, {name} FROM {name}s JOIN runs USING (path)"):
                    kept[key] = (kept_folder, data)
            except sqlite3.Error:
                pass
        found = kept.get(path)
        return found[1] if found is not None and found[0] == folder else None

    def config_value(self, key: str, path: str, folder: str, ended: bool = True) -> Any:
        """One flattened config value of a run as kept (MISSING: the run has no such key), or :data:`UNKNOWN`
        when the kept config cannot say. SQLite picks the key out of every kept config in one query, so a
        filter on ``model.lr`` parses one number a run, not 100,000 whole configs. A run not ``ended`` (its
        files checked one by one) has it only while its ``config.yaml`` has the stat it was kept under."""
        found = self.config_values(key).get(path)
        if found is None or found[0] != folder:
            return UNKNOWN
        return found[1] if ended or _config_stat(path) == found[2] else UNKNOWN

    def config_values(self, key: str) -> dict[str, tuple[str, Any, str]]:
        """Every kept config's value of ``key``: path -> (folder, value or MISSING, config_stat), fetched once."""
        kept = self._values.get(key)
        if kept is None:
            kept = self._values[key] = self._values_of(key)
        return kept

    def _values_of(self, key: str) -> dict[str, tuple[str, Any]]:
        if not sayable(key):  # not sayable as a JSON path: parsed whole
            return {}
        try:
            found = self._connection().execute("SELECT path, folder, config -> ?, config_stat FROM configs JOIN runs "
                                               "USING (path)", (path_of(key),)).fetchall()
        except sqlite3.Error:
            return {}
        texts = [row[2] for row in found if row[2] is not None]  # the value's own JSON text, as kept
        try:
            values = iter(orjson.loads(("[" + ",".join(texts) + "]").encode()))
        except orjson.JSONDecodeError:
            return {}
        return {path: (folder, MISSING if text is None else next(values), stat) for path, folder, text, stat in found}

    def frame_and_config(self, path: str, folder: str) -> tuple[bytes, bytes | None] | None:
        """A settled run's kept ``frame`` and ``config`` together (``load_runs``: every row in one query)."""
        if self._frames is None:
            try:
                self._frames = {key: (kept_folder, frame, config) for key, kept_folder, frame, config in
                                self._connection().execute(
                                    "SELECT path, folder, frame, config FROM frames JOIN runs USING (path) "
                                    "LEFT JOIN configs USING (path)")}
            except sqlite3.Error:
                self._frames = {}
        found = self._frames.get(path)
        return found[1:] if found is not None and found[0] == folder else None


class CatalogRun:
    """One run of a look through the catalog: cheap columns now, the full :class:`~.runs.RunInfo` on use.

    ``ended``: a run whose summary does not say ``running`` (its verdict does not depend on the time), whose
    folder the look found unchanged; its config can be taken as kept without a stat (see
    :meth:`~.catalog.Catalog.lister` for why an unchanged folder means unchanged files)."""

    __slots__ = ("_path", "_key", "source", "start", "_folder", "_brief", "_rows", "_info", "_ended",
                 "_parsed")

    def __init__(self, path: str, key: str, source: str, entry: tuple[Any, ...], rows: RowSource,
                 ended: bool) -> None:
        self._path = path  # as found (relative to a relative root), as a plain read gives it
        self._key = key  # absolute: the catalog's
        self.source = source
        self._folder, self.start, self._brief = entry[0], entry[4], entry[5]  # (folder, names, files, ended, ...)
        self._rows = rows
        self._info = None
        self._ended = ended
        self._parsed: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self._path.rpartition("/")[2]

    @property
    def path(self) -> Path:
        return Path(self._path)

    @property
    def info(self) -> Any:
        """The full run (built once, from the kept record; a plain read if the entry changed meanwhile)."""
        info = self._info
        if info is None:
            info = self._info = self.load()
        return info

    def load(self) -> Any:
        """The full run, not kept here (``lt ls --json`` builds one run at a time)."""
        if self._info is not None:
            return self._info
        kept = self._rows.record(self._key, self._folder, not self._ended)
        info = None
        if kept is not None:
            try:
                record = orjson.loads(kept[0])
                info = self._rows.build(Path(self._path), self.source, summary=record["s"], meta=record["m"],
                                        annotations=record.get("a"), exports=record.get("e") or [],
                                        problems=record.get("p") or [])  # empty parts are not kept
            except (orjson.JSONDecodeError, KeyError, TypeError):
                info = None
            if info is not None and kept[1] is not None and kept[2] is not None:
                info._config_hint = (kept[1], kept[2])
        if info is None:
            info = self._rows.read(Path(self._path), self.source)
            if self._ended:  # an entry written without its record (a table's first look): kept now
                from .catalog_kept import keep_record

                keep_record(self._rows.db, self._key, self._folder, info)
        info._config_sink = self._rows.sink(self._key)
        return info

    def drop(self) -> None:
        """Forget the built run (its memory), keeping the columns."""
        self._info = None

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(self.info, attr)

    def __repr__(self) -> str:
        return f"CatalogRun({self._path!r})"

    # -- what a listing asks of every run, from the columns -------------------------------------------
    def _columns(self) -> dict[str, Any]:
        parsed = self._parsed
        if parsed is None:  # runs of a sweep share their columns: each distinct brief parsed once, never changed
            parsed = self._parsed = self._rows.briefs.get(self._brief)
            if parsed is None:
                parsed = self._parsed = self._rows.briefs[self._brief] = orjson.loads(self._brief)
        return parsed

    @property
    def status(self) -> str:
        return self._columns()["s"] if self._ended and self._info is None else self.info.status

    @property
    def tags(self) -> list[str]:
        return self.info.tags if self._info is not None or self._columns()["t"] else []

    @property
    def exports(self) -> list[dict[str, Any]]:
        return self.info.exports if self._info is not None or self._columns()["x"] else []

    @property
    def problems(self) -> list[str]:
        # brief_of's bytes say "p":true for a run with problems (orjson writes no spaces): no parse per run
        return self.info.problems if self._info is not None or b'"p":true' in self._brief else []

    def metric_names(self, which: str = "final") -> list[str]:
        if which == "best" and self._info is None:
            return list(self._columns()["b"])
        return self.info.metric_names(which)

    @property
    def config(self) -> dict[str, Any]:
        if self._info is None and self._ended:
            data = self._rows.column("config", self._key, self._folder)
            if data is not None:
                try:
                    flat = orjson.loads(data)
                except orjson.JSONDecodeError:
                    flat = None
                if isinstance(flat, dict):
                    return flat
        return self.info.config

    def config_pending(self, keys: Sequence[str] = ()) -> tuple[Any, str, Any] | None:
        """As :meth:`~.runs.RunInfo.config_pending`, for a filter on ``keys``: None when the catalog has the
        values of the config keys among them (or there are none), else the built run's."""
        if self._info is None:
            names = [name for name in map(self._config_name, keys) if name]
            if all(self._rows.config_value(name, self._key, self._folder, self._ended) is not UNKNOWN
                   for name in names):
                return None
        return self.info.config_pending()

    def frame(self) -> dict[str, Any]:
        """:func:`frame_row` of this run: as kept for an ended run, else built."""
        if self._info is None and self._ended:
            data = self._rows.column("frame", self._key, self._folder)
            if data is not None:
                row = orjson.loads(data)
                row["path"], row["source"] = self._path, self.source  # as this look found it
                return row
        if self._ended:  # unchanged, ended: the row is the same next time
            row = frame_row(self.info)
            self._rows.keep_frame(self._key, self._folder, row)
            return row
        return frame_row(self.info)

    def kept_frame(self) -> tuple[str, bytes, bytes | None] | None:
        """``(path as found, kept frame row, kept flattened config)`` of an unchanged ended run, unparsed
        (``load_runs`` parses all of them at once), or None when :meth:`frame` must build the row."""
        if self._info is None and self._ended:
            kept = self._rows.frame_and_config(self._key, self._folder)
            if kept is not None:
                return self._path, kept[0], kept[1]
        return None

    def _config_name(self, key: str) -> str:
        name = self._rows.config_names.get(key)
        if name is None:  # what the key is, worked out once a look (a filter asks it of every run)
            name = self._rows.config_names[key] = _config_name(key, self._rows.fields)
        return name

    def value(self, key: str) -> Any:
        """As :meth:`~.runs.RunInfo.value`; from the catalog's columns: name, source, start, no tags, an ended
        run's status and its config."""
        name = self._rows.config_names.get(key)
        if name is None:
            name = self._config_name(key)
        if name:
            if self._info is None:
                found = self._rows.config_value(name, self._key, self._folder, self._ended)
                if found is not UNKNOWN:
                    return found
            return self.config.get(name, MISSING)
        if key == "status":
            return self.status
        if key in ("name", "source"):
            return getattr(self, key)
        if key == "start":
            return MISSING if self.start is None else self.start
        if key == "tag" and self._info is None and not self._columns()["t"]:
            return []
        return self.info.value(key)


def _config_stat(key: str) -> str:
    """What :func:`~.catalog.stat_key` says of a run's ``config.yaml`` now ("-": none, as the feed keeps it)."""
    try:
        st = os.stat(f"{key}/{RunLayout.CONFIG}")
    except OSError:
        return "-"
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}" if S_ISREG(st.st_mode) else "-"


def _config_name(key: str, fields: frozenset[str]) -> str:
    """The config key ``key`` names (``model.lr`` for ``config.model.lr``), or "" for a run's field."""
    if key in fields or key in _OWN:
        return ""
    head, _, rest = key.partition(".")
    if rest and head in _NOT_CONFIG:
        return ""
    return rest if head == "config" and rest else key
