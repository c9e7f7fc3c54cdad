"""Settled runs: which runs a pass must list, and which it may record as needing no listing.

A run is *settled* when its summary.json says it ended (completed, failed, interrupted), none of its files
or folders changed for SETTLE_S, and a pass found its mirror identical. Later passes list a settled run
again only when the mtime of one of its folders changes on either side: a file created, deleted, renamed
or atomically replaced (every write lightning_track makes to an ended run: a resume, a note, an export, a
post-processing). An in-place write to a settled run's file, on either side, changes no folder (``echo >>
logs.txt`` on the server long after the run ended, an edit in place on the mirror): ``--full``
(SyncOptions.full) lists every run and catches it. The late writes of an
ending run (the last TensorBoard events, lt-run's closing console lines) land well within SETTLE_S.

Why folder mtimes: they are the one cheap signal both sides give for a whole run (one stat per folder,
over SSH one ``find`` that stats them), where rsync and a plain pass stat every file.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
from array import array
from collections.abc import Iterator
from typing import Any

from ..folder.layout import RunLayout
from ..vocabulary import FINAL_STATUSES
from .manifest import Manifest
from .manifest import top_name as _top
from .plan import Plan
from .runtable import SettledRuns
from .state import SyncState
from .transport import DIR, Looker, Transport

__all__ = ["SETTLE_S", "top_names", "unsettled", "settle"]

SETTLE_S = 300  # seconds a run's files and folders must have been quiet, after it ended, to be settled
SUMMARY_FIRST = 1 << 16  # bytes of a summary.json read first when checking whether its run ended


async def top_names(src: Transport, dst: Transport | None, runs_glob: str | None) -> tuple[list[str], bool]:
    """Every top-level name on either side (one look at each root), ``runs_glob`` applied; whether ``dst`` lacks one
    of them (bulk.py's pull stream then starts with the listing, without a look of its own)."""
    looks = [src.skeleton()] + ([dst.skeleton()] if dst is not None else [])
    sides = [{e.rel for e in tops} for tops in await asyncio.gather(*looks)]
    names = set[str]().union(*sides)
    if runs_glob is not None:
        names = {n for n in names if fnmatch.fnmatchcase(n, runs_glob)}
    return sorted(names), dst is not None and not names <= sides[1]


class _Side(Looker):
    """One side's look at the settled runs of a cover: which rows it found as recorded, and its other root names.

    A byte a row (0: not seen, 1: seen, not as recorded, 2: its own folder as recorded) and, where runs have
    deeper folders, a count a row of those found as recorded: no string, entry or dict a run."""

    def __init__(self, table: SettledRuns, cover: int, side: int, runs_glob: str | None) -> None:
        self.table, self.cover, self.side, self.runs_glob = table, cover, side, runs_glob
        self.reset()

    def reset(self) -> None:
        rows = self.table.rows
        self.seen = bytearray(rows)
        self.deep = array("I", bytes(4 * rows)) if self.table.deep else None
        self.others: set[str] = set()  # root names that are no settled run of the cover

    def entry(self, rel: str, kind: str, mtime: int) -> None:
        table = self.table
        if "/" in rel:  # a deeper folder of a settled run
            top, sub = rel.split("/", 1)
            row = table.find(top)
            if row >= 0 and self.deep is not None and kind == DIR:
                shape, at = table.folders(row, self.side)
                if sub in shape and table.times[at + shape.index(sub)] == mtime:
                    self.deep[row] += 1
            return
        if self.runs_glob is not None and not fnmatch.fnmatchcase(rel, self.runs_glob):
            return
        row = table.find(rel)
        if row < 0 or not table.live[row] or table.cover(row) != self.cover or kind != DIR:
            self.others.add(rel)
            return
        shape, at = table.folders(row, self.side)
        self.seen[row] = 2 if table.times[at + shape.index("")] == mtime else 1

    def _deep_rows(self) -> Iterator[int]:
        table, seen = self.table, self.seen
        for row in table.live_rows(self.cover):
            if seen[row] != 1 and len(table.folders(row, self.side)[0]) > 1:
                yield row

    def known(self) -> Iterator[str]:
        table = self.table
        for row in self._deep_rows():
            top = table.name(row)
            for sub in table.folders(row, self.side)[0]:
                if sub:
                    yield f"{top}/{sub}"

    def known_count(self) -> int:
        if not self.table.deep:
            return 0
        return sum(len(self.table.folders(row, self.side)[0]) - 1 for row in self._deep_rows())

    def lacks(self, names: set[str]) -> bool:
        """Whether one of ``names`` (root names ``runs_glob`` lets through) was not among this side's entries."""
        table, seen = self.table, self.seen
        return any(name not in self.others and ((row := table.find(name)) < 0 or not seen[row]) for name in names)

    def as_recorded(self, row: int) -> bool:
        """Every folder of the row found with its recorded mtime."""
        if self.seen[row] != 2:
            return False
        subs = len(self.table.folders(row, self.side)[0]) - 1
        return not subs or (self.deep is not None and self.deep[row] == subs)


async def unsettled(state: SyncState, src: Transport, dst: Transport, cover: str,
                    runs_glob: str | None) -> tuple[list[str] | None, int, int, bool]:
    """The top-level names this pass lists (None: all), how many settled runs it skips, their files, and whether
    ``dst`` lacks one of those names (as :func:`top_names` says).

    One look at each side (its root's entries and the mtime of each folder of a settled run) instead of
    a listing of every file: a settled run whose folders kept their mtimes on both sides is skipped. Each
    side's look is reported an entry at a time into a byte a run: memory stays flat in the number of runs."""
    table = state.runs
    index = table.cover_id(cover)
    if index < 0 or not any(True for _ in table.live_rows(index)):
        return None, 0, 0, False
    mine, theirs = _Side(table, index, 0, runs_glob), _Side(table, index, 1, runs_glob)
    await asyncio.gather(src.look(mine), dst.look(theirs))
    names = mine.others | theirs.others
    skipped = files = 0
    for row in table.live_rows(index):
        if mine.seen[row] or theirs.seen[row]:
            if mine.as_recorded(row) and theirs.as_recorded(row):
                skipped += 1
                files += table.files[row]
            else:
                names.add(table.name(row))
    return sorted(names), skipped, files, theirs.lacks(names)


def _folders(manifest: Manifest, limit: int, busy: set[str]) -> dict[str, dict[str, int]]:
    """Each top-level folder's folders and their mtimes; a top with one newer than ``limit`` is busy."""
    dirs: dict[str, dict[str, int]] = {}
    for rel, mtime in manifest.dir_mtimes.items():
        top = rel.split("/", 1)[0]
        dirs.setdefault(top, {})[rel] = mtime
        if mtime > limit:
            busy.add(top)
    return dirs


async def settle(state: SyncState, src_m: Manifest, dst_m: Manifest, plan: Plan, started: float, cover: str,
                 listed: list[str] | None, reader: Transport, parallel: int) -> None:
    """Record the runs this pass found ended, quiet for SETTLE_S and mirrored whole (``summary.json`` read
    through ``reader``, the side that is cheaper to read); forget those listed that no longer are."""
    old_enough, dst_before = int(started - SETTLE_S), int(started) - 1  # the mirror's: a second before the pass
    busy: set[str] = {_top(a.rel) for a in plan.actions} | {_top(d) for d in plan.mkdirs}
    busy |= {_top(r) for r in (*src_m.links, *dst_m.links, *dst_m.parts)}
    files: dict[str, int] = {}
    for rel, entry in src_m.files.items():
        top = rel.split("/", 1)[0]
        files[top] = files.get(top, 0) + 1
        if entry.mtime > old_enough:
            busy.add(top)
    src_dirs, dst_dirs = _folders(src_m, old_enough, busy), _folders(dst_m, dst_before, busy)
    busy |= src_dirs.keys() - dst_dirs.keys()
    runs = state.runs
    for top in (runs.name(row) for row in runs.live_rows()) if listed is None else listed:
        row = runs.find(top)  # listed: still as recorded?
        if row < 0 or not runs.live[row]:
            continue
        rec = runs.record(row)
        if top in busy or rec["src"] != src_dirs.get(top) or rec["dst"] != dst_dirs.get(top):
            state.unsettle(top)
    candidates = [top for top in src_dirs if top not in busy and top not in runs
                  and f"{top}/{RunLayout.SUMMARY}" in src_m.files]
    todo = iter(candidates)

    async def ended(top: str) -> bool:
        rel = f"{top}/{RunLayout.SUMMARY}"
        try:  # a summary is a few KiB: a first read of 64 KiB (a read's buffer is its size), the rest up to 1 MiB
            data = await reader.read(rel, 0, SUMMARY_FIRST)
            if len(data) == SUMMARY_FIRST:
                data += await reader.read(rel, SUMMARY_FIRST, (1 << 20) - SUMMARY_FIRST)
            summary: Any = json.loads(data)
        except (OSError, ValueError):
            return False
        return isinstance(summary, dict) and summary.get("status") in FINAL_STATUSES

    async def reading() -> None:  # ``parallel`` readers, not a task a run (a thousand live runs a batch)
        for top in todo:
            if await ended(top):
                state.settle(top, src_dirs[top], dst_dirs[top], files.get(top, 0), cover)

    readers = max(1, parallel) if reader.remote else 1  # a local read does not wait: one reader is as quick
    await asyncio.gather(*(reading() for _ in range(min(readers, len(candidates)))))
