"""Parsing ``config.yaml`` files: exactly ``yaml.load`` with PyYAML's safe C loader, in less CPU, and many
at once in a process pool.

Why: a filter on a config key over 100,000 runs parses 100,000 files. Of PyYAML's ~0.1 ms a file with
libyaml, about half is its pure-Python constructor (per-node bookkeeping for anchors and recursive
structures) and a fifth its resolver matching the same plain scalars against regular expressions again
and again. Here libyaml composes the node tree exactly as in ``yaml.load``, the resolver's answer for a
scalar's text is remembered (it depends on nothing else: the safe loader has no path resolvers), and the
tree is built in one plain walk by PyYAML's own constructors for str, int, float, bool and null. Anything
else (another tag, a merge key, a node used twice through an anchor, a deep tree) is loaded again by
``yaml.load`` itself, so the value or the error is always ``yaml.load``'s. Not a YAML reader of our own.

Many files at once (the first filter of a look: :func:`config_batch`): one worker process a core when
there are at least :data:`POOL_MIN` to parse, which hands back each flattened config as JSON bytes (the
catalog keeps those bytes as they are). Ctrl-C stops the workers and raises in the caller as usual; a
worker killed (out of memory) leaves the rest to be parsed here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from stat import S_ISREG
from typing import Any

import orjson

from ..folder.layout import RunLayout
from ..folder.records import flatten
from .config_cache import cached_config, remember_config

__all__ = ["load_yaml", "parse_config", "parse_many", "config_batch", "read_config", "config_pending", "take_config",
           "problems_found", "Parsed", "POOL_MIN"]

POOL_MIN = 2000  # fewer files than this: parsed here (a pool's start and transfers cost more than they save)
_CHUNK = 256  # files a worker parses per task: few round trips, an interrupt stops within one chunk

# what a parse gives: ("json", exact JSON bytes of the flat config) | ("flat", a flat config JSON cannot
# hold exactly) | ("error", the exception's text)
Parsed = tuple[str, Any]


class _Fallback(Exception):
    """The walk met something only PyYAML's constructor builds the same way."""


_TAG = "tag:yaml.org,2002:"
_STR, _MAP, _SEQ = _TAG + "str", _TAG + "map", _TAG + "seq"
_SCALARS: dict[str, Any] = {}  # tag -> PyYAML's constructor (a str is the node's text: construct_yaml_str)
_resolved: dict[tuple[Any, ...], str] = {}  # (kind, text, implicit) -> tag, as the resolver says
_built: dict[tuple[str, str], Any] = {}  # (tag, text) -> the int, float, bool or None its constructor made
_loaders: list[Any] = []  # [yaml.load's loader, ours or None]: set on the first parse (yaml costs a look ~10 ms)
ScalarNode = MappingNode = SequenceNode = None  # yaml.nodes' classes, set with the loaders


def _setup() -> list[Any]:
    global ScalarNode, MappingNode, SequenceNode
    if _loaders:
        return _loaders
    import yaml
    from yaml.constructor import SafeConstructor
    from yaml.nodes import MappingNode, ScalarNode, SequenceNode

    base = getattr(yaml, "CSafeLoader", None)
    ours = None
    names = ("str", "int", "float", "bool", "null")
    if base is not None and not base.yaml_path_resolvers and all(  # else someone changed the safe loader
            base.yaml_constructors.get(_TAG + name) is getattr(SafeConstructor, f"construct_yaml_{name}")
            for name in names):
        _SCALARS.update({_TAG + name: base.yaml_constructors[_TAG + name] for name in names})

        class ours(base):  # type: ignore[misc,valid-type,no-redef]
            def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
                key = (kind, value, implicit)
                tag = _resolved.get(key)
                if tag is None:
                    if len(_resolved) > 20_000:  # seeds and paths are rarely repeated: kept bounded
                        _resolved.clear()
                    tag = _resolved[key] = base.resolve(self, kind, value, implicit)
                return tag

    _loaders[:] = [base or yaml.SafeLoader, ours]
    return _loaders


def _build(loader: Any, node: Any, seen: set[int]) -> Any:
    kind = node.__class__
    if kind is ScalarNode:
        tag = node.tag
        if tag == _STR:
            return node.value
        key = (tag, node.value)
        value = _built.get(key, _built)
        if value is _built:
            construct = _SCALARS.get(tag)
            if construct is None:
                raise _Fallback
            if len(_built) > 20_000:
                _built.clear()
            value = _built[key] = construct(loader, node)
        return value
    if id(node) in seen:  # an alias: yaml.load shares one object (and may close a cycle)
        raise _Fallback
    seen.add(id(node))
    if kind is MappingNode and node.tag == _MAP:
        out = {}
        for key_node, value_node in node.value:
            if key_node.__class__ is not ScalarNode:  # a key made of a list or a map: PyYAML's error
                raise _Fallback
            key = key_node.value if key_node.tag == _STR else _build(loader, key_node, seen)
            out[key] = value_node.value if value_node.__class__ is ScalarNode and value_node.tag == _STR else \
                _build(loader, value_node, seen)
        return out
    if kind is SequenceNode and node.tag == _SEQ:
        return [_build(loader, item, seen) for item in node.value]
    raise _Fallback


def load_yaml(data: bytes) -> Any:
    """``yaml.load(data, Loader=yaml.CSafeLoader)`` (``SafeLoader`` without libyaml): the same value or error."""
    plain, ours = _loaders or _setup()
    if ours is None:
        import yaml

        return yaml.load(data, Loader=plain)
    loader = ours(data)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            return _build(loader, node, set())
        except (_Fallback, RecursionError):
            pass
    finally:
        loader.dispose()
    import yaml

    return yaml.load(data, Loader=plain)


def parse_config(path: str | Path) -> Parsed:
    """One ``config.yaml`` flattened (``{"model.lr": 0.01}``); never raises."""
    try:
        with open(path, "rb") as handle:
            flat = flatten(load_yaml(handle.read()) or {})
    except Exception as exc:  # noqa: BLE001 - any YAML or read error: the caller makes it one line
        return ("error", " ".join(str(exc).split()))
    try:
        data = orjson.dumps(flat)
        if orjson.loads(data) == flat:
            return ("json", data)
    except (TypeError, orjson.JSONEncodeError):
        pass
    return ("flat", flat)


def _parse_chunk(paths: list[str]) -> list[Parsed]:
    return [parse_config(path) for path in paths]


def _worker_start() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the pool


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _new_pool(workers: int) -> Any:
    """A process pool of ``workers`` that parse configs: forked where the system can (no re-import per worker),
    yaml imported once here first."""
    import multiprocessing  # here: ~30 modules a look without a pool never needs
    from concurrent.futures import ProcessPoolExecutor

    _setup()
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_start)


def parse_many(paths: Sequence[str], workers: int | None = None, least: int | None = None) -> Iterator[Parsed]:
    """:func:`parse_config` of each path, in order: in a pool of ``workers`` (one a core) when there are at
    least ``least`` (:data:`POOL_MIN`) of them and this process runs no other thread, else here."""
    import threading

    workers = _cores() if workers is None else workers
    # a process with other threads (a server) is not forked: a lock one of them holds would stay held
    if workers < 2 or len(paths) < (POOL_MIN if least is None else least) or threading.active_count() > 1:
        yield from map(parse_config, paths)
        return
    from concurrent.futures.process import BrokenProcessPool

    chunks = [list(paths[i:i + _CHUNK]) for i in range(0, len(paths), _CHUNK)]
    pool = _new_pool(workers)
    done = 0
    try:
        for parsed in pool.map(_parse_chunk, chunks):
            yield from parsed
            done += 1
    except BrokenProcessPool:  # a worker killed (out of memory): the rest parsed here
        for chunk in chunks[done:]:
            yield from _parse_chunk(chunk)
    finally:  # done, or left (Ctrl-C): the chunks not started are dropped, the running ones (~20 ms) end
        pool.shutdown(wait=True, cancel_futures=True)


_found: list[list[str]] = []  # the open problems_found() lists


@contextmanager
def problems_found() -> Iterator[list[str]]:
    """``with problems_found() as found:`` each config.yaml problem a run gets inside is added to ``found``
    (``lt ls`` says them: they come after the look's own problems were said)."""
    found: list[str] = []
    _found.append(found)
    try:
        yield found
    finally:
        _found.remove(found)


# -- a run's config: what RunInfo.config does ---------------------------------------------------------------

def read_config(info: Any) -> dict[str, Any]:
    """``info.config``: the flattened ``config.yaml``, read once; a broken file is a problem on the run."""
    if info._config is None:
        pending = config_pending(info)
        if pending is not None:
            info._config = {}  # asked again while parsing: empty, as a plain read would have it
            take_config(info, pending[1], pending[2], parsed_config(info, pending[1]))
    return info._config


def config_pending(info: Any) -> tuple[Any, str, os.stat_result] | None:
    """``(info, path, stat)`` when ``info``'s config must be parsed from its file, else None (the config is
    set: empty without a file, the catalog's when the file is as it kept it, the config cache's without a
    catalog)."""
    if info._config is not None:
        return None
    folder = str(info.path)  # a str, not a Path: 100,000 of them in a first filter
    path = RunLayout.CONFIG if folder == "." else os.path.join(folder, RunLayout.CONFIG)  # as Path's / gives it
    try:
        stat = os.stat(path)
    except OSError:
        stat = None
    if stat is None or not S_ISREG(stat.st_mode):
        info._config = {}
        return None
    if info._config_hint is not None:
        from .catalog import stat_key

        hinted = _hinted_config(info._config_hint, stat_key(stat))
        if hinted is not None:
            info._config = hinted
            return None
    if info._config_sink is None:  # through the catalog the catalog keeps configs: no second cache
        cached = cached_config(path, stat)
        if cached is not None:
            info._config = cached
            return None
    return info, path, stat


def _hinted_config(hint: tuple[str, bytes], key: str) -> dict[str, Any] | None:
    """The catalog's flattened config (``hint``: the stat key it was kept under, its JSON) when ``config.yaml``'s
    stat key is still ``key``."""
    if hint[0] != key:
        return None
    try:
        flat = orjson.loads(hint[1])
    except orjson.JSONDecodeError:
        return None
    return flat if isinstance(flat, dict) else None


def take_config(info: Any, path: str, stat: os.stat_result, parsed: Parsed) -> None:
    """Give ``info`` its parsed config (or its problem, also to each :func:`problems_found`), and keep it."""
    kind, value = parsed
    if kind == "error":
        info._config = {}
        info.problems.append(f"{path}: not readable YAML ({value[:200]})")
        for found in _found:
            found.append(info.problems[-1])
        return
    info._config = flat = orjson.loads(value) if kind == "json" else value
    if info._config_sink is not None:  # the catalog's: given the JSON bytes already checked to read back equal
        info._config_sink(info, stat, flat, value if kind == "json" else None)
    else:
        remember_config(path, stat, flat)


# -- the runs of one filter: when many of them must parse their config, all of those are parsed at once --

FIRST = 16  # configs a batch's runs parse on their own before it guesses how many more are to come
_batch: list[dict[str, Any]] = []  # the innermost config_batch's state


@contextmanager
def config_batch(runs: Sequence[Any], keys: Sequence[str]) -> Iterator[None]:
    """Inside, when the runs' first :data:`FIRST` config parses say that at least :data:`POOL_MIN` more are
    to come among the runs not yet asked (a filter asks in order), every one of those that a filter on
    ``keys`` needs is parsed at once (:func:`parse_many`); else each run parses its own when asked."""
    _batch.append({"runs": runs, "keys": keys, "asked": 0, "done": None})
    try:
        yield
    finally:
        _batch.pop()


def parsed_config(run: Any, path: str) -> Parsed:
    """``run``'s config file parsed: from its batch's parse when it is in one, else now."""
    if not _batch:
        return parse_config(path)
    state = _batch[-1]
    done = state["done"]
    if done is None:
        state["asked"] += 1
        if state["asked"] < FIRST or _cores() < 2:
            return parse_config(path)
        done = state["done"] = {}
        _parse_batch(state, run, path)
    found = done.pop(id(run), None)
    return parse_config(path) if found is None else found


def _parse_batch(state: dict[str, Any], first: Any, path: str) -> None:
    """The runs after ``first`` whose config is not known yet, if enough: their files parsed at once, the
    results given to them (``first``'s kept for it)."""
    runs = state["runs"]
    at = next((i for i, run in enumerate(runs) if run is first), len(runs))
    if state["asked"] * (len(runs) - at - 1) < POOL_MIN * (at + 1):  # more to come at the rate so far
        return
    pending = [(first, path, None)]
    for run in runs[at + 1:]:
        pending_of = getattr(run, "config_pending", None)  # a run of another kind parses its own
        found = None if pending_of is None else pending_of(state["keys"])
        if found is not None:
            pending.append(found)
    results = parse_many([item[1] for item in pending])
    try:
        state["done"][id(first)] = next(results)
        for (info, where, stat), parsed in zip(pending[1:], results, strict=True):
            take_config(info, where, stat, parsed)
    finally:
        results.close()  # an interrupt here stops the workers now, not when the traceback is dropped
