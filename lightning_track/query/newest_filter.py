"""``lt ls -f``'s filter over a lean look's kept runs: answered from the catalog, no run built.

Why: at 100,000 runs a filter such as ``model.lr<1e-3`` asked of a run object a run cost as much as the
look itself; asked of every kept config's value in Python (each fetched and decoded, then
:func:`~.filters.compare`), it still added ~0.6 s to the look's ~0.7 s. Here SQLite answers a filter on config
keys as the look loads the catalog's rows (:mod:`.filters_sql`, :meth:`~.catalog_kept.Kept.load`): each kept
run comes with 1, 0 or "not sure", and only the last are asked here (a value SQL cannot compare exactly as
``compare`` does: a string read as a number, a list, a glob, a regex, a field of the run's row), once per
distinct value. A filter with no config key (or one SQL cannot say) is answered over the catalog's rows in
Python, column by column (:func:`_narrow_rows`). A kept run the catalog cannot answer for (no kept config,
as a config.yaml that does not parse; tags) is built and matched as a whole look matches it, with the same
messages; a filter on any other key is left to the whole look.
"""
from __future__ import annotations

import operator
import os
import sqlite3
from collections.abc import Sequence
from itertools import compress
from typing import Any

import orjson

from .catalog_kept import ASK, DEEP, NO_CONFIG, TAKEN, YES, Kept
from .catalog_rows import _config_name
from .filters import MISSING, Bool, Cmp, Filter, Node, Not, compare
from .filters_sql import plan
from .runs import FIELD_NAMES, RunInfo

__all__ = ["answerable", "config_keys", "narrow", "planned", "last_narrow"]

_ROW_FIELDS = frozenset({"status", "name", "source", "start", "tag"})  # a kept catalog row answers these
_FIELDS = frozenset(FIELD_NAMES)
_ORDER = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "=": operator.eq, "==": operator.eq}


def answerable(filters: Sequence[Filter]) -> bool:
    """Whether every key of ``filters`` is a config key or a field the catalog's row holds."""
    return all(key in _ROW_FIELDS or _config_name(key, _FIELDS) for f in filters for key in f.keys())


def config_keys(filters: Sequence[Filter]) -> list[str]:
    """The config keys ``filters`` ask (``model.lr`` for ``config.model.lr``)."""
    return list(dict.fromkeys(name for f in filters for key in f.keys() if (name := _config_name(key, _FIELDS))))


def planned(filters: Sequence[Filter]) -> Any:
    """The SQL that answers ``filters`` as the look loads the catalog's rows (:mod:`.filters_sql`), or None."""
    return plan(filters, lambda key: _config_name(key, _FIELDS))


def narrow(kept: Kept, built: list[Any], filters: Sequence[Filter], conn: sqlite3.Connection, where: str,
           args: Sequence[Any], make: Any, shown: Any, order: Any) -> tuple[list[Any], list[str], list[str]] | None:
    """Narrow ``kept`` (in place) to the kept runs that match every filter; the matching run objects (of
    ``built`` and the kept runs built to be asked, in ``order``), the config problems the filter met and
    the filter keys no run has. ``conn``, ``where``, ``args``: the catalog and its rows of the look's root;
    ``make(row)``: a row's :class:`~.catalog_rows.CatalogRun` (row: path, folder, names, files, ended, start,
    brief; None: the entry changed, then the answer is None: a whole look answers); ``shown(key)``: a kept
    run's (path as found, source). Raises sqlite3.Error.

    With a plan (:func:`planned`), SQLite answered each kept run as the look loaded its row: 1, 0 or "not
    sure"; only the last (and the runs without a kept config) are asked here, once per distinct value."""
    names = {key: _config_name(key, _FIELDS) for f in filters for key in f.keys()}
    if kept.keys.states is not None:
        return _narrow_answered(kept, built, filters, names, conn, make, shown, order)
    rows = conn.execute(f"SELECT path, folder, NULL, NULL, ended, start, brief FROM runs WHERE {where}",
                        args).fetchall()
    last_narrow.update(sql=0, python=len(rows), planned=False, beside=False)
    return _narrow_rows(kept, built, filters, rows, make, shown, order)


last_narrow: dict[str, Any] = {}  # the last narrowing: kept runs answered by SQL, here (tests ask which answered)


def _narrow_answered(kept: Kept, built: list[Any], filters: Sequence[Filter], names: dict[str, str],
                     conn: sqlite3.Connection, make: Any, shown: Any,
                     order: Any) -> tuple[list[Any], list[str], list[str]] | None:
    """:func:`narrow` of a look that loaded SQLite's answers (:meth:`~.catalog_kept.KeptKeys.load_answered`)."""
    keys, source, feed, asked = kept.keys, kept.rows, kept.feed, kept.plan.keys
    states, flags = keys.states, keys.kept
    held = list(compress(range(len(flags)), flags))  # the kept rows (flag 1)
    chosen = [i for i in held if states[i] & 3 == YES]  # kept rows that match
    ask = [i for i in held if states[i] & 3 == ASK]  # kept rows Python answers
    present: set[str] = set()  # asked keys some kept run's config has (seen so far)
    unsure: list[Any] = []
    need: list[tuple[Any, ...]] = []  # rows whose config the feed parses
    here: list[tuple[tuple[Any, ...], tuple[Any, ...]]] = []  # (row, texts) Python answers
    rows: dict[int, tuple[Any, ...]] = {}  # a kept row Python answers -> its row, as make takes it
    details = _details(conn, kept.plan, [keys.extra[i] for i in ask])
    if details is None:
        return None  # an entry written again since the look: a whole look answers
    for i in ask:
        row = keys.extra[i]
        start, texts = details[row[0]]
        rows[i] = entry = (row[1], row[2], None, None, 1, start, row[3])  # as narrow's make takes it
        if kept.tagged and b'"t":true' in row[3]:  # its tags: the run is built to be asked
            run = make(entry)
            if run is None:
                return None
            unsure.append(run)
        elif row[4] & 3 == NO_CONFIG:
            need.append(entry)
        else:
            here.append((entry, texts))
    taken = _taken(keys.taken, conn, kept.plan)
    if taken is None:
        return None  # an entry written again since the look: a whole look answers
    for entry, texts, has_config in taken:
        if kept.tagged and b'"t":true' in entry[6]:
            run = make(entry)
            if run is None:
                return None
            unsure.append(run)
        elif has_config:
            here.append((entry, texts))
        else:
            need.append(entry)
    if need and feed is None:
        for entry in need:
            run = make(entry)
            if run is None:
                return None
            unsure.append(run)
        need = []
    values: dict[str, dict[str, tuple[str, Any, str]]] = {name: {} for name in asked}
    fed: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    for parsed, entry, found in _fed(feed, need, values) if need else ():
        if parsed:
            fed.append((entry, found))
            continue
        run = make(entry)  # a config the catalog cannot keep (one that does not parse: the run says so itself)
        if run is None:
            return None
        unsure.append(run)

    briefs: dict[bytes, dict[str, Any]] = source.briefs
    pure = all(names.values())  # config keys only: the answer is the values' (asked once per distinct texts)

    def matches(row: tuple[Any, ...], config: dict[str, Any]) -> bool:
        def lookup(key: str) -> Any:
            name = names[key]
            if name:
                return config.get(name, MISSING)
            if key == "start":
                return MISSING if row[5] is None else row[5]
            if key == "tag":
                return []
            if key == "status":
                return _brief(briefs, row[6])["s"]
            path, found = shown(row[0])  # (path as found, source)
            return path.rpartition("/")[2] if key == "name" else found

        return all(f.matches(lookup) for f in filters)

    memo: dict[tuple[Any, ...], bool] = {}
    matched_here: set[str] = set()  # the paths of the kept runs Python found matching
    for entry, texts in here:
        present.update(name for name, text in zip(asked, texts, strict=True) if text is not None)
        answer = memo.get(texts) if pure else None
        if answer is None:
            answer = matches(entry, _decoded(asked, texts))
            if pure:
                memo[texts] = answer
        if answer:
            matched_here.add(entry[0])
    for entry, found in fed:
        present.update(name for name in asked if name in found)
        if matches(entry, found):
            matched_here.add(entry[0])
    last_narrow.update(sql=keys.count - len(ask), python=len(here) + len(fed), planned=True, beside=kept.beside)

    from .config_read import problems_found
    from .runs import filter_runs

    if feed is not None:
        _give(feed, built)
    candidates = sorted([*built, *unsure], key=order)
    _values_of_built(source, conn, kept.plan, candidates, values)
    with problems_found() as broken:  # a config.yaml the filter read and could not parse: said as a whole look
        matched = filter_runs(candidates, list(filters))
    unknown = [key for key in dict.fromkeys(names) if key not in _FIELDS and names[key] and names[key] not in present
               and not _kept_has(conn, kept, asked.index(names[key])) and
               all(run.value(key) is MISSING for run in candidates)]
    chosen += [i for i in ask if rows[i][0] in matched_here]
    taken_chosen = {entry[0]: entry for entry, *_ in taken if entry[0] in matched_here}
    keys.narrow_to(chosen, {key: entry[1] for key, entry in taken_chosen.items()})
    kept.briefs = {}
    for i in chosen:
        brief = keys.briefs[keys.brief_of[i]]
        kept.briefs[brief] = kept.briefs.get(brief, 0) + 1
    for entry in taken_chosen.values():
        kept.briefs[entry[6]] = kept.briefs.get(entry[6], 0) + 1
    below = len(kept.root.rstrip("/")) + 1  # a key's part after the root: a source when it has a "/"
    kept.sourced = any(states[i] & DEEP for i in chosen) or any("/" in key[below:] for key in taken_chosen)
    return matched, broken, unknown


def _kept_has(conn: sqlite3.Connection, kept: Kept, i: int) -> bool:
    """Whether some kept run's kept config has the plan's ``i``-th key (before the keys are narrowed): the
    root's rows with it, until one is a kept run's (the first, most often; all only when none has it)."""
    has = kept.keys.has
    runs, params = kept.plan.select("path, folder", "path >= ? AND path < ? AND ended",
                                    [kept.root + "/", kept.root + "0"], join="JOIN")
    for path, folder in conn.execute(f"SELECT path, folder FROM {runs} WHERE v{i} IS NOT NULL", params):
        if has(path, folder):
            return True
    return False


def _details(conn: sqlite3.Connection, planned: Any, rows: list[tuple[Any, ...]]) -> dict[int, Any] | None:
    """For the kept rows (rowid, path, folder, ...) Python answers: rowid -> (start, the asked keys' JSON
    texts); None when one of them was written again since the look loaded it."""
    if not rows:
        return {}
    runs, params = planned.select("runs.rowid AS r, folder, start", "runs.rowid IN (SELECT value FROM json_each(?))",
                                  [orjson.dumps([row[0] for row in rows]).decode()])
    found = {row[0]: row[1:] for row in conn.execute(f"SELECT r, folder, start, {planned.texts} FROM {runs}", params)}
    out = {}
    for row in rows:
        got = found.get(row[0])
        if got is None or got[0] != row[2]:
            return None
        out[row[0]] = (got[1], got[2:])
    return out


def _taken(taken: dict[str, str], conn: sqlite3.Connection, planned: Any) -> list[tuple[Any, ...]] | None:
    """The rows of the runs the look read again and kept (``taken``: key -> folder it checked), each
    ``(row, the asked keys' JSON texts, has a kept config)``; None when one changed since."""
    if not taken:
        return []
    runs, params = planned.select("path, folder, ended, start, brief, config IS NOT NULL AS c",
                                  "path IN (SELECT value FROM json_each(?))", [orjson.dumps(list(taken)).decode()])
    found = conn.execute(f"SELECT path, folder, NULL, NULL, ended, start, brief, c, {planned.texts} FROM {runs}",
                         params).fetchall()
    out = [(row[:7], row[8:], row[7]) for row in found if taken.get(row[0]) == row[1]]
    return out if len(out) == len(taken) else None


def _values_of_built(source: Any, conn: sqlite3.Connection, planned: Any, candidates: list[Any],
                     values: dict[str, dict[str, tuple[str, Any, str]]]) -> None:
    """The kept config values of the catalog's runs the look built (running, with problems, asked for
    their tags), where they look them up (:meth:`~.catalog_rows.RowSource.config_value`; a run not there
    reads its own config): one query for those runs, not every kept config's."""
    from .catalog_rows import CatalogRun

    paths = [run._key for run in candidates if type(run) is CatalogRun]
    if paths:
        runs, params = planned.select("path, folder, config_stat", "path IN (SELECT value FROM json_each(?))",
                                      [orjson.dumps(paths).decode()], join="JOIN")
        rows = conn.execute(f"SELECT path, folder, config_stat, {planned.texts} FROM {runs}", params).fetchall()
        for i, name in enumerate(planned.keys, 3):  # each key's texts decoded at once
            found = [row[i] for row in rows if row[i] is not None]
            decoded = iter(orjson.loads(("[" + ",".join(found) + "]").encode()))
            column = values[name]
            for row in rows:
                column[row[0]] = (row[1], MISSING if row[i] is None else next(decoded), row[2])
    for name, column in values.items():
        source._values.setdefault(name, column)


def _decoded(asked: list[str], texts: tuple[Any, ...]) -> dict[str, Any]:
    return {name: orjson.loads(text) for name, text in zip(asked, texts, strict=True) if text is not None}


def _keep_chosen(kept: Kept, chosen: list[tuple[Any, ...]], places: list[int]) -> None:
    """The kept runs from now on: ``chosen`` (rows, at ``places``: :meth:`~.catalog_kept.KeptKeys.place`'s),
    with their briefs counted."""
    kept.keys.narrow_to([at for at in places if at != TAKEN],
                        {row[0]: row[1] for row, at in zip(chosen, places, strict=True) if at == TAKEN})
    kept.briefs = {}
    kept.sourced = False
    below = len(kept.root.rstrip("/")) + 1  # a key's part after the root: a source when it has a "/"
    for row in chosen:
        kept.briefs[row[6]] = kept.briefs.get(row[6], 0) + 1
        if not kept.sourced and "/" in row[0][below:]:
            kept.sourced = True


def _narrow_rows(kept: Kept, built: list[Any], filters: Sequence[Filter], rows: list[tuple[Any, ...]],
                 make: Any, shown: Any, order: Any) -> tuple[list[Any], list[str], list[str]] | None:
    """:func:`narrow` in Python alone (no config key SQL can ask: a filter on the row's fields): ``rows``:
    the catalog's rows of the kept runs (path, folder, names, files, ended, start, brief)."""
    source = kept.rows
    names = {key: _config_name(key, _FIELDS) for f in filters for key in f.keys()}
    values = {name: source.config_values(name) for name in names.values() if name}
    briefs: dict[bytes, dict[str, Any]] = source.briefs
    keys = kept.keys
    sure: list[tuple[Any, ...]] = []
    places: list[int] = []  # each sure row's place in the keys (to narrow them to the matches)
    unsure: list[Any] = []
    tagged = "tag" in names
    config_columns = list(values.values())
    feed = kept.feed if values else None
    need: list[tuple[Any, ...]] = []  # sure once their config is parsed (the feed's)
    need_places: list[int] = []
    for row in rows:
        path, folder = row[0], row[1]
        at = keys.place(path, folder)
        if at == -1:
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
                need_places.append(at)
                continue
        if known:
            sure.append(row)
            places.append(at)
            continue
        run = make(row)
        if run is None:
            return None
        unsure.append(run)
    for (parsed, row, _), at in zip(_fed(feed, need, values) if need else (), need_places, strict=True):
        if parsed:
            sure.append(row)
            places.append(at)
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
    picked = sorted(chosen)
    _keep_chosen(kept, [sure[i] for i in picked], [places[i] for i in picked])
    return matched, broken, unknown


def _fed(feed: Any, need: list[tuple[Any, ...]], values: dict[str, dict[str, tuple[str, Any, str]]]) -> Any:
    """``(True, row, values)`` for each of ``need``'s rows whose config the feed parsed into ``values`` (and
    the catalog keeps, when settled; the values of its asked keys), ``(False, row, None)`` for the others."""
    fed = feed.take(row[0] for row in need)
    for row in need:
        got = fed.get(row[0])
        if got is None or got[2] not in ("json", "absent"):
            yield False, row, None
            continue
        path, folder, found = row[0], row[1], got[4]
        for name, column in values.items():
            column[path] = (folder, found.get(name, MISSING), got[0])
        _keep(feed, path, got)
        yield True, row, found


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
    """Keep a run's config the feed parsed beside its catalog entry if it was settled when the feed started
    (:func:`~.catalog.keep_config`, as the catalog's own config sink keeps one)."""
    from .catalog import RACY_S, keep_config

    keep_config(key, got[0], got[1], feed.started_ns - int(RACY_S * 1e9), got[3])


def _unknown(key: str, columns: dict[str, list[Any]], sure: list[Any], candidates: list[Any]) -> bool:
    """No run has ``key`` (its column over the sure rows, then the run objects)."""
    column = columns.get(key, ())
    return all(v is MISSING for v in column) and all(run.value(key) is MISSING for run in candidates)


def _brief(briefs: dict[bytes, dict[str, Any]], brief: bytes) -> dict[str, Any]:
    parsed = briefs.get(brief)
    if parsed is None:
        parsed = briefs[brief] = orjson.loads(brief)
    return parsed

