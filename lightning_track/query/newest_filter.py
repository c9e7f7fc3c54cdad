"""``lt ls -f``'s filter over a lean look's kept runs: one pass over the catalog's columns, no run built.

Why: at 100,000 runs a filter such as ``model.lr<1e-3`` asked of a run object a run cost as much as the
look itself. Here each part of the filter is answered over every kept run at once, from what the catalog
holds: a config key's values (one query: SQLite picks the key out of each kept config), and the fields a
catalog row holds (name, source, start, an ended run's status, no tags). A kept run the catalog cannot
answer for (no kept config, as a config.yaml that does not parse; tags) is built and matched as a whole
look matches it, with the same messages; a filter on any other key is left to the whole look.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Sequence
from typing import Any

import orjson

from .catalog_kept import Kept
from .catalog_rows import _config_name
from .filters import MISSING, Bool, Cmp, Filter, Node, Not, compare
from .runs import FIELD_NAMES, RunInfo

__all__ = ["answerable", "config_keys", "narrow"]

_ROW_FIELDS = frozenset({"status", "name", "source", "start", "tag"})  # a kept catalog row answers these
_FIELDS = frozenset(FIELD_NAMES)
_ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "=": operator.eq, "==": operator.eq}


def answerable(filters: Sequence[Filter]) -> bool:
    """Whether every key of ``filters`` is a config key or a field the catalog's row holds."""
    return all(key in _ROW_FIELDS or _config_name(key, _FIELDS) for f in filters for key in f.keys())


def config_keys(filters: Sequence[Filter]) -> list[str]:
    """The config keys ``filters`` ask (``model.lr`` for ``config.model.lr``)."""
    return list(dict.fromkeys(name for f in filters for key in f.keys() if (name := _config_name(key, _FIELDS))))


def narrow(kept: Kept, built: list[Any], filters: Sequence[Filter], rows: list[tuple[Any, ...]],
           make: Any, shown: Any, order: Any) -> tuple[list[Any], list[str], list[str]] | None:
    """Narrow ``kept`` (in place) to the kept runs that match every filter; the matching run objects (of
    ``built`` and the kept runs built to be asked, in ``order``), the config problems the filter met and
    the filter keys no run has. ``rows``: the catalog's rows of the kept runs (path, folder, names, files,
    ended, start, brief); ``make(row)``: a row's :class:`~.catalog_rows.CatalogRun` (None: the entry changed, then
    the answer is None: a whole look answers); ``shown(key)``: a kept run's (path as found, source)."""
    source = kept.rows
    names = {key: _config_name(key, _FIELDS) for f in filters for key in f.keys()}
    values = {name: source.config_values(name) for name in names.values() if name}
    briefs: dict[bytes, dict[str, Any]] = source.briefs
    keys = kept.keys
    sure: list[tuple[Any, ...]] = []
    unsure: list[Any] = []
    tagged = "tag" in names
    config_columns = list(values.values())
    feed = kept.feed if values else None
    need: list[tuple[Any, ...]] = []  # sure once their config is parsed (the feed's)
    for row in rows:
        path, folder = row[0], row[1]
        if not keys.has(path, folder):
            continue  # a run the look built (or an entry written again since: counted below)
        known = not (tagged and b'"t":true' in row[6])
        if known:
            for column in config_columns:
                found = column.get(path)
                if found is None or found[0] != folder:  # no kept config (one that failed to parse has none)
                    known = False
                    break
            if not known and feed is not None:
                need.append(row)  # its config from the feed, below
                continue
        if known:
            sure.append(row)
            continue
        run = make(row)
        if run is None:
            return None
        unsure.append(run)
    for parsed, row in _fed(feed, need, values) if need else ():
        if parsed:
            sure.append(row)
            continue
        run = make(row)  # a config the catalog cannot keep (one that does not parse: the run says so itself)
        if run is None:
            return None
        unsure.append(run)
    if len(sure) + len(unsure) != len(keys):
        return None  # a kept key without its row: the catalog changed under the look

    def lookup_of(key: str) -> Any:
        """``key``'s value for each sure row, by its index, as CatalogRun.value answers it."""
        name = names[key]
        if name:
            column = values[name]
            return [column[row[0]][1] for row in sure]
        if key == "start":
            return [MISSING if row[5] is None else row[5] for row in sure]
        if key == "tag":
            return [[]] * len(sure)
        if key == "status":
            return [_brief(briefs, row[6])["s"] for row in sure]
        found = [shown(row[0]) for row in sure]  # (path as found, source)
        return [path.rpartition("/")[2] for path, _ in found] if key == "name" else [s for _, s in found]

    columns: dict[str, list[Any]] = {}

    def matching(node: Node) -> set[int]:
        if isinstance(node, Cmp):
            column = columns.get(node.key)
            if column is None:
                column = columns[node.key] = lookup_of(node.key)
            if node.op is None:
                return {i for i, v in enumerate(column) if v is not MISSING and bool(v) and v == v}
            op, literals = node.op, node.literals
            want = literals[0].value
            test = _ORDER.get(op) if len(literals) == 1 and type(want) is float and want == want else None
            if test is not None:  # filters._one's first case (model.lr<1e-3), asked here without a call a run
                return {i for i, v in enumerate(column)
                        if (v == v and test(v, want) if type(v) is float else compare(v, op, literals))}
            return {i for i, v in enumerate(column) if compare(v, op, literals)}
        if isinstance(node, Not):
            return set(range(len(sure))) - matching(node.inner)
        assert isinstance(node, Bool)
        parts = [matching(part) for part in node.parts]
        return set.intersection(*parts) if node.op == "and" else set.union(*parts)

    chosen = set(range(len(sure)))
    for f in filters:
        chosen &= matching(f.root)
    from .config_read import problems_found
    from .runs import filter_runs

    if feed is not None:
        _give(feed, built)
    candidates = sorted([*built, *unsure], key=order)
    with problems_found() as broken:  # a config.yaml the filter read and could not parse: said as a whole look
        matched = filter_runs(candidates, list(filters))
    unknown = [key for key in dict.fromkeys(names) if key not in _FIELDS and _unknown(key, columns, sure, candidates)]
    kept.keys = {sure[i][0]: sure[i][1] for i in sorted(chosen)}
    kept.briefs = {}
    kept.sourced = False
    below = len(kept.root.rstrip("/")) + 1  # a key's part after the root: a source when it has a "/"
    for i in chosen:
        row = sure[i]
        kept.briefs[row[6]] = kept.briefs.get(row[6], 0) + 1
        if not kept.sourced and "/" in row[0][below:]:
            kept.sourced = True
    return matched, broken, unknown


def _fed(feed: Any, need: list[tuple[Any, ...]], values: dict[str, dict[str, tuple[str, Any, str]]]) -> Any:
    """``(True, row)`` for each of ``need``'s rows whose config the feed parsed into ``values`` (and the
    catalog keeps, when settled), ``(False, row)`` for the others."""
    fed = feed.take(row[0] for row in need)
    for row in need:
        got = fed.get(row[0])
        if got is None or got[2] not in ("json", "absent"):
            yield False, row
            continue
        path, folder, found = row[0], row[1], got[4]
        for name, column in values.items():
            column[path] = (folder, found.get(name, MISSING), got[0])
        _keep(feed, path, got)
        yield True, row


def _give(feed: Any, built: list[Any]) -> None:
    """The runs the look read whole (a running run's first look) get the config the feed parsed for them
    (one that does not parse: the run reads it itself and says so)."""
    runs = {os.path.abspath(run.path): run for run in built if type(run) is RunInfo and run._config is None}
    fed = feed.take(runs) if runs else {}
    for key, run in runs.items():
        got = fed.get(key)
        if got is not None and got[2] in ("json", "absent"):
            run._config = orjson.loads(got[3])
            _keep(feed, key, got)


def _keep(feed: Any, key: str, got: Any) -> None:
    """Keep a run's config the feed parsed beside its catalog entry if it was written before the look (as
    :meth:`~.catalog.Catalog.config_sink` keeps one)."""
    from . import catalog

    if got[1] < feed.started_ns - int(catalog.RACY_S * 1e9):
        catalog._pending_configs.append((key, got[0], got[3]))
        catalog._register_flush()


def _unknown(key: str, columns: dict[str, list[Any]], sure: list[Any], candidates: list[Any]) -> bool:
    """No run has ``key`` (its column over the sure rows, then the run objects)."""
    column = columns.get(key, ())
    return all(v is MISSING for v in column) and all(run.value(key) is MISSING for run in candidates)


def _brief(briefs: dict[bytes, dict[str, Any]], brief: bytes) -> dict[str, Any]:
    parsed = briefs.get(brief)
    if parsed is None:
        parsed = briefs[brief] = orjson.loads(brief)
    return parsed

