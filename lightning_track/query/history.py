"""A run's metric history from ``metrics.jsonl``, read fast and into columns.

Why not :func:`~lightning_track.folder.records.read_metrics`: it builds one object per record, about a
microsecond each before any column exists. Here the whole file is parsed by one ``orjson`` call (the
lines joined into one JSON array) and each metric becomes a numpy column from one list comprehension:
100k records of 10 metrics in about 0.4 s, once. Files of a megabyte or more keep their columns in the
user's cache (:mod:`.history_cache`), so a later read parses only the lines appended since, and
:func:`read_histories` parses several cold files in parallel. A file with a bad line falls back to
line-by-line reading, which names each bad line (``path:line: reason``) and keeps the rest. Only whole
lines are read: a run being written may end in half a line, which is left for the next read.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain, repeat
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ..errors import RunFolderError, one_line
from ..folder.fileio import restore_nonfinite
from ..folder.layout import RunLayout
from .history_cache import MIN_BYTES, CachedColumns, is_cached, load_cached, save_cached

__all__ = ["History", "read_history", "read_histories", "warm_histories", "load_history"]

_NAN = math.nan


@dataclass
class History:
    """Columns of one ``metrics.jsonl``: ``steps``, ``times`` and one float column per metric (NaN where
    a record has no value for it, or the value was NaN: :meth:`series` tells the two apart)."""

    path: Path
    steps: np.ndarray
    times: np.ndarray
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    held: dict[str, np.ndarray] = field(default_factory=dict)  # records holding the key, where some do not
    problems: list[str] = field(default_factory=list)
    partial_tail: bool = False  # the file ends in a line still being written

    @property
    def keys(self) -> list[str]:
        return list(self.columns)

    def __len__(self) -> int:
        return len(self.steps)

    def series(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """``(steps, values)`` of the records that hold ``key``; NaN/inf values kept."""
        values = self.columns[key]
        mask = self.held.get(key)
        if mask is None:
            return self.steps, values
        return self.steps[mask], values[mask]


def _floats(values: list[Any], key: str, path: Path, problems: list[str]) -> np.ndarray:
    try:
        return np.array(values, dtype=np.float64)  # floats, ints, None and "NaN"/"Infinity" in one C loop
    except (TypeError, ValueError):
        pass
    out = np.empty(len(values), dtype=np.float64)
    bad = 0
    for i, value in enumerate(values):
        try:
            out[i] = float(restore_nonfinite(value)) if value is not None else _NAN
        except (TypeError, ValueError):
            out[i] = _NAN
            bad += 1
    if bad:
        problems.append(f"{path}: {bad} value(s) of {key!r} are not numbers; read as NaN")
    return out


def _parse_lines(body: bytes, path: Path, problems: list[str], first_line: int = 0) -> list[dict[str, Any]]:
    """Line by line, naming each line that is not a metrics record."""
    records = []
    for lineno, raw in enumerate(body.split(b"\n"), first_line + 1):
        if not raw.strip():
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            problems.append(f"{path}:{lineno}: invalid JSON ({str(exc).split(':')[0]}); line skipped")
            continue
        if type(obj) is not dict or type(obj.get("step")) is not int or type(obj.get("metrics", {})) is not dict:
            problems.append(f"{path}:{lineno}: not a metrics record (needs an integer step and a metrics "
                            "object); line skipped")
            continue
        records.append(obj)
    return records


def _parse(body: bytes, path: Path, keys: Iterable[str] | None, problems: list[str],
           first_line: int = 0) -> CachedColumns:
    """Columns of whole lines ``body`` (one ``orjson`` call; line by line where a line is bad)."""
    parsed = CachedColumns(len(body), first_line + body.count(b"\n"), np.zeros(0, np.int64),
                           np.zeros(0, np.float64), {}, {}, problems)
    if not body.strip():
        return parsed
    records: list[dict[str, Any]] | None
    try:
        records = orjson.loads(b"[" + body.rstrip(b"\n").replace(b"\n", b",") + b"]")
        steps = np.array([r["step"] for r in records], dtype=np.int64)
        metrics = [r["metrics"] for r in records]
        found = dict.fromkeys(chain.from_iterable(metrics))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, OverflowError):
        records = None
    if records is None:
        records = _parse_lines(body, path, problems, first_line)
        steps = np.array([r["step"] for r in records], dtype=np.int64)
        metrics = [r.get("metrics") or {} for r in records]
        found = dict.fromkeys(chain.from_iterable(metrics))
    parsed.steps = steps
    parsed.times = np.array([r.get("time", _NAN) for r in records], dtype=np.float64)
    for key in list(found) if keys is None else [k for k in keys if k in found]:
        column = _floats([m.get(key) for m in metrics], key, path, problems)
        if np.isnan(column).any():
            mask = np.fromiter((key in m for m in metrics), dtype=bool, count=len(metrics))
            if not mask.all():
                parsed.held[key] = mask
        parsed.columns[key] = column
    return parsed


def _held(part: CachedColumns, key: str) -> np.ndarray:
    if key not in part.columns:
        return np.zeros(len(part.steps), dtype=bool)
    return part.held.get(key, np.ones(len(part.steps), dtype=bool))


def _append(old: CachedColumns, new: CachedColumns) -> CachedColumns:
    """``old`` followed by ``new`` (the lines appended since): a key only one side has is NaN, unheld, in
    the other."""
    if not len(new.steps):
        return CachedColumns(old.covered + new.covered, new.lines, old.steps, old.times, old.columns, old.held,
                             old.problems + new.problems)
    out = CachedColumns(old.covered + new.covered, new.lines, np.concatenate([old.steps, new.steps]),
                        np.concatenate([old.times, new.times]), {}, {}, old.problems + new.problems)
    for key in dict.fromkeys([*old.columns, *new.columns]):
        out.columns[key] = np.concatenate([
            part.columns.get(key, np.full(len(part.steps), _NAN)) for part in (old, new)])
        mask = np.concatenate([_held(old, key), _held(new, key)])
        if not mask.all():
            out.held[key] = mask
    return out


def read_history(run: str | Path, keys: Iterable[str] | None = None) -> History:
    """The history of a run folder (or of a ``metrics.jsonl`` path); ``keys`` limits the columns.

    A file of a megabyte or more is parsed once: its columns are kept in the user's cache
    (:mod:`.history_cache`) and later reads parse only the lines appended since.
    """
    path = Path(run)
    if path.is_dir():
        path = RunLayout(path).metrics_jsonl
    try:
        with open(path, "rb") as handle:
            stat = os.fstat(handle.fileno())
            cached = load_cached(path, stat) if stat.st_size >= MIN_BYTES else None
            handle.seek(cached.covered if cached else 0)
            data = handle.read()
    except FileNotFoundError:
        raise RunFolderError(f"{path}: missing (the run logged nothing yet, or this is not a run)") from None
    except OSError as exc:
        raise RunFolderError(f"{path}: cannot be read ({one_line(exc)})") from None
    end = data.rfind(b"\n") + 1
    keep = stat.st_size >= MIN_BYTES  # then every column is parsed, to be kept
    part = _parse(data[:end], path, None if keep else keys, [], cached.lines if cached else 0)
    whole = _append(cached, part) if cached else part
    if keep and end:
        save_cached(path, stat, whole)
    wanted = list(whole.columns) if keys is None else [k for k in keys if k in whole.columns]
    return History(path, whole.steps, whole.times, {k: whole.columns[k] for k in wanted},
                   {k: whole.held[k] for k in wanted if k in whole.held}, list(whole.problems),
                   partial_tail=bool(data[end:].strip()))


def _parsed_before(path: Path) -> bool:
    """Whether reading ``path`` costs little: a small file, or one whose columns are cached."""
    try:
        stat = path.stat()
    except OSError:
        return True  # read_history names the problem
    return stat.st_size < MIN_BYTES or is_cached(path, stat)


def _read_or_error(path: Path, keys: Sequence[str] | None) -> History | RunFolderError:
    try:
        return read_history(path, keys)
    except RunFolderError as exc:
        return exc


def read_histories(runs: Sequence[str | Path], keys: Sequence[str] | None = None) -> list[History | RunFolderError]:
    """:func:`read_history` of several runs, each a :class:`History` or the error that names why not.

    The files not parsed before are parsed in parallel, one process per core (forked, on Linux): the
    parse is CPU-bound Python, so threads would not help, and a GPU server's cores make ten cold runs
    take about as long as one.
    """
    paths = [RunLayout(Path(r)).metrics_jsonl if Path(r).is_dir() else Path(r) for r in runs]
    out: list[History | RunFolderError | None] = [None] * len(paths)
    cold = [i for i, path in enumerate(paths) if not _parsed_before(path)]
    workers = min(len(cold), os.cpu_count() or 1)
    if workers > 1 and "fork" in multiprocessing.get_all_start_methods() and sys.platform == "linux":
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            for i, result in zip(cold, pool.map(_read_or_error, [paths[i] for i in cold], repeat(keys)),
                                 strict=True):
                out[i] = result
    for i, path in enumerate(paths):
        if out[i] is None:
            out[i] = _read_or_error(path, keys)
    return out  # type: ignore[return-value]


def warm_histories(runs: Iterable[str | Path]) -> int:
    """Parse into the cache what a later look would parse (a mirror after each sync pass); how many
    files were read. Errors are left for that later look to name."""
    count = 0
    for run in runs:
        if not isinstance(_read_or_error(Path(run), None), RunFolderError):
            count += 1
    return count


def _frame(history: History) -> Any:
    import pandas as pd

    frame = pd.DataFrame({"step": history.steps, "time": history.times, **history.columns})
    if len(frame) > 1 and not bool(np.all(np.diff(history.steps) > 0)):
        # several records at one step (training and validation values logged apart): one row per step,
        # each column's last value there, as metrics.csv has it
        frame = frame.groupby("step", sort=True, as_index=False).last()
    return frame


def load_history(run: Any, keys: Sequence[str] | None = None) -> Any:
    """A pandas DataFrame ``step, time, <metric>...``, one row per step, from ``metrics.jsonl``.

    ``run``: a run folder, its name under ``runs/``, a :class:`~lightning_track.query.runs.RunInfo`, or a
    list of them (then a ``run`` column names each row's run). ``time`` is epoch seconds. Reads whole
    lines only, so it works on a run still being written and on a mirror; bad lines are warned about.
    """
    import warnings

    import pandas as pd

    from .catalog_rows import CatalogRun
    from .discover import resolve_run
    from .runs import RunInfo

    many = isinstance(run, (list, tuple))
    folders = [one.path if isinstance(one, (RunInfo, CatalogRun)) else resolve_run(one)
               for one in (run if many else [run])]
    frames = []
    for folder, history in zip(folders, read_histories(folders, keys), strict=True):
        if isinstance(history, RunFolderError):
            raise history
        for problem in history.problems:
            warnings.warn(problem, stacklevel=2)
        frame = _frame(history)
        if keys is not None:
            frame = frame.reindex(columns=["step", "time", *keys])
        if many:
            frame.insert(0, "run", Path(folder).name)
        frames.append(frame)
    if not many:
        return frames[0]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run", "step", "time"])
