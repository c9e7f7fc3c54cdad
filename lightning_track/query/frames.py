"""``load_runs``: the runs as one pandas DataFrame, for notebooks (pandas imported only here)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from ..folder.gcpause import collector_paused
from .catalog_rows import CatalogRun, frame_row
from .frame_cache import cached_frame, keep_frame
from .runs import STALE_AFTER_S, filter_runs, find_runs

__all__ = ["load_runs"]


@collector_paused()
def load_runs(root: str | Path | Sequence[str | Path] = "runs", filter: str | Sequence[str] | None = None, *,
              stale_after: float = STALE_AFTER_S, config: bool = True, catalog: bool = True) -> Any:
    """One row per run as a pandas DataFrame: the summary's fields, ``best.<metric>`` and
    ``final.<metric>`` values, and the flattened config as ``config.<key>`` columns.

    Works on ``runs/``, a single run, a mirror of several servers (``source``), and migrated runs; a
    run being written is read as it is now. Unreadable parts are warned about, never fatal for others.
    ``catalog=False`` reads every run's files instead of the catalog (same values, slower). Without a
    filter, the frame is kept in the user's cache and only what changed is made again (:mod:`.frame_cache`).
    """
    import warnings

    import pandas as pd

    roots = [root] if isinstance(root, (str, os.PathLike)) else list(root)
    keep = catalog and filter is None
    found = cached_frame(roots, config, stale_after) if keep else None
    if found is not None:
        frame, problems = found
    else:
        started = time.time()
        problems = []
        runs = filter_runs(find_runs(roots, problems, stale_after=stale_after, catalog=catalog), filter)
        rows, configs = _rows(runs, config)
        if catalog:  # the rows and configs first built here, kept for the next call (not only at exit)
            from .catalog import flush_configs

            flush_configs()

        def build(rows: list[dict[str, Any]], configs: list[dict[str, Any]]) -> Any:
            return _frame(rows, configs, config)

        frame = keep_frame(roots, config, stale_after, started, runs, rows, configs, problems, build) \
            if keep else None
        if frame is None:
            frame = build(rows, configs)
    for problem in problems:
        warnings.warn(problem, stacklevel=2)
    if frame.empty:
        return pd.DataFrame(columns=["name", "path", "source", "dataset", "method", "status", "start", "end"])
    zone = datetime.now().astimezone().tzinfo
    for column in ("start", "end"):
        frame[column] = pd.to_datetime(frame[column], unit="s", utc=True).dt.tz_convert(zone)
    return frame


def _frame(rows: list[dict[str, Any]], configs: list[dict[str, Any]], config: bool) -> Any:
    """The frame of these rows (and ``config.<key>`` columns), times still as seconds."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    if config and rows:
        # configs apart, then side by side: pandas builds each from dicts at C speed, no merged dict per run
        frame = pd.concat([frame, pd.DataFrame(configs).add_prefix("config.")], axis=1)
        order = _column_order(rows, configs)
        if list(frame.columns) != order:
            frame = frame[order]
    return frame


def _rows(runs: list[Any], config: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each run's row and flattened config. An unchanged ended run's, as the catalog kept them, are parsed
    all at once (one JSON array: a tenth of the per-run cost); the others are built."""
    rows: list[Any] = [None] * len(runs)
    configs: list[Any] = [None] * len(runs) if config else []
    kept: list[tuple[int, str, bytes, bytes | None]] = []
    for i, run in enumerate(runs):
        found = run.kept_frame() if isinstance(run, CatalogRun) else None
        if found is not None and (not config or found[2] is not None):
            kept.append((i, *found))
            continue
        rows[i] = run.frame() if isinstance(run, CatalogRun) else frame_row(run)
        if config:
            configs[i] = run.config
    if not kept:
        return rows, configs
    parsed = _loads_all([k[2] for k in kept])
    flats = _loads_all([k[3] for k in kept]) if config else []
    for n, (i, path, _, _) in enumerate(kept):
        row = parsed[n]
        if not isinstance(row, dict):  # a damaged kept row: built from the run
            row = frame_row(runs[i].info)
        row["path"], row["source"] = path, runs[i].source  # as this look found it
        rows[i] = row
        if config:
            flat = flats[n]
            configs[i] = flat if isinstance(flat, dict) else runs[i].config
    return rows, configs


def _loads_all(blobs: list[Any]) -> list[Any]:
    try:
        return orjson.loads(b"[" + b",".join(blobs) + b"]")
    except orjson.JSONDecodeError:  # one bad blob: each on its own (a bad one is None: built again)
        return [_loads(blob) for blob in blobs]


def _loads(blob: bytes) -> Any:
    try:
        return orjson.loads(blob)
    except orjson.JSONDecodeError:
        return None


def _column_order(rows: list[dict[str, Any]], configs: list[dict[str, Any]]) -> list[str]:
    """The columns in the order a frame of the merged rows (row, then ``config.<key>``) would have them:
    first seen first. Runs with the same keys as one seen before are skipped (most runs of a sweep)."""
    order: dict[str, None] = {}
    seen: set[tuple[tuple[str, ...], tuple[str, ...]]] = set()
    for row, flat in zip(rows, configs, strict=True):
        shape = (tuple(row), tuple(flat))
        if shape in seen:
            continue
        seen.add(shape)
        order.update(dict.fromkeys(row))
        order.update(dict.fromkeys(f"config.{k}" for k in flat))
    return list(order)
