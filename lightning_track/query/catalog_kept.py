"""What a lean look (``lt ls``'s table) keeps of its unchanged runs: their catalog keys, nothing built.

Why: a listing of 100,000 runs prints 50 rows; the catalog already holds every run's start and brief, so
the look keeps only which entries it checked (a key a run), counts their briefs (the main metric, the
default columns) and lets SQLite order them (:mod:`.newest`). A run with problems, a running run and a
run read again stay whole runs (their lines and verdicts are the look's own)."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["Kept", "KEPT"]

KEPT: Any = object()  # Catalog.run's answer for a run read again and kept in the catalog, not built


class Kept:
    """The entries one lean look checked and found right (``keys``), with their briefs counted."""

    __slots__ = ("root", "keys", "inos", "dev", "briefs", "sourced", "spoilt", "rows")

    def __init__(self, root: str) -> None:
        self.root = root  # absolute
        self.keys: set[str] = set()
        self.inos: set[int] = set()  # the inodes of every run folder found on the root's device
        try:
            self.dev: int | None = os.stat(root).st_dev  # runs on another device (a mount) are built
        except OSError:
            self.dev = None
        self.briefs: dict[bytes, int] = {}  # a brief's bytes -> how many kept runs have it
        self.sourced = False  # some kept run is below a source folder (the "source" column)
        self.spoilt = ""  # why the look cannot be answered from the keys (then a whole look is made)
        self.rows: Any = None  # the look's RowSource

    def note(self, dev: int, ino: int) -> None:
        """A folder the look found (a run built or kept): the same folder twice spoils the keys (a plain
        read lists a folder reached through a link once)."""
        if dev == self.dev:
            if ino in self.inos:
                self.spoilt = "the same run folder twice"
            self.inos.add(ino)

    def keep(self, key: str, dev: int, ino: int, brief: bytes, source: str) -> bool:
        """An unchanged ended run: kept by ``key`` unless it has problems (their lines are the look's: a
        built run) or is on another device."""
        if dev != self.dev or b'"p":true' in brief:  # brief_of writes no spaces
            self.note(dev, ino)
            return False
        if ino in self.inos:
            self.spoilt = "the same run folder twice"
        self.inos.add(ino)
        self.keys.add(key)
        self.briefs[brief] = self.briefs.get(brief, 0) + 1
        self.sourced = self.sourced or bool(source)
        return True

    def take(self, key: str, dev: int, brief: bytes, source: str) -> bool:
        """Keep ``key`` (its folder noted already) unless its folder is on another device than the root."""
        if dev != self.dev:
            return False
        self.keys.add(key)
        self.briefs[brief] = self.briefs.get(brief, 0) + 1
        if source:
            self.sourced = True
        return True
