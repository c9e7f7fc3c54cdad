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
from typing import Any

from ..folder.layout import RunLayout
from ..vocabulary import FINAL_STATUSES
from .manifest import Manifest
from .manifest import top_name as _top
from .plan import Plan
from .state import SyncState
from .transport import DIR, Transport

__all__ = ["SETTLE_S", "top_names", "unsettled", "settle"]

SETTLE_S = 300  # seconds a run's files and folders must have been quiet, after it ended, to be settled


async def top_names(src: Transport, dst: Transport | None, runs_glob: str | None) -> list[str]:
    """Every top-level name on either side (one look at each root), ``runs_glob`` applied."""
    looks = [src.skeleton(())] + ([dst.skeleton(())] if dst is not None else [])
    names = {e.rel for tops, _ in await asyncio.gather(*looks) for e in tops}
    if runs_glob is not None:
        names = {n for n in names if fnmatch.fnmatchcase(n, runs_glob)}
    return sorted(names)


async def unsettled(state: SyncState, src: Transport, dst: Transport, cover: str,
                    runs_glob: str | None) -> tuple[list[str] | None, set[str], int]:
    """The top-level names this pass lists (None: all), the settled runs it skips, and their files.

    One look at each side (its root's entries and the mtime of each folder of a settled run) instead of
    a listing of every file: a settled run whose folders kept their mtimes on both sides is skipped."""
    known = {top: rec for top, rec in state.runs.items() if rec.get("cover") == cover}
    if not known:
        return None, set(), 0
    (src_tops, src_times), (dst_tops, dst_times) = await asyncio.gather(
        src.skeleton([d for rec in known.values() for d in rec["src"] if "/" in d]),
        dst.skeleton([d for rec in known.values() for d in rec["dst"] if "/" in d]))
    for entries, times in ((src_tops, src_times), (dst_tops, dst_times)):
        times.update((e.rel, e.mtime) for e in entries if e.kind == DIR)
    names = {e.rel for e in src_tops} | {e.rel for e in dst_tops}
    if runs_glob is not None:
        names = {n for n in names if fnmatch.fnmatchcase(n, runs_glob)}
    skipped = {top for top, rec in known.items() if top in names  # every recorded (folder, mtime) still so
               and rec["src"].items() <= src_times.items() and rec["dst"].items() <= dst_times.items()}
    files = sum(int(known[top].get("files") or 0) for top in skipped)
    return sorted(names - skipped), skipped, files


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
    for top in [t for t in (runs if listed is None else listed) if t in runs]:  # listed: still as recorded?
        rec = runs[top]
        if top in busy or rec["src"] != src_dirs.get(top) or rec["dst"] != dst_dirs.get(top):
            state.unsettle(top)
    candidates = [top for top in src_dirs if top not in busy and top not in runs
                  and f"{top}/{RunLayout.SUMMARY}" in src_m.files]
    gate = asyncio.Semaphore(max(1, parallel))

    async def ended(top: str) -> bool:
        async with gate:
            try:
                summary: Any = json.loads(await reader.read(f"{top}/{RunLayout.SUMMARY}", 0, 1 << 20))
            except (OSError, ValueError):
                return False
        return isinstance(summary, dict) and summary.get("status") in FINAL_STATUSES

    for top, done in zip(candidates, await asyncio.gather(*(ended(t) for t in candidates)), strict=True):
        if done:
            state.settle(top, src_dirs[top], dst_dirs[top], files.get(top, 0), cover)
