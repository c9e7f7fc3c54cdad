"""The legacy batch tracking, streamed as canonical records: what becomes ``batch_tracking.jsonl`` and the
per-step metrics of a migrated run.

Tolerant as every legacy reader: a bad line becomes a one-line note naming the file and line, and
reading goes on. It reads every line of files with millions of them, so its usual cases are inlined
and its two costly steps (renaming keys, formatting times) are worked out once per key set and once
per minute.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from pathlib import Path
from typing import Any

from ..errors import JsonlProblem
from ..folder.fileio import iter_jsonl
from ..vocabulary import iso_time
from .readers import as_int, as_number, line_ids
from .report import Notes
from .rules import MigrateRules

__all__ = ["CANONICAL_ORDER", "TrackedStep", "TrackingReader"]

CANONICAL_ORDER = ("step", "epoch", "batch_idx", "stage", "line_indices", "loss", "learning_rate", "timestamp")


@dataclass
class TrackedStep:
    lineno: int
    step: int
    time: float | None  # unix seconds, None when the line has no usable timestamp
    record: dict[str, Any]  # canonical field names, unknown fields kept


class TrackingReader:
    """Stream ``batch_tracking_<dataset>.jsonl`` as canonical records, one line in memory at a time.

    Aliases are renamed (``global_step`` -> ``step`` ...), ``time`` (unix seconds) and the legacy
    naive ISO ``timestamp`` (local time) become a ``timestamp`` in the one format of a run's files
    (:func:`~lightning_track.vocabulary.iso_time`). Lines that are corrupt, partial, without a step,
    a duplicate step or a step going backwards are skipped with a note; the first occurrence of a
    step wins.
    """

    def __init__(self, path: Path, rules: MigrateRules, notes: Notes) -> None:
        self.path = path
        self.rules = rules
        self.notes = notes
        self.read = 0
        self.skipped = 0

    def _note(self, lineno: int, reason: str) -> None:
        self.skipped += 1
        self.notes.warn(f"{self.path}:{lineno}: {reason}; line skipped", str(self.path))

    def __iter__(self) -> Iterator[TrackedStep]:
        for lineno, step, when, record in self.steps():
            yield TrackedStep(lineno, step, when, record)

    def steps(self) -> Iterator[tuple[int, int, float | None, dict[str, Any]]]:
        """What ``iter(reader)`` yields, as plain ``(lineno, step, time, record)`` tuples (cheaper)."""
        if self.path.stat().st_size == 0:
            self.notes.warn(f"{self.path}: file is empty; no batch tracking or per-step metrics", str(self.path))
            return
        problems: list[JsonlProblem] = []
        seen_problems = 0
        last_step: int | None = None
        # The renamed and reordered keys depend only on a line's keys (in order), which are the same
        # on nearly every line: worked out once per key tuple, then applied in C (itemgetter + zip).
        layouts: dict[tuple[str, ...], tuple[tuple[str, ...], Callable[[dict[str, Any]], Any] | None]] = {}
        fast_iso_time = _FastIsoTime()
        path = self.path
        for lineno, obj in iter_jsonl(path, problems):
            while seen_problems < len(problems):
                problem = problems[seen_problems]
                self._note(problem.lineno, problem.reason)
                seen_problems += 1
            self.read += 1
            keys = tuple(obj)
            layout = layouts.get(keys)
            if layout is None:
                if len(layouts) >= 64:  # every line different: stay bounded
                    layouts.clear()
                layout = layouts[keys] = self._layout(keys)
            names, values = layout
            record = obj if values is None else dict(zip(names, values(obj), strict=False))  # same length
            value = record.get("step")
            step = value if type(value) is int else as_int(value)
            if step is None or step < 0:
                what = "no 'step' (or alias) field" if "step" not in record else f"'step' is {value!r}, not a step"
                self._note(lineno, what)
                continue
            if last_step is not None and step <= last_step:
                self._note(lineno, f"duplicate step {step}" if step == last_step
                           else f"step {step} goes backwards (after step {last_step})")
                continue
            last_step = step
            record["step"] = step
            value = record.get("timestamp")  # self._time(lineno, record), its usual cases inlined
            when: float | None
            if type(value) is float:  # old trackers: unix seconds
                try:
                    record["timestamp"] = fast_iso_time(value)
                    when = value
                except (OverflowError, OSError, ValueError):
                    when = self._time(lineno, record)  # says what is wrong
            elif type(value) is str:
                try:
                    when = datetime.fromisoformat(value).timestamp()
                    record["timestamp"] = fast_iso_time(when)
                except (OverflowError, OSError, ValueError):
                    when = self._time(lineno, record)  # says what is wrong
            else:
                when = self._time(lineno, record)
            lines = record.get("line_indices")
            if lines is not None:
                clean = line_ids(lines)
                if clean is None:
                    self.notes.warn(f"{path}:{lineno}: 'line_indices' is not a list of integers; indices dropped",
                                    str(path))
                    del record["line_indices"]
                else:
                    record["line_indices"] = clean
            yield lineno, step, when, record
        for problem in problems[seen_problems:]:
            self._note(problem.lineno, problem.reason)

    def _layout(self, keys: tuple[str, ...]) -> tuple[tuple[str, ...], Callable[[dict[str, Any]], Any] | None]:
        """(canonical names in record order, getter of the source values in that order) for a line's keys.

        The getter is None when the line is already canonical (no alias, canonical order): the
        line's own dict is the record.

        Aliases are renamed (the first alias present, unless the canonical name is), then the
        canonical fields come first in ``CANONICAL_ORDER`` and the others follow in line order.
        """
        obj = {key: key for key in keys}  # value: the source key
        for canonical, names in self.rules.aliases.items():
            if canonical not in obj:
                for name in names:
                    if name in obj:
                        obj[canonical] = obj.pop(name)
                        break
        ordered = {k: obj[k] for k in CANONICAL_ORDER if k in obj}
        ordered.update((k, v) for k, v in obj.items() if k not in ordered)
        sources = tuple(ordered.values())
        if tuple(ordered) == keys == sources:
            return keys, None
        if len(sources) < 2:
            return tuple(ordered), lambda o: tuple(o[k] for k in sources)
        return tuple(ordered), itemgetter(*sources)  # a tuple of the values (2 keys or more)

    def _time(self, lineno: int, obj: dict[str, Any]) -> float | None:
        """The line's time; its ``timestamp`` rewritten in the one format (``iso_time``), or a note."""
        value = obj.get("timestamp")
        if value is None:
            return None
        number = as_number(value)
        if number is not None:  # old trackers: unix seconds
            try:
                obj["timestamp"] = iso_time(number)
            except (OverflowError, OSError, ValueError):
                self.notes.warn(f"{self.path}:{lineno}: 'time' {value!r} is not a unix time", str(self.path))
                return None
            return number
        if isinstance(value, str):  # naive (the legacy trackers): local time
            try:
                when = datetime.fromisoformat(value).timestamp()
                obj["timestamp"] = iso_time(when)
                return when
            except (OverflowError, OSError, ValueError):
                pass
        self.notes.warn(f"{self.path}:{lineno}: 'timestamp' {value!r} is not an ISO time; time of the previous step"
                        " used", str(self.path))
        return None


class _FastIsoTime:
    """:func:`~lightning_track.vocabulary.iso_time`, the text around the seconds worked out once a minute.

    Why: ``iso_time`` costs about 2 us (``fromtimestamp``, ``astimezone``, ``isoformat``) on every
    tracking line. Its result is the local time of the whole second (rounded half-even to
    microseconds, as ``fromtimestamp`` rounds), the microseconds and the UTC offset. Within one minute
    whose first and last second read ``...:00`` and ``...:59`` of the same local minute with the same
    offset (no offset change inside it: checked, not assumed) the text of a second is that minute, the
    seconds, the microseconds and that offset. Other minutes (a leap second, an offset with seconds)
    take ``iso_time`` every time. Raises what ``iso_time`` raises.
    """

    def __init__(self) -> None:
        self._minute: int | None = None
        self._prefix: str | None = None  # "YYYY-MM-DDTHH:MM:" of self._minute, None when irregular
        self._offset = ""  # "+HH:MM" of the last regular minute: the tail of every text in self._micros
        self._second: int | None = None  # a second of self._minute (a regular one), else None
        self._head = ""  # "YYYY-MM-DDTHH:MM:SS." of self._second
        self._micros: dict[int, str] = {}  # microseconds -> "ffffff+HH:MM" (format specs are slow)

    def __call__(self, number: float) -> str:
        frac, whole = math.modf(number)
        micro = round(frac * 1e6)  # what fromtimestamp does (_PyTime_DoubleToDenominator, half-even)
        if micro >= 1_000_000:
            micro -= 1_000_000
            whole += 1.0
        elif micro < 0:
            micro += 1_000_000
            whole -= 1.0
        second = int(whole)
        if second != self._second:
            minute, into = divmod(second, 60)
            if minute != self._minute:
                self._start_minute(minute)
            if self._prefix is None:
                return iso_time(number)
            self._second, self._head = second, self._prefix + _SECOND_TEXT[into]
        text = self._micros.get(micro)
        if text is None:
            if len(self._micros) >= 1024:
                self._micros.clear()
            text = self._micros[micro] = f"{micro:06d}{self._offset}"
        return self._head + text

    def _start_minute(self, minute: int) -> None:
        self._minute = self._second = None  # until known: fromtimestamp may raise
        first = datetime.fromtimestamp(minute * 60).astimezone()
        last = datetime.fromtimestamp(minute * 60 + 59).astimezone()
        regular = (first.second == 0 and last.second == 59 and first.utcoffset() == last.utcoffset()
                   and first.replace(second=0) == last.replace(second=0))
        self._prefix = None
        if regular:
            text = first.isoformat(timespec="seconds")  # "YYYY-MM-DDTHH:MM:00+HH:MM"
            self._prefix, offset = text[:17], text[19:]
            if offset != self._offset:
                self._micros.clear()
                self._offset = offset
        self._minute = minute


_SECOND_TEXT = tuple(f"{n:02d}." for n in range(60))
