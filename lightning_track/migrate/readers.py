"""Tolerant readers of the legacy files: every problem becomes a one-line note naming the file and
line or field, and reading goes on with what is usable. Only an OS error (e.g. permission denied)
escapes, because the user can fix it and re-run.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ..folder.fileio import JsonlProblem, iter_jsonl, read_json
from .report import Notes
from .rules import MigrateRules

__all__ = ["TrackedStep", "TrackingReader", "read_legacy_config", "read_log_history", "read_trainer_state",
           "MappingEntry", "read_checkpoint_mapping", "read_line_mapping", "step_from_name", "find_log_file"]

CANONICAL_ORDER = ("step", "epoch", "batch_idx", "stage", "line_indices", "loss", "learning_rate", "timestamp")
_DIGITS = re.compile(r"(\d+)$")
_INT_TYPE = frozenset({int})


def step_from_name(name: str) -> int | None:
    """``checkpoint-76`` / ``step_76.pt`` / ``76`` -> 76 (the trailing number of the stem)."""
    stem = name[: -len(Path(name).suffix)] if Path(name).suffix in (".pt", ".pth", ".bin", ".ckpt") else name
    match = _DIGITS.search(stem)
    return int(match.group(1)) if match else None


def as_int(value: Any) -> int | None:
    """An integer from an int or integral float (not bool); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def as_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def find_log_file(logs: Path, stem: str, dataset: str, suffix: str, notes: Notes) -> Path | None:
    """``logs/<stem>_<dataset><suffix>``, or the only ``<stem>_*<suffix>`` there (with a note)."""
    exact = logs / f"{stem}_{dataset}{suffix}"
    if exact.is_file():
        return exact
    if not logs.is_dir():
        return None
    others = sorted(p for p in logs.glob(f"{stem}_*{suffix}") if p.is_file()
                    and not (stem == "checkpoint_mapping" and p.name.startswith("line_")))
    if len(others) == 1:
        notes.warn(f"{exact.name} not found; using {others[0].name} instead", str(exact))
        return others[0]
    if len(others) > 1:
        notes.warn(f"{exact.name} not found and {len(others)} other {stem}_*{suffix} files exist; none used",
                   str(exact))
    return None


# -- training_config.yaml ------------------------------------------------------------------------
def read_legacy_config(path: Path, notes: Notes) -> dict[str, Any] | None:
    """The nested legacy config, or None (with a note) when missing, empty or unreadable as YAML."""
    if not path.exists():
        notes.warn(f"{path}: missing; config.yaml holds only what the rules know (empty)", str(path))
        return None
    raw = path.read_bytes()
    if not raw.strip():
        notes.warn(f"{path}: file is empty; config skipped", str(path))
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        notes.warn(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start}); config skipped", str(path))
        return None
    try:
        data = OmegaConf.to_container(OmegaConf.create(text), resolve=False)
    except Exception as exc:  # noqa: BLE001 - YAML/OmegaConf errors come in many types
        notes.warn(f"{path}: not valid YAML ({str(exc).splitlines()[0]}); config skipped", str(path))
        return None
    if not isinstance(data, dict):
        notes.warn(f"{path}: expected a mapping at the top level, got {type(data).__name__}; config skipped", str(path))
        return None
    return data


# -- batch tracking --------------------------------------------------------------------------------
@dataclass
class TrackedStep:
    lineno: int
    step: int
    time: float | None  # unix seconds, None when the line has no usable timestamp
    record: dict[str, Any]  # canonical field names, unknown fields kept


class TrackingReader:
    """Stream ``batch_tracking_<dataset>.jsonl`` as canonical records, one line in memory at a time.

    Aliases are renamed (``global_step`` -> ``step`` ...), ``time`` (unix seconds) becomes an ISO
    ``timestamp``. Lines that are corrupt, partial, without a step, a duplicate step or a step going
    backwards are skipped with a note; the first occurrence of a step wins.
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
        iso_time = _LocalIsoTime()
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
                    record["timestamp"] = iso_time(value)
                    when = value
                except (OverflowError, OSError, ValueError):
                    when = self._time(lineno, record)  # says what is wrong
            elif type(value) is str:
                try:
                    when = datetime.fromisoformat(value).timestamp()
                except ValueError:
                    when = self._time(lineno, record)  # says what is wrong
            else:
                when = self._time(lineno, record)
            lines = record.get("line_indices")
            if lines is not None:
                clean = _line_ids(lines)
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
        value = obj.get("timestamp")
        if value is None:
            return None
        number = as_number(value)
        if number is not None:  # old trackers: unix seconds
            try:
                obj["timestamp"] = datetime.fromtimestamp(number).isoformat(timespec="microseconds")
            except (OverflowError, OSError, ValueError):
                self.notes.warn(f"{self.path}:{lineno}: 'time' {value!r} is not a unix time", str(self.path))
                return None
            return number
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value).timestamp()
            except ValueError:
                pass
        self.notes.warn(f"{self.path}:{lineno}: 'timestamp' {value!r} is not an ISO time; time of the previous step"
                        " used", str(self.path))
        return None


class _LocalIsoTime:
    """``datetime.fromtimestamp(t).isoformat(timespec="microseconds")``, the date part worked out once a minute.

    Why: that call costs about 1.3 us, mostly ``isoformat``, on every tracking line. The result is
    the local time of the whole second (rounded half-even to microseconds, as ``fromtimestamp``
    rounds) plus the microseconds; within one minute whose first and last second read
    ``...:00`` and ``...:59`` of the same local minute (no offset change inside it: checked, not
    assumed) the local time of a second is that minute plus the seconds. Other minutes (a leap
    second, an offset with seconds) take ``fromtimestamp`` every time. Raises what it raises.
    """

    def __init__(self) -> None:
        self._minute: int | None = None
        self._prefix: str | None = None  # "YYYY-MM-DDTHH:MM:" of self._minute, None when irregular
        self._second: int | None = None
        self._head = ""  # "YYYY-MM-DDTHH:MM:SS." of self._second
        self._micros: dict[int, str] = {}  # microseconds -> "ffffff" (format specs are slow)

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
                return datetime.fromtimestamp(number).isoformat(timespec="microseconds")
            self._second, self._head = second, self._prefix + _SECOND_TEXT[into]
        text = self._micros.get(micro)
        if text is None:
            if len(self._micros) >= 1024:
                self._micros.clear()
            text = self._micros[micro] = f"{micro:06d}"
        return self._head + text

    def _start_minute(self, minute: int) -> None:
        self._minute = None  # until known: fromtimestamp may raise
        first = datetime.fromtimestamp(minute * 60)
        last = datetime.fromtimestamp(minute * 60 + 59)
        regular = first.second == 0 and last.second == 59 and first.replace(second=0) == last.replace(second=0)
        self._prefix = first.isoformat(timespec="seconds")[:-2] if regular else None
        self._minute = minute


_SECOND_TEXT = tuple(f"{n:02d}." for n in range(60))


def _line_ids(value: Any) -> list[int] | None:
    if not isinstance(value, list):
        return None
    if _INT_TYPE.issuperset(map(type, value)):  # the common case, checked in C: already clean (no bools)
        return value
    out = []
    for item in value:
        number = as_int(item)
        if number is None and isinstance(item, str) and item.isdigit():
            number = int(item)
        if number is None:
            return None
        out.append(number)
    return out


# -- trainer_state.json ------------------------------------------------------------------------------
def read_trainer_state(path: Path, notes: Notes) -> dict[str, Any] | None:
    """A HF ``trainer_state.json`` as a dict, or None with a note when it is unusable."""
    try:
        data = read_json(path)
    except ValueError as exc:
        notes.warn(f"{exc}; trainer_state skipped", str(path))
        return None
    if not isinstance(data, dict):
        notes.warn(f"{path}: expected a JSON object; trainer_state skipped", str(path))
        return None
    return data


def read_log_history(paths: list[Path], rules: MigrateRules, notes: Notes) -> dict[int, dict[str, float]]:
    """``step -> {metric: value}`` merged from the ``log_history`` of each file (later files win)."""
    merged: dict[int, dict[str, float]] = {}
    for path in paths:
        state = read_trainer_state(path, notes)
        if state is None:
            continue
        history = state.get("log_history", [])
        if not isinstance(history, list):
            notes.warn(f"{path}: field 'log_history' is not a list; skipped", str(path))
            continue
        for i, entry in enumerate(history):
            step = as_int(entry.get("step")) if isinstance(entry, dict) else None
            if step is None:
                notes.warn(f"{path}: log_history[{i}] has no integer 'step'; entry skipped", str(path))
                continue
            values = merged.setdefault(step, {})
            for key, value in entry.items():
                number = as_number(value)
                if key != "step" and number is not None:
                    values[rules.history_metric_name(key)] = number
    return {step: values for step, values in sorted(merged.items()) if values}


# -- mappings ------------------------------------------------------------------------------------------
@dataclass
class MappingEntry:
    name: str
    step: int
    path: str | None
    lines: list[int] | None  # None in the old format: rebuilt from batch tracking


def read_checkpoint_mapping(path: Path, notes: Notes) -> list[MappingEntry] | None:
    """Both formats: ``{"checkpoint-76": {"step", "path", "lines"}}`` and the old ``{"76": "path"}``."""
    try:
        data = read_json(path)
    except ValueError as exc:
        notes.warn(f"{exc}; mapping rebuilt from batch tracking", str(path))
        return None
    if not isinstance(data, dict):
        notes.warn(f"{path}: expected a JSON object, got {type(data).__name__}; mapping rebuilt from batch tracking",
                   str(path))
        return None
    entries = []
    for key, value in data.items():
        if isinstance(value, str):  # old format
            step = as_int(int(key)) if key.isdigit() else step_from_name(key)
            entry_path, lines = value, None
        elif isinstance(value, dict):
            step = as_int(value.get("step"))
            step = step if step is not None else step_from_name(key)
            entry_path = value.get("path") if isinstance(value.get("path"), str) else None
            lines = _line_ids(value["lines"]) if "lines" in value else None
            if "lines" in value and lines is None:
                notes.warn(f"{path}: entry {key!r}: 'lines' is not a list of integers; rebuilt from batch tracking",
                           str(path))
        else:
            notes.warn(f"{path}: entry {key!r} is {type(value).__name__}, not a path or an object; skipped", str(path))
            continue
        if step is None:
            notes.warn(f"{path}: entry {key!r} has no step; skipped", str(path))
            continue
        entries.append(MappingEntry(str(key), step, entry_path, lines))
    return entries


def read_line_mapping(path: Path, notes: Notes) -> set[str] | None:
    """The checkpoint names a ``{line: [checkpoint names]}`` file uses, or None with a note.

    Only the names are needed: the new line mapping is rebuilt from the checkpoint mapping (it is its
    inverse), so the legacy one is read to report names that point nowhere.
    """
    names = _line_mapping_names_fast(path)
    if names is not None:
        return names
    try:
        data = read_json(path)
    except ValueError as exc:
        notes.warn(f"{exc}; rebuilt from the checkpoint mapping", str(path))
        return None
    if not isinstance(data, dict) or not {list}.issuperset(map(type, data.values())):
        notes.warn(f"{path}: expected {{line: [checkpoint names]}}; rebuilt from the checkpoint mapping", str(path))
        return None
    names: set[Any] = set()
    for value in data.values():  # set.update runs in C; values are lists of names
        try:
            names.update(value)
        except TypeError:  # an unhashable item (a list or object where a name belongs)
            names.update(str(n) for n in value)
    return {str(n) for n in names}


_LIST_BODY = re.compile(rb"\[([^\]]*)\]")
_WS = rb"[ \t\n\r]*"  # JSON's whitespace
_ENTRY = rb'"[0-9]+"' + _WS + rb":" + _WS + rb"\[\]"
_SKELETON = re.compile(_WS + rb"\{" + _WS + rb"(?:" + _ENTRY + _WS + rb"(?:," + _WS + _ENTRY + _WS + rb")*)?\}" + _WS)


def _line_mapping_names_fast(path: Path) -> set[str] | None:
    """The names of a well-formed ``{"<line>": [names], ...}`` file without parsing every list; None
    when the file is anything else (the full parse then decides and words the problem).

    Why: the lists repeat (each is a suffix of the checkpoint names), so an issue-scale file of
    ~110 MB holds a few dozen distinct list texts; parsing those and a skeleton with every list
    emptied is ~5x faster than parsing the file. The skeleton must match an object of digit keys whose
    values are all the emptied lists, so every piece parsed is a value list of the original.
    """
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if not data.lstrip().startswith(b"{") or b"\x00" in data[:8]:  # UTF-16/32: the full parse explains
        return None
    pieces = _LIST_BODY.split(data)
    if not _SKELETON.fullmatch(b"[]".join(pieces[0::2])):
        return None
    try:
        names: set[str] = set()
        for body in set(pieces[1::2]):
            items = json.loads(b"[" + body + b"]")
            if not all(isinstance(item, str) for item in items):
                return None
            names.update(items)
    except ValueError:
        return None
    return names
