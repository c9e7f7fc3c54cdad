"""Reading run folders back: find runs, judge their status, filter, compare, report.

Torch-free, and pandas only where a DataFrame is asked for (:func:`load_runs`, :func:`load_history`),
so ``lt ls`` starts in a fraction of a second. Everything here reads; the only writes are tags and
notes (:mod:`.annotations`), each an atomic replace of one small file.
"""

from __future__ import annotations

from .history import History, load_history, read_history
from .runs import RunInfo, find_runs, load_runs, resolve_run

__all__ = ["RunInfo", "find_runs", "load_runs", "resolve_run", "History", "read_history", "load_history"]
