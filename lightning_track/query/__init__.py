"""Reading run folders back: find runs, judge their status, filter, compare, report.

Torch-free, and pandas only where a DataFrame is asked for (:func:`load_runs`, :func:`load_history`),
so ``lt ls`` starts in a fraction of a second. Everything here reads; the only writes are tags and
notes (:mod:`.annotations`), each an atomic replace of one small file.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .discover import resolve_run
    from .frames import load_runs
    from .history import History, load_history, read_history
    from .runs import RunInfo, find_runs

__all__ = ["RunInfo", "find_runs", "load_runs", "resolve_run", "History", "read_history", "load_history"]
_HOME = {"History": ".history", "load_history": ".history", "read_history": ".history", "resolve_run": ".discover",
         "load_runs": ".frames"}


def __getattr__(name: str) -> Any:  # lazily: the history reader needs numpy, lt ls does not
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOME.get(name, ".runs"), __name__), name)
