"""Tags and notes a person adds to a run after it started (``lt tag``, ``lt note``).

Why a file of their own (``annotations.json``) instead of ``summary.json``: a running run refreshes
``summary.json`` every few seconds by read-modify-write in the training process; a tag written into it
from another process between that read and that write would be lost without a word. This file has one
writer at a time (a person's command), is replaced atomically, and ``lt-sync`` mirrors it like any file.

``RunLogger(tags=..., notes=...)`` records the first tags and notes in ``summary.json`` at the start;
once this file exists its lists are the run's tags and notes (it starts from the summary's).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError, RunFolderError
from ..folder.fileio import atomic_write_json, read_json
from ..folder.layout import RunLayout
from ..vocabulary import iso_time

__all__ = ["read_annotations", "effective_tags", "effective_notes", "change_tags", "set_notes",
           "parse_tag_ops", "check_tag"]

# one word, no comma (filters split on it), not a sign first, no control character (a terminal escape)
_TAG = re.compile(r"^[^\s,+\-\x00-\x1f\x7f-\x9f][^\s,\x00-\x1f\x7f-\x9f]{0,63}$")


def check_tag(tag: str) -> str:
    """A tag as given, or a one-line error naming it (spaces, commas, a leading sign, >64 characters)."""
    if not isinstance(tag, str) or not _TAG.match(tag):
        raise ConfigError(f"tag {tag!r}: one word of at most 64 characters, no spaces, commas or control "
                          "characters, not starting with + or -")
    return tag


def read_annotations(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's ``annotations.json``, or None when it has none; a torn one raises naming the file."""
    path = RunLayout(run_dir).annotations_json
    if not path.exists():
        return None
    try:
        data = read_json(path)
    except ValueError as exc:
        raise RunFolderError(str(exc)) from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{path}: expected a JSON object")
    return data


def effective_tags(summary: Mapping[str, Any], annotations: Mapping[str, Any] | None) -> list[str]:
    """The run's tags: the annotations' list when there is one, else the summary's."""
    source = annotations if annotations is not None and "tags" in annotations else summary
    tags = source.get("tags") or []
    return [str(t) for t in tags] if isinstance(tags, list) else [str(tags)]


def effective_notes(summary: Mapping[str, Any], annotations: Mapping[str, Any] | None) -> str:
    source = annotations if annotations is not None and "notes" in annotations else summary
    notes = source.get("notes")
    return "" if notes is None else str(notes)


def parse_tag_ops(ops: Iterable[str]) -> tuple[list[str], list[str]]:
    """``["+a", "-b", "c"]`` -> (add ``[a, c]``, remove ``[b]``); each tag checked."""
    add: list[str] = []
    remove: list[str] = []
    for op in ops:
        if op.startswith("-"):
            remove.append(check_tag(op[1:]))
        else:
            add.append(check_tag(op[1:] if op.startswith("+") else op))
    return add, remove


def _summary(run_dir: Path) -> dict[str, Any]:
    path = RunLayout(run_dir).summary_json
    try:
        data = read_json(path) if path.exists() else {}
    except ValueError:
        data = {}  # a torn summary has no tags to start from; the annotations still work
    return data if isinstance(data, dict) else {}


def change_tags(run_dir: str | Path, add: Iterable[str] = (), remove: Iterable[str] = ()) -> list[str]:
    """Add and remove tags (order kept, no duplicates); returns the run's tags after the change."""
    run_dir = Path(run_dir)
    current = read_annotations(run_dir)
    tags = effective_tags(_summary(run_dir), current)
    drop = set(remove)
    tags = [t for t in tags if t not in drop]
    tags += [t for t in dict.fromkeys(add) if t not in tags and t not in drop]
    _write(run_dir, current, tags=tags)
    return tags


def set_notes(run_dir: str | Path, notes: str, *, append: bool = False) -> str:
    """Replace (or append a line to) the run's notes; returns them."""
    run_dir = Path(run_dir)
    current = read_annotations(run_dir)
    if append:
        before = effective_notes(_summary(run_dir), current)
        notes = f"{before}\n{notes}" if before else notes
    _write(run_dir, current, notes=notes)
    return notes


def _write(run_dir: Path, current: Mapping[str, Any] | None, **fields: Any) -> None:
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir}: not a run folder")
    data = dict(current or {})
    summary = _summary(run_dir)
    data.setdefault("tags", effective_tags(summary, None))  # the file holds both once it exists
    data.setdefault("notes", effective_notes(summary, None))
    data.update(fields, updated=iso_time())
    atomic_write_json(RunLayout(run_dir).annotations_json, data)
