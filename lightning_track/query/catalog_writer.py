"""Entries written into the runs catalog by the writer of a folder, right after it wrote the runs.

Why apart from :mod:`.catalog` (which only reads through a look) and :mod:`.runs` (which looks): the one
caller is ``lt sync``, which knows which runs of its mirror it changed; it reads just those into the
catalog so that the next ``lt ls`` of the mirror opens no run file (:func:`known_runs`: which it holds).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path

from .catalog import open_catalog
from .discover import run_names
from .runs import RunInfo, read_run

__all__ = ["write_through", "known_runs", "each_known_run"]


def write_through(runs: Iterable[str | Path], gone: Iterable[str | Path] = ()) -> list[str]:
    """Read ``runs`` (run folders) now and keep their entries, and drop ``gone``'s; returns the catalog's
    problems, one line each (never raises for them).

    For the one writer of a folder, ``lt sync`` into its mirror: it knows which runs it changed and has
    finished writing them, so an entry kept right away cannot miss a later write with the same times (the
    catalog's racy rule guards against writers it does not know). A reader still takes an entry only once
    its files are :data:`~.catalog.RACY_S` old, as for any entry."""
    problems: list[str] = []
    book = open_catalog(problems)
    if book is None:
        return problems
    try:
        for run in runs:
            path = Path(os.path.abspath(run))
            names = run_names(path, book.lister)
            if names is None:  # gone, or no longer a run folder
                book.forget([str(path)])
                continue

            def read(path: Path = path, names: set[str] = names) -> RunInfo:
                return read_run(path, "", names)

            book.run(path, "", names, read, None, keep_recent=True)
        book.forget([os.path.abspath(p) for p in gone])
    finally:
        book.save()
    return problems


def known_runs(root: str | Path) -> set[str] | None:
    """The run folders the catalog holds below ``root`` (absolute paths), None when it cannot say."""
    found: set[str] = set()
    return found if each_known_run(root, found.add) else None


def each_known_run(root: str | Path, each: Callable[[str], object]) -> bool:
    """``each(path)`` for each run folder the catalog holds below ``root`` (absolute), as the query gives them
    (100,000 runs are never one set here); False when the catalog cannot say (what ``each`` saw is then no answer)."""
    problems: list[str] = []
    book = open_catalog(problems)
    if book is None:
        return False
    prefix = os.path.abspath(root)
    try:
        for (path,) in book.conn.execute("SELECT path FROM runs WHERE path >= ? AND path < ?",  # the key's index alone
                                         (prefix + "/", prefix + "0")):
            each(path)
    except sqlite3.Error:
        return False  # a look that finds it damaged builds it again
    finally:
        book.close()
    return True
