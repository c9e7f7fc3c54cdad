"""``lt ls``'s table over many runs: SQLite orders the catalog's rows, only the printed rows are built.

Why: at 100,000 runs a look where nothing changed is one ``stat`` a run; building a run object for each,
sorting them in Python and asking each for its best metrics cost as much again, for a table of 50 rows.
Here the look (:func:`~.runs.find_runs` with a :class:`~.catalog_kept.Kept`) keeps each unchanged ended
run as its catalog key, counts their briefs (the main metric and the default columns), and the printed
window comes from one ordered query over the catalog (its ``start`` index), merged with the runs the look
had to build (running, changed, with problems). The rows, their order, the columns and the messages are
those of a plain read; where this look cannot vouch for that (the same folder twice, the catalog not
written, an entry changed while looking) :func:`newest_runs` answers None and the caller looks the usual way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .catalog_kept import Kept
from .catalog_rows import CatalogRun
from .listing import default_columns, main_metric_of
from .runs import find_runs

__all__ = ["Newest", "newest_runs"]


@dataclass
class Newest:
    """What ``lt ls`` prints: ``rows`` in the printed order, of ``total`` runs found."""

    rows: list[Any]
    total: int
    metric: str | None
    columns: list[str]
    unknown: list[str]  # keys no run has (a warning each)


def newest_runs(root: str | Path, problems: list[str], *, window: int | None, reverse: bool = False,
                metric: str | None = None, **look: Any) -> Newest | None:
    """The last ``window`` rows (all when None) of ``lt ls root``'s order (start, then name; ``reverse``:
    the other way), with the main metric and the default columns chosen over every run; None when the
    answer must come from a whole look. ``look``: :func:`~.runs.find_runs`'s keywords (``stale_after``)."""
    kept = Kept(os.path.abspath(root))
    said = len(problems)
    built = find_runs([root], problems, lean=kept, **look)
    if kept.spoilt:
        del problems[said:]
        return None
    total = len(built) + len(kept.keys)
    counts, shown = _columns_of(built, kept)
    chosen = metric or main_metric_of(counts)
    unknown = [f"best.{chosen}"] if chosen and metric and chosen not in counts and total else []
    want = total if window is None else min(window, total)
    picked = _picked(root, kept, want, reverse) if want > 0 and kept.keys else []
    if picked is None:
        del problems[said:]
        return None
    rows = picked + built
    rows.sort(key=_order, reverse=reverse)
    return Newest(rows[-want:] if want > 0 else [], total, chosen, default_columns(rows, chosen, shown), unknown)


def _order(run: Any) -> tuple[float, str, list[str]]:
    """A plain read's order: start, name, then where the walk found it (its folders, in their sorted order)."""
    name = run.name
    return run.start or 0.0, name, [*run.source.split("/"), name] if run.source else [name]


def _columns_of(built: list[Any], kept: Kept) -> tuple[dict[str, int], dict[str, bool]]:
    """How many runs have each best metric, and whether some run has a source, tags, exports."""
    counts: dict[str, int] = {}
    shown = {"source": kept.sourced, "tag": False, "export": False}
    for brief, many in kept.briefs.items():  # a sweep's runs share a few briefs: each parsed once
        columns = orjson.loads(brief)
        for key in columns["b"]:
            counts[key] = counts.get(key, 0) + many
        shown["tag"] = shown["tag"] or bool(columns["t"])
        shown["export"] = shown["export"] or bool(columns["x"])
    for run in built:
        for key in run.metric_names("best"):
            counts[key] = counts.get(key, 0) + 1
        shown["source"] = shown["source"] or bool(run.source)
        shown["tag"] = shown["tag"] or bool(run.tags)
        shown["export"] = shown["export"] or bool(run.exports)
    return counts, shown


def _picked(root: str | Path, kept: Kept, want: int, reverse: bool) -> list[CatalogRun] | None:
    """The kept runs that can be among the ``want`` last rows: the first ``want`` of the catalog's order
    and every run tied with the last of them; None when an entry changed since the look checked it."""
    prefix, order = kept.root, "ASC" if reverse else "DESC"
    # the root itself a run: that one; else the root's range, walked in the start index's order ("+path": not
    # by the path index, which would sort every run of the root first)
    where, args = ("path = ?", (prefix,)) if prefix in kept.keys else ("+path >= ? AND +path < ?",
                                                                       (prefix + "/", prefix + "0"))
    try:
        cursor = kept.rows._connection().execute(
            f"SELECT path, folder, names, files, ended, start, brief FROM runs WHERE {where} "
            f"ORDER BY coalesce(start, 0.0) {order}", args)
        found: list[tuple[Any, ...]] = []
        for row in cursor:
            if row[0] not in kept.keys:
                continue
            if len(found) >= want and (row[5] or 0.0) != (found[-1][5] or 0.0):
                break
            found.append(row)
    except Exception:  # noqa: BLE001 - any SQLite error: the whole look answers instead
        return None
    runs = []
    for row in found:
        try:
            stat = os.stat(row[0])
        except OSError:
            return None
        if not row[4] or row[1] != f"{stat.st_mtime_ns}:{stat.st_ctime_ns}:{stat.st_ino}:{stat.st_dev}":
            return None  # written again by another look since this one checked it
        rel = os.path.relpath(row[0], prefix)
        path = Path(root) if rel == "." else Path(root) / rel
        source = "" if rel == "." else rel.rpartition("/")[0]
        runs.append(CatalogRun(str(path), row[0], source, row[1:], kept.rows, True))
    return runs
