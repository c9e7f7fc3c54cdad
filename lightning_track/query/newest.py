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

import heapq
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..errors import RunFolderError
from ..folder.gcpause import collector_paused
from .catalog_kept import Kept
from .catalog_rows import CatalogRun
from .filters import Filter
from .listing import default_columns, main_metric_of
from .newest_filter import answerable, config_keys, narrow, planned
from .runs import find_runs

__all__ = ["Newest", "newest_runs"]


@dataclass
class Newest:
    """What ``lt ls`` prints: ``rows`` in the printed order, of ``total`` runs found."""

    rows: list[Any] | Iterator[Any]
    total: int
    metric: str | None
    columns: list[str]
    unknown: list[str]  # keys no run has (a warning each)
    matched: int = -1  # how many runs the filters left (all ``total`` without filters)


def newest_runs(root: str | Path, problems: list[str], *, window: int | None, reverse: bool = False,
                metric: str | None = None, stream: bool = False, filters: Sequence[Filter] = (),
                **look: Any) -> Newest | None:
    """The last ``window`` rows (all when None) of ``lt ls root``'s order (start, then name; ``reverse``:
    the other way), with the main metric and the default columns chosen over every run; None when the
    answer must come from a whole look. ``look``: :func:`~.runs.find_runs`'s keywords (``stale_after``).

    ``stream`` (every row, ``--json``): ``rows`` is an iterator that builds one run at a time from the
    catalog's ordered rows, so no list of every run is ever held. ``filters``: only the runs matching all
    of them (:mod:`.newest_filter`; None at once for a filter on a key the catalog's rows cannot answer)."""
    if filters and not answerable(filters):
        return None
    kept = Kept(os.path.abspath(root), records=window is None)  # a window's rows: their records on first use
    asked = config_keys(filters)
    if asked:  # the configs of the runs the look reads, parsed beside it; SQLite answers the kept ones
        from .config_feed import ConfigFeed

        kept.feed = ConfigFeed(asked)
        kept.plan, kept.tagged = planned(filters), any(key == "tag" for f in filters for key in f.keys())
    try:
        return _newest(root, problems, kept, window, reverse, metric, stream, filters, look)
    finally:
        kept.close()  # (its helper, when the look ended before it claimed the root's names)
        if kept.feed is not None:
            kept.feed.close()


def _newest(root: str | Path, problems: list[str], kept: Kept, window: int | None, reverse: bool,
            metric: str | None, stream: bool, filters: Sequence[Filter], look: dict[str, Any]) -> Newest | None:
    said = len(problems)
    built = find_runs([root], problems, lean=kept, **look)
    if kept.spoilt:
        del problems[said:]
        return None
    total = len(built) + len(kept.keys)
    counts, shown = _columns_of(built, kept)
    every, unknown = counts, []  # (best metrics over every run: the metric's warning, its choice if none match)
    if filters:
        narrowed = _narrowed(root, kept, built, filters)
        if narrowed is None:
            del problems[said:]
            return None
        built, broken, unknown = narrowed
        problems += broken
        unknown = unknown if total else []
        counts, shown = _columns_of(built, kept)
    matched = len(built) + len(kept.keys)
    chosen = metric or main_metric_of(counts if matched else every)
    unknown += [f"best.{chosen}"] if chosen and metric and chosen not in every and total else []
    if stream and window is None:
        if kept.rows is not None:
            kept.rows.streamed = True
        built.sort(key=_order, reverse=reverse)
        rows = heapq.merge(_in_order(root, kept, reverse), built, key=_order, reverse=reverse) if kept.keys \
            else iter(built)
        return Newest(rows, total, chosen, default_columns(built, chosen, shown), unknown, matched)
    want = matched if window is None else min(window, matched)
    picked = _picked(root, kept, want, reverse) if want > 0 and kept.keys else []
    if picked is None:
        del problems[said:]
        return None
    rows = picked + built
    rows.sort(key=_order, reverse=reverse)
    return Newest(rows[-want:] if want > 0 else [], total, chosen, default_columns(rows, chosen, shown), unknown,
                  matched)


@collector_paused()  # (100,000 rows held: the collector's passes would walk them again and again)
def _narrowed(root: str | Path, kept: Kept, built: list[Any], filters: Sequence[Filter]) -> Any:
    """:func:`~.newest_filter.narrow` over the catalog's rows of the root (None: a whole look answers)."""
    if kept.rows is None:
        return None  # no catalog
    where, args = _under(kept)  # (by the path index: no order wanted)
    try:
        conn = kept.rows._connection()
        return narrow(kept, built, filters, conn, where, args, lambda row: _catalog_run(root, kept, row),
                      lambda key: _shown(root, kept, key), _order)
    except sqlite3.Error:  # the whole look answers instead
        return None


def _in_order(root: str | Path, kept: Kept, reverse: bool) -> Iterator[Any]:
    """Every kept run in :func:`_order` (SQLite orders by start; each group tied on start sorted here). A run
    whose entry changed since the look checked it (another look wrote it again meanwhile) is read from its
    files, in its place: the output has begun, there is no whole look to fall back on."""
    group: list[Any] = []
    at = None
    given = kept.rows.given
    for row in _ordered(kept, reverse, records=True):
        if row[0] not in kept.keys:
            continue
        start = row[5] or 0.0
        if group and start != at:
            if len(group) > 1:
                group.sort(key=_order, reverse=reverse)
            yield from group
            group = []
        at = start
        run = _catalog_run(root, kept, row)
        if run is not None:
            if row[7] is not None:  # (an entry without its record: its files read, the record kept, on load)
                given[row[0]] = (row[1], *row[7:])  # CatalogRun.load's record, fetched with the row
        else:
            path, source = _shown(root, kept, row[0])
            try:
                run = kept.rows.read(Path(path), source)
            except RunFolderError:
                continue  # deleted since the look: gone, as from the next look
        group.append(run)
    group.sort(key=_order, reverse=reverse)
    yield from group


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


def _ordered(kept: Kept, descending: bool, records: bool = False) -> Any:
    """The catalog's rows under the root, by start (a cursor: read as they are asked for); ``records``: with
    each run's record and kept config (``--json`` builds every run: one query, not one a run)."""
    order = "DESC" if descending else "ASC"
    # the root's range walked in the start index's order ("+path": not by the path index, which would sort
    # every run of the root first)
    where, args = _under(kept, "+")
    more = (", record, config_stat, config FROM runs LEFT JOIN records USING (path) LEFT JOIN configs USING (path)"
            if records else " FROM runs")
    return kept.rows._connection().execute(
        f"SELECT path, folder, names, files, ended, start, brief{more} WHERE {where} "
        f"ORDER BY coalesce(start, 0.0) {order}", args)


def _under(kept: Kept, plus: str = "") -> tuple[str, tuple[str, ...]]:
    """The catalog's rows under the root: the root itself when it is a run, else the root's range."""
    prefix = kept.root
    return ("path = ?", (prefix,)) if prefix in kept.keys else (f"{plus}path >= ? AND {plus}path < ?",
                                                                (prefix + "/", prefix + "0"))


def _picked(root: str | Path, kept: Kept, want: int, reverse: bool) -> list[CatalogRun] | None:
    """The kept runs that can be among the ``want`` last rows: the first ``want`` of the catalog's order
    and every run tied with the last of them; None when an entry changed since the look checked it."""
    try:
        found: list[tuple[Any, ...]] = []
        for row in _ordered(kept, not reverse):  # the last rows: the newest first
            if row[0] not in kept.keys:
                continue
            if len(found) >= want and (row[5] or 0.0) != (found[-1][5] or 0.0):
                break
            found.append(row)
    except Exception:  # noqa: BLE001 - any SQLite error: the whole look answers instead
        return None
    runs = [_catalog_run(root, kept, row) for row in found]
    return None if None in runs else runs


def _shown(root: str | Path, kept: Kept, key: str) -> tuple[str, str]:
    """A kept run's path as a plain read from ``root`` gives it (``Path(root) / rel``), and its source."""
    base = str(Path(root))
    if key == kept.root:
        return base, ""
    rel = key[len(kept.root.rstrip("/")) + 1:]
    return rel if base == "." else base.rstrip("/") + "/" + rel, rel.rpartition("/")[0]


def _catalog_run(root: str | Path, kept: Kept, row: tuple[Any, ...]) -> CatalogRun | None:
    """The run of a catalog row, if the row is still the entry the look checked (None when another look
    wrote it again since: its folder changed after this look's stat)."""
    if not row[4] or not kept.keys.has(row[0], row[1]):
        return None
    path, source = _shown(root, kept, row[0])
    return CatalogRun(path, row[0], source, row[1:], kept.rows, True)
