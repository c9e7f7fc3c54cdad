"""``load_runs``: the runs as one pandas DataFrame, for notebooks (pandas imported only here)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from .catalog_rows import CatalogRun, frame_row
from .runs import STALE_AFTER_S, filter_runs, find_runs

__all__ = ["load_runs"]


def load_runs(root: str | Path | Sequence[str | Path] = "runs", filter: str | Sequence[str] | None = None, *,
              stale_after: float = STALE_AFTER_S, config: bool = True, catalog: bool = True) -> Any:
    """One row per run as a pandas DataFrame: the summary's fields, ``best.<metric>`` and
    ``final.<metric>`` values, and the flattened config as ``config.<key>`` columns.

    Works on ``runs/``, a single run, a mirror of several servers (``source``), and migrated runs; a
    run being written is read as it is now. Unreadable parts are warned about, never fatal for others.
    ``catalog=False`` reads every run's files instead of the catalog (same values, slower).
    """
    import warnings

    import pandas as pd

    problems: list[str] = []
    runs = filter_runs(find_runs(root, problems, stale_after=stale_after, catalog=catalog), filter)
    for problem in problems:
        warnings.warn(problem, stacklevel=2)
    rows = []
    for run in runs:  # an unchanged ended run's row and config as the catalog kept them: no run parsed
        row = run.frame() if isinstance(run, CatalogRun) else frame_row(run)
        if config:
            row.update({f"config.{k}": v for k, v in run.config.items()})
        rows.append(row)
    if catalog:  # the rows and configs first built here, kept for the next call (not only at exit)
        from .catalog import flush_configs

        flush_configs()
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=["name", "path", "source", "dataset", "method", "status", "start", "end"])
    zone = datetime.now().astimezone().tzinfo
    for column in ("start", "end"):
        frame[column] = pd.to_datetime(frame[column], unit="s", utc=True).dt.tz_convert(zone)
    return frame
