"""Tolerant readers of the legacy files: every problem becomes a one-line note naming the file and
line or field, and reading goes on with what is usable. Only an OS error (e.g. permission denied)
escapes, because the user can fix it and re-run. (The batch tracking: :mod:`.tracking_reader`.)
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ..folder.fileio import read_json
from .report import Notes
from .rules import MigrateRules

__all__ = ["step_from_name", "as_int", "as_number", "line_ids", "find_log_file", "read_legacy_config",
           "read_trainer_state", "read_log_history", "MappingEntry", "read_checkpoint_mapping", "read_line_mapping"]

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


def line_ids(value: Any) -> list[int] | None:
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
            lines = line_ids(value["lines"]) if "lines" in value else None
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
