"""Strict JSON text as every run file spells it: NaN/Infinity as strings, numpy/torch scalars as numbers.

Why its own module: the encoding rule (what a value looks like on disk) is one concern; how the bytes
reach the disk (atomic replace, whole-line appends, locks) is :mod:`.fileio`'s, which re-exports these.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import orjson

__all__ = ["NONFINITE", "to_jsonable", "restore_nonfinite", "dumps", "compact_dumps", "json_line"]

# Strict JSON (RFC 8259) has no NaN/Infinity. We write them as these strings, which float() parses.
NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _nonfinite_str(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def to_jsonable(obj: Any) -> Any:
    """Copy ``obj`` into plain JSON types; non-finite floats become ``"NaN"``/``"Infinity"``."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else _nonfinite_str(obj)
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    item = getattr(obj, "item", None)  # numpy / torch scalars
    if callable(item):
        try:
            return to_jsonable(item())
        except (TypeError, ValueError, RuntimeError):
            pass
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):
        return to_jsonable(tolist())
    return str(obj)


def restore_nonfinite(value: Any) -> Any:
    """Inverse of the NaN/Infinity string encoding for one metric value."""
    if isinstance(value, str) and value in NONFINITE:
        return NONFINITE[value]
    return value


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps(to_jsonable(obj))``, without the walk when ``obj`` is already plain JSON.

    Why: the walk copies every value (a mapping file holds millions of ints), while the C encoder
    alone is many times faster. The encoder refuses what the walk would change (non-finite floats:
    ValueError; sets, Paths, tensors, tuple keys: TypeError) and then the walk runs. The one other
    difference, a ``True``/``False``/``None`` dict key (encoder: ``"true"``, walk: ``"True"``), shows in
    the text as a ``"true":`` key (inside a string value a quote is always escaped), and also falls
    back; a genuine ``"true"`` key only costs the walk.
    """
    try:
        text = json.dumps(obj, ensure_ascii=False, allow_nan=False, **kwargs)
    except (TypeError, ValueError):
        pass
    else:
        if '"true":' not in text and '"false":' not in text and '"null":' not in text:
            return text
    return json.dumps(to_jsonable(obj), ensure_ascii=False, allow_nan=False, **kwargs)


# orjson hands these to ``default`` (there is none, so TypeError) instead of converting them its own
# way: the walk in ``to_jsonable`` decides how they look, as with the stdlib encoder.
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS


def compact_dumps(obj: Any) -> str:
    """Compact strict JSON; orjson's C encoder (several times the stdlib's speed) when it can say the same.

    orjson writes NaN/inf (and None) as ``null``: any ``null`` in its output sends the object to the
    stdlib path, which spells non-finite floats ``"NaN"``/``"Infinity"``; so do the types it refuses
    (non-str keys, sets, Paths, tensors, ints over 64 bits).
    """
    try:
        data = orjson.dumps(obj, option=_ORJSON_OPTIONS)
    except TypeError:
        return dumps(obj, separators=(",", ":"))
    if b"null" in data:
        return dumps(obj, separators=(",", ":"))
    return data.decode("utf-8")


def json_line(obj: Any) -> str:
    """One strict-JSON line with its newline."""
    return compact_dumps(obj) + "\n"
