"""Plain-text formatting for the terminal: lengths of time, times, values and aligned tables.

Hand-written (no rich) because ``lt ls`` must start in a fraction of a second; the output is plain
text that pipes, greps and pastes cleanly.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from datetime import datetime
from typing import Any

__all__ = ["format_duration", "format_time", "format_cell", "table", "text_width", "printable", "unicode_text",
           "unicode_data", "unicode_json"]

# C0 controls but tab and newline, DEL, C1 controls: escape sequences (window title, OSC 52 clipboard),
# bells, carriage returns that overwrite what was printed
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# a file name's bytes that are not UTF-8 come as lone surrogates (surrogateescape): no terminal or JSON holds them
_SURROGATE = re.compile("[\ud800-\udfff]")


def unicode_text(text: str) -> str:
    """``text`` with a name's undecodable bytes shown as ``\\xff`` (as ``ls -b`` shows them): what a UTF-8
    terminal or JSON can hold."""
    if not _SURROGATE.search(text):
        return text
    return _SURROGATE.sub(lambda m: f"\\x{ord(m[0]) - 0xDC00:02x}" if 0xDC80 <= ord(m[0]) <= 0xDCFF
                          else f"\\u{ord(m[0]):04x}", text)


def unicode_data(obj: Any) -> Any:
    """``obj`` (JSON-like: dicts, lists, tuples, str...) with :func:`unicode_text` on every string in it."""
    if isinstance(obj, str):
        return unicode_text(obj)
    if isinstance(obj, dict):
        return {unicode_data(key): unicode_data(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [unicode_data(value) for value in obj]
    return obj


def unicode_json(obj: Any, option: int = 0, default: Any = None) -> str:
    """``orjson.dumps(obj, option=..., default=...)`` as text; where ``obj`` holds a name that is not UTF-8,
    the JSON of :func:`unicode_data` (orjson refuses lone surrogates)."""
    import orjson

    try:
        return orjson.dumps(obj, option=option, default=default).decode()
    except TypeError:
        return orjson.dumps(unicode_data(obj), option=option,
                            default=None if default is None else lambda value: unicode_text(default(value))).decode()


def printable(text: str) -> str:
    """``text`` for a terminal: user text (tags, notes, failure reasons, names) cannot drive the terminal;
    a control character shows as ``\\x1b``, a name's byte that is not UTF-8 as ``\\xff``."""
    return unicode_text(_CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", text))


def format_duration(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``2h14m``, ``3d04h``; ``-`` for unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def format_time(ts: float | None, now: float | None = None) -> str:
    """Local ``YYYY-mm-dd HH:MM``; ``-`` for unknown."""
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def format_cell(value: Any) -> str:
    """A value in a table cell: floats with 4 significant digits, lists joined, nothing as ``-``."""
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ",".join(format_cell(v) for v in value) or "-"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {format_cell(v)}" for k, v in value.items()) + "}"
    return " ".join(str(value).split())


def text_width(text: str) -> int:
    """Terminal columns of ``text`` (wide East Asian characters take two)."""
    if text.isascii():
        return len(text)
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _cut(text: str, width: int) -> str:
    if text_width(text) <= width:
        return text
    out, used = [], 0
    for char in text:
        w = text_width(char)
        if used + w > width - 1:
            break
        out.append(char)
        used += w
    return "".join(out) + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, max_width: int = 48,
          right: Sequence[bool] | None = None) -> str:
    """Columns aligned with two spaces; cells wider than ``max_width`` cut with ``…``; numbers right-aligned."""
    cells = [[_cut(str(c), max_width) for c in row] for row in rows]
    heads = [_cut(h, max_width) for h in headers]
    widths = [max([text_width(heads[i])] + [text_width(row[i]) for row in cells]) for i in range(len(heads))]
    right = list(right) if right is not None else [False] * len(heads)

    def line(row: Sequence[str]) -> str:
        parts = []
        for i, cell in enumerate(row):
            pad = " " * (widths[i] - text_width(cell))
            parts.append(pad + cell if right[i] else cell + pad)
        return "  ".join(parts).rstrip()

    return "\n".join([line(heads), *(line(row) for row in cells)])
