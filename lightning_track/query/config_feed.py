"""``lt ls -f``'s configs parsed in a worker process while the look itself lists and reads the runs.

Why: a first look with a filter on a config key parses every ``config.yaml``; parsed after the look, one at
a time, it cost as much again as the look (100,000 runs: ~25 s where the look alone is ~7.5 s) and built a
run object a run (~2 GB). Here each run folder the look lists with a ``config.yaml`` is handed, as it is
found, to a pool of worker processes (one a core beside this one, started once :data:`START` are waiting),
which parse it exactly as :func:`~.config_read.parse_config` does and hand back the flattened config as the
JSON bytes the catalog keeps, with the values of the filter's keys: the look and the parse share the cores.
A run the look did not hand over (kept from an earlier look without its config) is parsed when the filter
asks (:meth:`ConfigFeed.take`). Never in a process running other threads (a fork would copy their locks).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from stat import S_ISREG
from typing import Any

import orjson

from ..folder.layout import RunLayout
from .config_read import _CHUNK, POOL_MIN, _cores, _new_pool, parse_config

__all__ = ["ConfigFeed", "Fed"]

START = POOL_MIN  # configs waiting before the pool starts (fewer: parsed here when asked, a pool costs more)
CHUNK = _CHUNK  # configs a worker parses per task
_CONFIG = RunLayout.CONFIG

# what a run's config gave: (stat key, max(mtime, ctime) ns, kind, JSON bytes, {asked key: value})
# kind: "json" (bytes exact), "absent" (no config.yaml: {}), "error" or "flat" (the run asks again itself)
Fed = tuple[str, int, str, bytes | None, dict[str, Any] | None]


def _stat_key(st: os.stat_result) -> str:
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"  # catalog.stat_key's


def parse_fed(keys: Sequence[str], names: Sequence[str]) -> list[Fed]:
    """Each run folder's (``keys``: absolute) config parsed, with the values of ``names`` it has."""
    out: list[Fed] = []
    for key in keys:
        path = f"{key}/{_CONFIG}"
        try:
            st = os.stat(path)
        except OSError:
            st = None
        if st is None or not S_ISREG(st.st_mode):  # config_read.config_pending: no file, the config is {}
            out.append(("-", 0, "absent", b"{}", {}))
            continue
        kind, data = parse_config(path)
        values = None
        if kind == "json":
            flat = orjson.loads(data)
            values = {name: flat[name] for name in names if name in flat}
        out.append((_stat_key(st), max(st.st_mtime_ns, st.st_ctime_ns), kind, data if kind == "json" else None,
                    values))
    return out


class ConfigFeed:
    """The configs of one look's run folders, parsed beside it; ``names``: the config keys the filter asks."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.started_ns = time.time_ns()  # before the look: a config written after it is not kept
        self._waiting: list[str] = []
        self._sent: list[tuple[list[str], Any]] = []  # (keys, future)
        self._done: dict[str, Fed] = {}
        self._pool: Any = None
        self._forkable: bool | None = None

    def lister(self, inner: Callable[[Any], Any], stats: dict[str, tuple[str, Any]],
               known: dict[str, tuple[Any, ...]]) -> Callable[[Any], Any]:
        """``inner`` (the catalog's lister, which notes each folder's key in ``stats``), handing each folder
        with a ``config.yaml`` to the feed, but for a run the catalog ``known`` holds as running (a whole run
        each look: its config asked of it)."""
        waiting = self._waiting

        def listed(folder: Any) -> Any:
            names = inner(folder)
            if names and _CONFIG in names:
                key = stats[str(folder)][0]
                entry = known.get(key)
                if entry is not None and not entry[3]:
                    return names
                waiting.append(key)
                if len(waiting) >= CHUNK and (self._pool is not None or len(waiting) >= START):
                    self._send()
            return names

        return listed

    def _send(self) -> None:
        if self._pool is None and not self._start():
            return
        waiting = self._waiting
        for at in range(0, len(waiting), CHUNK):
            chunk = waiting[at:at + CHUNK]
            self._sent.append((chunk, self._pool.submit(parse_fed, chunk, self.names)))
        waiting.clear()

    def _start(self) -> bool:
        import threading

        if self._forkable is None:
            self._forkable = _cores() >= 2 and threading.active_count() == 1
        if not self._forkable:
            return False
        self._pool = _new_pool(max(1, _cores() - 1))
        return True

    def take(self, keys: Iterable[str]) -> dict[str, Fed]:
        """What each run folder of ``keys`` gave (those not fed during the look parsed now: in the pool when
        there are many), with everything fed so far."""
        from concurrent.futures.process import BrokenProcessPool

        done = self._done
        known = {key for chunk, _ in self._sent for key in chunk}
        known.update(done)
        self._waiting.extend(key for key in dict.fromkeys(keys) if key not in known)
        if len(self._waiting) >= START or self._pool is not None and self._waiting:
            self._send()
        done.update(zip(self._waiting, parse_fed(self._waiting, self.names), strict=True))  # few, or no pool: here
        self._waiting.clear()
        sent, self._sent = self._sent, []
        for chunk, future in reversed(sent):  # the look is over: this process takes the chunks not started
            if future.cancel():
                done.update(zip(chunk, parse_fed(chunk, self.names), strict=True))
        for chunk, future in sent:
            if future.cancelled():
                continue
            try:
                found = future.result()
            except BrokenProcessPool:  # a worker killed (out of memory): the rest here
                found = parse_fed(chunk, self.names)
            done.update(zip(chunk, found, strict=True))
        return done

    def close(self) -> None:
        """Stop the workers (the tasks not started are dropped)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
