"""Batch tracking: which data lines trained in which step, and before which checkpoint.

Shared by the ``BatchTracker`` callback (live runs) and ``lt-migrate`` (legacy runs), so both write
the same files:

``batch_tracking.jsonl`` -- one object per optimizer step::

    {"step": 76, "epoch": 0, "batch_idx": 75, "line_indices": [12, 873, 4410, 9],
     "loss": 0.5312, "learning_rate": 0.0001, "timestamp": "2025-07-20T14:31:02.123456"}

  (extra fields are allowed and kept, e.g. ``"stage"`` or ``"micro_batches"``).

``checkpoint_mapping.json`` -- checkpoint name -> what it covers (every line trained up to and
including its step)::

    {"checkpoint-step-076": {"step": 76, "path": "checkpoints/checkpoint-step-076.ckpt",
                             "lines": [12, 873, ...]}}

``line_checkpoint_mapping.json`` -- data line -> the checkpoints saved after it was trained::

    {"12": ["checkpoint-step-076", "checkpoint-step-077"]}
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .fileio import atomic_open, atomic_write_json
from .layout import RunLayout

__all__ = ["checkpoint_name", "CheckpointMappings", "CANONICAL_FIELDS"]

CANONICAL_FIELDS = ("step", "epoch", "batch_idx", "line_indices", "loss", "learning_rate", "timestamp")


def checkpoint_name(step: int) -> str:
    """The mapping key of the step checkpoint: its file name without ``.ckpt``."""
    return Path(RunLayout.checkpoint_filename(step)).stem


class CheckpointMappings:
    """Both mapping files: feed steps' lines, then checkpoints as they are saved; ``write`` both.

    The checkpoint mapping is the state; the line mapping is derived from it when written (it is
    its inverse), so the two files cannot disagree. Memory is one set of line ids (the lines seen so
    far) plus the checkpoint mapping.
    """

    def __init__(self, layout: RunLayout) -> None:
        self.layout = layout
        self.seen_lines: set[int] = set()
        self.checkpoints: dict[str, dict[str, Any]] = {}

    def add_lines(self, lines: Iterable[int]) -> None:
        self.seen_lines.update(int(x) for x in lines)

    def add_checkpoint(self, step: int, path: str | Path | None = None, lines: Iterable[int] | None = None) -> str:
        """Record the checkpoint of ``step``: it covers ``lines``, by default every line seen so far."""
        name = checkpoint_name(step)
        rel = Path(path).relative_to(self.layout.run_dir) if path and Path(path).is_absolute() else None
        self.checkpoints[name] = {
            "step": step,
            "path": str(rel if rel is not None else Path(RunLayout.CHECKPOINTS) / RunLayout.checkpoint_filename(step)),
            "lines": sorted(self.seen_lines if lines is None else set(lines)),
        }
        return name

    def remove_checkpoint(self, name: str) -> None:
        """Forget a checkpoint that was deleted (e.g. by ``keep_last``)."""
        self.checkpoints.pop(name, None)

    @property
    def line_to_checkpoints(self) -> dict[str, list[str]]:
        """Data line (as a JSON key) -> the checkpoints that cover it, in checkpoint order."""
        mapping: dict[str, list[str]] = {}
        for name, entry in self.checkpoints.items():
            for line in entry["lines"]:
                mapping.setdefault(str(line), []).append(name)
        return mapping

    def load(self) -> None:
        """Continue from the checkpoint mapping already in the run folder (resume)."""
        from .fileio import read_json

        if self.layout.checkpoint_mapping_json.exists():
            data: Mapping[str, Any] = read_json(self.layout.checkpoint_mapping_json)
            self.checkpoints = dict(data)
            for entry in self.checkpoints.values():
                self.seen_lines.update(entry.get("lines", []))

    def write(self) -> None:
        """Both files atomically, as one compact JSON object each (they hold millions of line ids)."""
        atomic_write_json(self.layout.checkpoint_mapping_json, self.checkpoints, compact=True)
        chunks = _nested_line_mapping_json(self.checkpoints)
        if chunks is None:
            atomic_write_json(self.layout.line_checkpoint_mapping_json, self.line_to_checkpoints, compact=True)
            return
        with atomic_open(self.layout.line_checkpoint_mapping_json, "w") as handle:
            handle.writelines(chunks)


def _nested_line_mapping_json(checkpoints: Mapping[str, Mapping[str, Any]]) -> list[str] | None:
    """The line mapping's compact JSON text in pieces when each checkpoint covers all lines of the
    one before (the usual case: a checkpoint covers every line trained so far); None otherwise.

    Why: then every line's list is a suffix of the checkpoint names, so the text of each suffix is
    built once, instead of one list append per (line, checkpoint) pair -- millions in a long run.
    The text is the same as ``json.dumps(line_to_checkpoints, separators=(",", ":"))``.
    """
    names = list(checkpoints)
    seen: set[int] = set()
    groups: list[list[int]] = []  # per checkpoint: the lines it is the first to cover, in order
    for name in names:
        lines = checkpoints[name].get("lines")
        if not isinstance(lines, list):
            return None
        current = set(lines)
        new = current - seen
        if len(current) != len(lines) or len(current) - len(new) != len(seen):  # duplicates, or seen not within
            return None
        if not {int}.issuperset(map(type, new)):  # ints only (not bools): they become the keys as they are
            return None
        groups.append(sorted(new))
        seen = current
    pieces = ["{"]
    first = True
    for k, group in enumerate(groups):
        if not group:
            continue
        suffix = json.dumps(names[k:], ensure_ascii=False, separators=(",", ":"))
        # '"5":' + suffix + ',"12":' + suffix ...: one join copies each suffix once, no per-line strings of it
        pieces.append(("" if first else ",") + (suffix + ",").join([f'"{line}":' for line in group]) + suffix)
        first = False
    pieces.append("}\n")
    return pieces
