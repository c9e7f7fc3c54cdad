"""A ``load_runs`` frame put together from a kept frame of the settled ended runs and a few rows built now.

Why: pandas building 100,000 rows from dicts is most of ``load_runs``' time, and almost all of them are
ended runs that did not change. Kept as a frame (:mod:`.frame_cache`), they are reused as they are; the
running runs (their status and times move with the clock) are built each time and put in their places.

The result must be the frame ``pd.DataFrame(rows)`` gives for all the rows at once, dtypes included: a
column's dtype is what pandas infers from the kinds of values in it (ints and a None give float64, strings
give str, ...). The kept frame's dtype says which kinds its rows hold, up to one value that stands for
them (:func:`stand_ins`); pandas infers each column of the new rows beside those stand-ins, and the merge
is taken only where that gives the kept column's dtype back (the new values then take the kept frame's
kind). Anything else (a new dtype, a column kind not listed here) is None: the caller builds it all.
Taking rows out of the kept frame (runs read again) is vouched for the same way: :func:`keeps_dtypes`.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["stand_ins", "column_order", "merged_frame", "keeps_dtypes", "whole_floats"]

_UNKNOWN: list[Any] = []


def stand_ins(frame: Any) -> dict[str, list[Any]]:
    """For each column of ``frame`` (as pandas inferred it from dicts): values of the kinds it holds, as
    few as say its dtype; a column of a dtype not named here gets none (a merge into it is refused)."""
    out: dict[str, list[Any]] = {}
    for name in frame.columns:
        column = frame[name]
        kind = column.dtype.kind
        if kind == "i" and str(column.dtype) == "int64":
            out[name] = [1]
        elif kind == "f" and str(column.dtype) == "float64":
            out[name] = [0.5]
        elif kind == "b":
            out[name] = [True]
        elif str(column.dtype) == "str":
            out[name] = ["a"]
        elif kind == "O":
            if column.notna().any():  # a list, a dict, a bool beside a missing value, mixed kinds: stays object
                out[name] = [[]]
            else:  # nothing but None / NaN: which of them matters (None alone stays object, NaN makes float)
                nones = any(value is None for value in column)
                nans = any(value is not None for value in column)
                out[name] = [None] * nones + [math.nan] * nans
        else:
            out[name] = _UNKNOWN
    return out


def column_order(shapes: list[tuple[int, tuple[str, ...], tuple[str, ...]]]) -> list[str]:
    """The columns as ``pd.DataFrame`` of the rows (row keys, then ``config.<key>``) in order has them: first
    seen first. ``shapes``: ``(position, row keys, config keys)`` of at least each distinct shape's first row."""
    order: dict[str, None] = {}
    for _, row, flat in sorted(shapes, key=lambda shape: shape[0]):
        order.update(dict.fromkeys(row))
        order.update(dict.fromkeys(f"config.{k}" for k in flat))
    return list(order)


def merged_frame(kept: Any, kept_at: Any, kept_stand_ins: dict[str, list[Any]], rows: list[tuple[int, dict[str, Any]]],
                 order: list[str]) -> Any:
    """``kept`` (one row per position of ``kept_at``) with ``rows`` (``(position, merged row)``) in their places,
    columns in ``order``; None when pandas would infer another dtype for a kept column (build it all)."""
    import numpy as np
    import pandas as pd

    if len(kept) == 0:  # no kept rows: nothing to merge into (the stand-ins would say missing values)
        return None
    if not rows:
        return kept if list(kept.columns) == order else kept[order]
    # the stand-ins first, then the new rows: one frame, each column inferred as pandas does for dicts
    samples = {name: kept_stand_ins.get(name, [math.nan]) if name in kept.columns else [math.nan] for name in order}
    if any(not values for values in samples.values()):
        return None
    width = max(len(values) for values in samples.values())
    heads = [{name: values[min(i, len(values) - 1)] for name, values in samples.items()} for i in range(width)]
    built = pd.DataFrame(heads + [row for _, row in rows]).iloc[width:].reset_index(drop=True)
    columns: dict[str, Any] = {}
    for name in order:
        dtype = built[name].dtype
        if name in kept.columns:
            if kept[name].dtype != dtype:
                return None
            columns[name] = kept[name]
        else:  # no kept run has this key: NaN there, as pandas fills a missing key
            columns[name] = pd.Series(np.nan, index=kept.index, dtype=object).astype(dtype)
    both = pd.concat([pd.DataFrame(columns), built[order]], ignore_index=True)
    if any(both[name].dtype != built[name].dtype for name in order):
        return None
    where = np.empty(len(both), dtype=np.intp)
    where[np.asarray(kept_at, dtype=np.intp)] = np.arange(len(kept))
    where[np.fromiter((position for position, _ in rows), dtype=np.intp, count=len(rows))] = \
        np.arange(len(kept), len(both))
    return both.take(where).reset_index(drop=True)


def whole_floats(frame: Any) -> list[str]:
    """The float64 columns holding whole numbers and NaN alone: pandas made them of ints, floats or both,
    and only the rows' own values can say which (:func:`keeps_dtypes` needs to know, per row)."""
    import numpy as np

    out = []
    for name in frame.columns:
        if str(frame[name].dtype) == "float64":
            values = frame[name].to_numpy()
            finite = np.isfinite(values)
            if not (~finite & ~np.isnan(values)).any() and \
                    (np.mod(values, 1, where=finite, out=np.zeros_like(values)) == 0).all():
                out.append(name)
    return out


def keeps_dtypes(frame: Any, keep: Any, floats: tuple[str, ...] = (), float_rows: dict[str, Any] | None = None) -> bool:
    """Whether pandas would infer every column of ``frame``'s rows where ``keep`` is True as it did for all of
    them: the kept frame without some rows (runs read again) is then that frame. False when it cannot say.

    ``floats``: the prefixes of columns whose every value is a float (NaN included): float64 whatever is
    left. ``float_rows``: for a column of :func:`whole_floats`, which rows held a Python float (then it
    stays float64 while one of them is left; with ints alone it would be int64)."""
    import numpy as np

    if not keep.any():
        return False
    for name in frame.columns:
        column = frame[name]
        kind, text = column.dtype.kind, str(column.dtype)
        if kind == "b" or text == "int64" or text == "float64" and name.startswith(floats):
            continue
        values = column.to_numpy()[keep]
        if text == "str":  # strings stay str while one is left (all missing would be float64)
            if not column.notna().to_numpy()[keep].any():
                return False
        elif text == "float64":
            if float_rows is not None and name in float_rows and float_rows[name][keep].any():
                continue
            missing, finite = np.isnan(values), np.isfinite(values)
            whole = finite & (np.mod(values, 1, where=finite, out=np.zeros_like(values)) == 0)
            if (finite & ~whole).any() or (~finite & ~missing).any():
                continue  # a float is left: float64 whatever else is
            if not (missing.any() and whole.any()):  # a number beside a missing value is float64 too
                return False
        elif kind == "O":
            if not any(isinstance(value, (list, dict)) for value in values) and \
                    not all(value is None for value in values):
                return False
        else:
            return False
    return True
