"""Keeping the runs catalog of a local mirror warm as ``lt sync`` writes it.

Why here: the sync knows which runs a pass changed (its plan), so it reads just those into the catalog
(:func:`lightning_track.query.catalog_writer.write_through`) and ``lt ls MIRROR`` afterwards finds every run
there instead of opening each run's files. The first pass also adds the runs already in the mirror that
the catalog lacks and drops the entries of runs no longer there; later passes touch the catalog only
when something changed, so a pass where nothing changed costs nothing more.
"""

from __future__ import annotations

import os

from ..query.catalog import known_runs
from ..query.catalog_writer import write_through
from .engine import CycleResult

__all__ = ["CatalogWarmer"]


class CatalogWarmer:
    """The catalog entries of the runs directly under ``root`` (a local mirror, or one source's folder in it)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.abspath(root)
        self._first = True

    def after(self, result: CycleResult) -> list[str]:
        """Bring the entries of the runs this pass changed up to date; the catalog's problems, one line each."""
        if result.dry_run:
            return []
        changed = {action.rel.split("/", 1)[0] for action in result.plan.actions}
        gone: set[str] = set()
        if self._first:
            self._first = False
            known = known_runs(self.root)
            try:
                listed = set(os.listdir(self.root))
            except OSError:
                listed = set()
            if known is not None:
                mine = {p for p in known if os.path.dirname(p) == self.root}
                changed |= {name for name in listed if os.path.join(self.root, name) not in mine}
                gone = {p for p in mine if os.path.basename(p) not in listed}
        if not changed and not gone:
            return []
        return write_through([os.path.join(self.root, name) for name in sorted(changed)], sorted(gone))
