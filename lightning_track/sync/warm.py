"""Keeping the runs catalog of a local mirror warm as ``lt sync`` writes it.

Why here: the sync knows which runs a pass changed (its plan), so it reads just those into the catalog
(:func:`lightning_track.query.catalog_writer.write_through`) and ``lt ls MIRROR`` afterwards finds every run
there instead of opening each run's files. A process's first pass also adds the runs at the mirror's
top level that the catalog lacks and drops the entries of those no longer there; later passes touch the
catalog only when something changed, so a pass where nothing changed costs nothing more.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..query.catalog_writer import each_known_run, write_through
from ..query.discover import MAX_DEPTH, list_names, run_folder_of
from .engine import CycleResult
from .hashslots import HashSlots
from .plan import DELETE

__all__ = ["CatalogWarmer", "KnownRuns", "NameHashes"]


class NameHashes(HashSlots):
    """A set of names as their hashes in one array (open addressing, at most half full): ~16 bytes a name, no
    string or int object kept. Two names of one hash are one: for a warm catalog that is at worst a run read
    again by ``lt ls`` (never a wrong listing: a look checks every entry it takes)."""

    __slots__ = ()

    def add(self, name: str) -> None:
        self.put(name)


class KnownRuns:
    """The run folders the catalog holds under a mirror, asked once for all its sources' folders (their names'
    hashes by parent folder: a mirror of 100,000 runs is never a set of paths)."""

    def __init__(self, mirror: str | os.PathLike[str]) -> None:
        self.mirror = os.path.abspath(mirror)
        self._by_parent: dict[str, NameHashes] | None = None
        self._asked = False
        self.said: set[str] = set()  # the catalog's problems already told: each once a process

    def under(self, folder: str) -> NameHashes | None:
        """The names of those directly in ``folder`` (absolute), None when the catalog cannot say."""
        if not self._asked:
            self._asked = True
            by_parent: dict[str, NameHashes] = {}

            def each(path: str) -> None:
                parent, name = os.path.split(path)
                names = by_parent.get(parent)
                if names is None:
                    names = by_parent[parent] = NameHashes()
                names.add(name)

            if each_known_run(self.mirror, each):
                self._by_parent = by_parent
        return None if self._by_parent is None else self._by_parent.get(folder, NameHashes())


class CatalogWarmer:
    """The catalog entries of the runs directly under ``root`` (a local mirror, or one source's folder in it).

    ``known``: the mirror's :class:`KnownRuns` when several warmers share one mirror (one query for all)."""

    def __init__(self, root: str | os.PathLike[str], known: KnownRuns | None = None) -> None:
        self.root = os.path.abspath(root)
        self.known = known or KnownRuns(self.root)
        self._first = True

    def after(self, result: CycleResult) -> list[str]:
        """Bring the entries of the runs this pass changed up to date; the catalog's problems not told before
        (an unwritable cache is one line, not one a pass), one line each."""
        if result.dry_run:
            return []
        names: dict[Path, set[str] | None] = {}

        def lister(folder: Path) -> set[str] | None:
            if folder not in names:
                names[folder] = list_names(folder)
            return names[folder]

        root = Path(self.root)
        changed: set[str] = set()
        for action in result.plan.actions:
            if action.kind == DELETE:  # the run may be gone: each folder above the file is looked at again
                parts = action.rel.split("/")[:-1]
                changed.update("/".join(parts[:depth]) for depth in range(1, min(len(parts), MAX_DEPTH) + 1))
            else:
                run = run_folder_of(root, action.rel, lister)
                if run is not None:
                    changed.add(run.relative_to(root).as_posix())
        gone: set[str] = set()
        if self._first:
            self._first = False
            mine = self.known.under(self.root)
            if mine is not None:
                matched = 0
                try:
                    with os.scandir(self.root) as listing:  # as the folder gives them: never the root's names whole
                        for entry in listing:
                            if entry.name in mine:
                                matched += 1
                            else:
                                changed.add(entry.name)
                except OSError:
                    pass
                if matched < len(mine):  # some of the catalog's runs here are gone: a second look finds which
                    gone = self._gone()
        if not changed and not gone:
            return []
        problems = write_through([os.path.join(self.root, name) for name in sorted(changed)], sorted(gone))
        fresh = [line for line in problems if line not in self.known.said]
        self.known.said.update(fresh)
        return fresh

    def _gone(self) -> set[str]:
        """The catalog's runs directly under the root that the root no longer holds (a second look at each)."""
        listed, gone, here = NameHashes(), set(), self.root
        try:
            with os.scandir(here) as listing:
                for entry in listing:
                    listed.add(entry.name)
        except OSError:
            pass
        each_known_run(here, lambda path: gone.add(path) if os.path.dirname(path) == here
                       and os.path.basename(path) not in listed else None)
        return gone
