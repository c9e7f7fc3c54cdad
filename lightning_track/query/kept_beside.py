"""A filter's answers for a lean look's kept runs, asked on a second connection beside the look's own scan.

Why: ``lt ls -f model.lr<1e-3`` with nothing changed over 100,000 runs spent ~0.15 s of its ~1 s in SQLite,
reading every kept config's JSON in the scan that loads the look's rows, while the look's Python waited.
SQLite runs a statement without Python's lock: here a thread asks a second connection for every row's answer
as one text (a digit a row, in path order, and the rows' ids) while the look's own thread makes its keys from
the plain scan. The two are joined only when nobody wrote the catalog in between (``PRAGMA data_version`` of
the look's connection did not move) and the ids come in the same order; else the look asks the one combined
query (:meth:`~.catalog_kept.Kept.load`)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

__all__ = ["Beside", "answers_query", "data_version"]


def answers_query(plan: Any, prefix: str, below: int, answer: str) -> tuple[str, list[Any]]:
    """The query of every ended row below ``prefix`` in path order: its rowids (``"1,5,..."``) and its states
    (a digit a row: ``answer``, the SQL of the filter's answer over ``c``, the ``v``/``x`` columns and
    ``path``, plus 4 when its path has a "/" from the 0-based index ``below`` on: a run below a source)."""
    runs, params = plan.select("runs.rowid AS r, path, config IS NOT NULL AS c", "path >= ? AND path < ? AND ended",
                               [prefix + "/", prefix + "0"], order="path")
    params.append(below + 1)
    return (f"SELECT group_concat(r, ','), group_concat(s, '') FROM (SELECT r, {answer} + CASE WHEN "
            f"instr(substr(path, ?{len(params)}), '/') THEN 4 ELSE 0 END AS s FROM {runs})", params)


def data_version(conn: sqlite3.Connection) -> int:
    """A number that moves when another connection commits to the catalog (SQLite's ``data_version``)."""
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


class Beside:
    """One query run by a thread on its own read-only connection to ``db``: :meth:`result` is its one row, or
    None when SQLite refused it (the look then asks its own connection, which says why or answers)."""

    __slots__ = ("_db", "_query", "_row", "_thread", "_conn", "_cancelled")

    def __init__(self, db: Path, query: tuple[str, list[Any]]) -> None:
        self._db, self._query = db, query
        self._row: tuple[Any, ...] | None = None
        self._conn: sqlite3.Connection | None = None
        self._cancelled = False
        self._thread = threading.Thread(target=self._run, name="lt-kept-answers", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            conn = self._conn = sqlite3.connect(f"{self._db.as_uri()}?mode=ro", uri=True, timeout=3.0,
                                                check_same_thread=False)
            try:
                if not self._cancelled:
                    self._row = conn.execute(*self._query).fetchone()
            finally:
                self._conn = None
                conn.close()
        except sqlite3.Error:
            self._row = None

    def cancel(self) -> None:
        """Stop the query (the look ended without it: an error, Ctrl-C) and wait for the thread."""
        self._cancelled = True
        conn = self._conn
        if conn is not None:
            try:
                conn.interrupt()
            except sqlite3.Error:
                pass
        self._thread.join()

    def result(self) -> tuple[Any, ...] | None:
        self._thread.join()
        return self._row
