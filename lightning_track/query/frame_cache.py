"""``load_runs``' whole frame kept in the user's cache, so a call over 100,000 unchanged runs builds nothing.

Why: through the catalog, a call still makes an object a run, parses each kept row and has pandas build
100,000 rows (about 3.5 s of CPU at 100,000 runs). Here the frame of the settled ended runs is kept as it
came out, with what it was made from: the stat of every run folder and of every other folder the walk
listed. The next call stats them (one ``stat`` a run, no catalog, no run object): when none changed, the
runs are the same runs with the same files (an ended run's folder changes whenever a file in it is
replaced: :meth:`~.catalog.Catalog.lister`), so only the running runs' rows are made again (from their
kept summary when their files did not change: their status and times move with the clock; read again
when they did) and put in their places (:mod:`.frame_merge`). An ended run whose folder changed (a tag, a
note, a resume) is read again and put in its place too, when the frame without its old row keeps its
dtypes (up to :data:`READ_AGAIN` of them). A run added, deleted or renamed, a folder changed, anything
the merge cannot vouch for: the frame is built as before and kept again. Only ``load_runs`` without a
filter uses it (a filter's answer can move with the clock: ``age<1d``).

Format: one pickle per root(s)/``config``/``stale_after`` (and the code that makes a row), under
``frames/`` in :func:`~lightning_track.vocabulary.cache_root`: the one format that gives a frame back
exactly (lists and dicts in cells, pandas' own dtypes). Written atomically; read only when the file is
the user's own, writable by nobody else, starts with this version's magic line and holds this exact key,
else built again. Anything written within :data:`~.catalog.RACY_S` of the call is never taken as settled.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import socket
import sys
import time
from pathlib import Path
from stat import S_ISDIR
from typing import Any

import numpy as np

from ..folder.exports import EXPORT_RECORDS
from ..folder.fileio import atomic_write_bytes, staged_writes
from ..folder.layout import RunLayout
from ..vocabulary import CRASHED, RUNNING, STALLED, cache_root
from . import catalog
from .catalog_rows import frame_row
from .discover import MAX_DEPTH, run_names, skipped_name
from .frame_merge import column_order, keeps_dtypes, merged_frame, stand_ins, whole_floats
from .runs import RunInfo, judged, read_run

__all__ = ["cached_frame", "keep_frame", "frames_folder", "KEEP_FILES", "READ_AGAIN"]

_MAGIC = b"lightning_track load_runs frame v1\n"
READ_AGAIN = 64  # ended runs read again each call (changed, or finished since): up to this many, then kept again
KEEP_FILES = 4  # frames of this many root/argument choices; the least recently written go first
_LIVE = (RUNNING, STALLED, CRASHED)  # a row the clock can change: a summary that says running
_FLOATS = ("best.", "final.")  # frame_row's metric columns: a float (NaN included) in every row that has one
_WATCHED = (RunLayout.SUMMARY, RunLayout.META, RunLayout.ANNOTATIONS, RunLayout.CONFIG, *EXPORT_RECORDS)


def frames_folder() -> Path:
    return Path(cache_root()) / "frames"


def _key(roots: list[Any], config: bool, stale_after: float) -> tuple[Any, ...]:
    import pandas as pd

    return (_MAGIC, sys.version_info[:2], pd.__version__, _code(), tuple((str(r), os.path.abspath(r)) for r in roots),
            bool(config), float(stale_after))


def _code() -> tuple[Any, ...]:
    """The code a row is made by (the readers of a run folder, the queries): a frame kept by other code, an
    upgrade or a checkout, is built again."""
    package = Path(__file__).resolve().parents[1]
    found: list[Any] = [catalog.VERSION]
    for folder in (package / "query", package / "folder", package):
        try:
            with os.scandir(folder) as entries:
                found += sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in entries
                                if e.name.endswith(".py"))
        except OSError:
            found.append(None)
    return tuple(found)


def _file(key: tuple[Any, ...]) -> Path:
    return frames_folder() / f"{hashlib.sha256(repr(key).encode()).hexdigest()[:32]}.pickle"


def _stat_key(path: str) -> tuple[int, ...] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev, S_ISDIR(st.st_mode), st.st_size)


def _files_key(path: str, names: Any = _WATCHED) -> tuple[tuple[str, tuple[int, ...] | None], ...]:
    """The stat of the run files a row is made from; kept for those there (a new one changes the folder)."""
    found = ((name, _stat_key(f"{path}/{name}")) for name in names)
    return tuple(found) if names is not _WATCHED else tuple(pair for pair in found if pair[1] is not None)


def _settled(key: Any, limit: int) -> bool:
    return key is None or max(key[0], key[1]) < limit


# -- reading ----------------------------------------------------------------------------------------------
def _load(key: tuple[Any, ...]) -> dict[str, Any] | None:
    path = _file(key)
    try:
        with open(path, "rb") as handle:
            st = os.fstat(handle.fileno())
            if st.st_uid != os.getuid() or st.st_mode & 0o022 or handle.read(len(_MAGIC)) != _MAGIC:
                return None  # someone else's, or not ours: never unpickled
            kept = pickle.load(handle)
    except FileNotFoundError:
        return None
    except Exception:  # noqa: BLE001 - torn, truncated, from another pandas: built again, never trusted
        return None
    return kept if isinstance(kept, dict) and kept.get("key") == key else None


def cached_frame(roots: list[Any], config: bool, stale_after: float) -> tuple[Any, list[str]] | None:
    """The frame (times still as seconds) and the problem lines of a call whose ended runs and folders did not
    change since the frame was kept; None when something did (the caller builds it, :func:`keep_frame`)."""
    key = _key(roots, config, stale_after)
    kept = _load(key)
    if kept is None:
        return None
    for path, was in kept["folders"]:
        if _stat_key(path) != was:
            return None
    stat = os.stat
    changed: list[int] = []
    for i, (path, was) in enumerate(zip(kept["paths"], kept["keys"], strict=True)):  # the one loop a run
        try:
            st = stat(path)
        except OSError:
            return None
        if (st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev) != was:
            changed.append(i)
            if len(changed) > READ_AGAIN:
                return None
    now, host = time.time(), socket.gethostname()
    rows: list[tuple[int, dict[str, Any]]] = []
    frame, at, marks = kept["frame"], kept["at"], kept["stand_ins"]
    if changed:  # ended runs whose folder changed (a tag, a note, a resume): read again, put in their places
        for i in changed:
            row = _changed_row(kept, i, config, stale_after, now, host)
            if row is None:
                return None
            rows.append(row)
        keep = np.ones(len(frame), dtype=bool)
        keep[changed] = False
        if not keeps_dtypes(frame, keep, floats=_FLOATS, float_rows=kept["float_rows"]):
            return None
        frame, at = frame[keep].reset_index(drop=True), at[keep]
        marks = stand_ins(frame)
    read = ended = len(changed)
    for live in kept["live"]:
        row = _live_row(live, config, stale_after, now, host)
        if row is None:
            return None
        read += row[1]
        ended += row[1] and row[0]["status"] not in _LIVE
        if ended > READ_AGAIN:  # runs read again each call: kept again as settled rows instead
            return None
        rows.append((live["at"], row[0]))
    order = column_order(kept["shapes"] + [(at, tuple(row), ()) for at, row in rows])
    frame = merged_frame(frame, at, marks, rows, order)
    if frame is None:
        return None
    catalog.last_look.update(runs=len(frame), read=read)
    return frame, list(kept["problems"])


def _live_row(live: dict[str, Any], config: bool, stale_after: float, now: float,
              host: str) -> tuple[dict[str, Any], int] | None:
    """A running run's row now, and 1 if its files were read: judged again from the kept summary when its
    folder and files did not change, else read again (None: no longer the run it was, or new problems)."""
    path = live["path"]
    if live["settled"] and _stat_key(path) == live["folder"] and \
            _files_key(path, [name for name, _ in live["files"]]) == live["files"]:
        info = RunInfo(Path(live["found"]), live["source"], summary=live["summary"], now=now)
        info.__dict__["start"] = live["row"]["start"]  # as the row has it (from the summary, meta or name)
        judged(info, stale_after=stale_after, this_host=host)
        span = info.wall_span
        row = {**live["row"], "status": info.status, "why": info.why, "end": info.end,
               "wall_span_s": None if span is None else round(span, 3)}  # what frame_row takes from the clock
        return row, 0
    names = run_names(Path(path))
    if names is None:
        return None
    info = read_run(Path(live["found"]), live["source"], names, now=now, stale_after=stale_after, this_host=host)
    if _problem_lines(info) != live["problems"]:
        return None  # the problem lines are replayed as kept: a change in them builds everything
    row = frame_row(info)
    if config:
        row.update((f"config.{k}", v) for k, v in info.config.items())
    return row, 1


def _changed_row(kept: dict[str, Any], i: int, config: bool, stale_after: float, now: float,
                 host: str) -> tuple[int, dict[str, Any]] | None:
    """The kept frame's row ``i`` (an ended run whose folder changed) read again, at its place; None when it
    is no longer a run, its problem lines changed, its place in the order would move, or it was the first
    row with its columns and has others now (the columns' order would move)."""
    position = int(kept["at"][i])
    path, frame = kept["paths"][i], kept["frame"]
    names = run_names(Path(path))
    if names is None:
        return None
    info = read_run(Path(frame["path"].iloc[i]), frame["source"].iloc[i], names, now=now, stale_after=stale_after,
                    this_host=host)
    if _problem_lines(info) != kept["lines"].get(path, []):
        return None
    was = frame["start"].iloc[i]
    if (info.start or 0.0) != (0.0 if was != was else was):  # NaN: no start, sorted as 0.0
        return None
    row = frame_row(info)
    if config:
        row.update((f"config.{k}", v) for k, v in info.config.items())
    first = kept["firsts"].get(position)
    if first is not None and tuple(row) != first:
        return None
    return position, row


def _problem_lines(run: Any) -> list[str]:
    """The lines ``find_runs`` reports for a run's problems."""
    return [f"run {run.name}: {p}" if run.name not in p else p for p in run.problems]


# -- writing ------------------------------------------------------------------------------------------------
def keep_frame(roots: list[Any], config: bool, stale_after: float, started: float, runs: list[Any],
               rows: list[dict[str, Any]], configs: list[dict[str, Any]], problems: list[str],
               build: Any) -> Any:
    """The frame of ``runs`` (times still as seconds), made from a frame of its settled ended runs and its
    running runs' rows, and kept for the next call; None when it cannot be made so (the caller builds it).

    ``started``: the time before ``find_runs`` looked; a folder unchanged since ``RACY_S`` before it held
    what the look read. ``build(rows, configs)``: the frame of those rows, as the caller makes it."""
    limit = int((started - catalog.RACY_S) * 1e9)
    mine = (f"{cache_root()}/", f"{cache_root()}:")
    if not runs or any(m in line for line in problems for m in mine):
        return None  # the catalog's own trouble with the cache: not replayed as if it were the runs'
    absolute = _absolute([row["path"] for row in rows])
    folders = _folders(roots, set(absolute), limit)
    if folders is None:
        return None
    stable: list[int] = []
    live: list[dict[str, Any]] = []
    paths, keys = [], []
    for at, (run, row, path) in enumerate(zip(runs, rows, absolute, strict=True)):
        folder = _stat_key(path)
        if folder is None:
            return None
        if row["status"] not in _LIVE and _settled(folder, limit):
            stable.append(at)
            paths.append(path)
            keys.append(folder[:4])
            continue
        files = _files_key(path)
        merged = dict(row)
        if config:
            merged.update((f"config.{k}", v) for k, v in configs[at].items())
        live.append({"at": at, "path": path, "found": row["path"], "source": row["source"], "folder": folder,
                     "files": files, "settled": _settled(folder, limit) and all(_settled(k, limit) for _, k in files),
                     "row": merged, "summary": run.summary,
                     "problems": _problem_lines(run)})
    if not stable:
        return None
    kept = build([rows[i] for i in stable], [configs[i] for i in stable] if config else [])
    shapes, seen = [], set()
    for at in stable:
        shape = (tuple(rows[at]), tuple(configs[at]) if config else ())
        if shape not in seen:
            seen.add(shape)
            shapes.append((at, *shape))
    order = column_order(shapes + [(entry["at"], tuple(entry["row"]), ()) for entry in live])
    at = _positions(stable)
    marks = stand_ins(kept)
    frame = merged_frame(kept, at, marks, [(entry["at"], entry["row"]) for entry in live], order)
    if frame is None:
        return None
    key = _key(roots, config, stale_after)
    lines = {absolute[i]: found for i in stable if (found := _problem_lines(runs[i]))}
    firsts = {first: (*row, *(f"config.{k}" for k in flat)) for first, row, flat in shapes}
    float_rows = {}
    for name in whole_floats(kept):
        if not name.startswith(_FLOATS):
            values = [configs[i].get(name[7:]) for i in stable] if name.startswith("config.") and config else \
                [rows[i].get(name) for i in stable]
            float_rows[name] = np.fromiter((type(v) is float for v in values), dtype=bool, count=len(values))
    record = {"key": key, "folders": folders, "paths": paths, "keys": keys, "frame": kept, "at": at,
              "stand_ins": marks, "shapes": shapes, "firsts": firsts, "lines": lines, "float_rows": float_rows,
              "live": live, "problems": list(problems)}
    try:
        _write(_file(key), _MAGIC + pickle.dumps(record, protocol=5))
    except OSError as exc:
        problems.append(f"{frames_folder()}: load_runs' frame not kept ({' '.join(str(exc).split())}); built "
                        "again next time")
    return frame


def _absolute(paths: list[str]) -> list[str]:
    """``os.path.abspath`` of each path, worked out once a parent folder (most runs share one)."""
    parents: dict[str, str] = {}
    out = []
    for path in paths:
        head, _, name = path.rpartition("/")
        parent = parents.get(head)
        if parent is None:
            parent = parents[head] = os.path.abspath(head or os.curdir).rstrip("/") + "/"
        out.append(parent + name)
    return out


def _positions(stable: list[int]) -> Any:
    return np.asarray(stable, dtype=np.intp)


def _folders(roots: list[Any], runs: set[str], limit: int) -> list[tuple[str, Any]] | None:
    """The stat of every folder the walk listed that is not a run (the roots, a mirror's servers, folders
    with no runs) and of every other name in them: unchanged, the walk finds the same runs. None when one
    changed too recently to be sure the look saw it as it is now."""
    found: list[tuple[str, Any]] = []

    def visit(folder: str, depth: int) -> bool:
        key = _stat_key(folder)
        found.append((folder, key))
        if key is None or not key[4] or folder in runs:
            return True
        if not _settled(key, limit):
            return False
        if depth == 0:
            return True
        try:
            names = os.listdir(folder)
        except OSError:
            return True
        prefix = folder.rstrip("/") + "/"
        for name in names:
            child = prefix + name
            if child not in runs and not skipped_name(name) and not visit(child, depth - 1):
                return False
        return True

    for root in roots:
        if not visit(os.path.abspath(root), MAX_DEPTH):
            return None
    return found


def _write(path: Path, data: bytes) -> None:
    """Atomically (a reader sees the old file or the new one), without fsync (a cache), and at most
    :data:`KEEP_FILES` files in the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with staged_writes():
        atomic_write_bytes(path, data)
    others = sorted((p for p in path.parent.glob("*.pickle") if p != path), key=_mtime)
    for old in others[:max(0, len(others) - KEEP_FILES + 1)]:
        try:
            old.unlink()
        except OSError:
            pass


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
