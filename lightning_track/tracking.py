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

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .fileio import atomic_write_json
from .layout import RunLayout

__all__ = ["checkpoint_name", "CheckpointMappings", "CANONICAL_FIELDS"]

CANONICAL_FIELDS = ("step", "epoch", "batch_idx", "line_indices", "loss", "learning_rate", "timestamp")


def checkpoint_name(step: int) -> str:
    """The mapping key of the step checkpoint: its file name without ``.ckpt``."""
    return Path(RunLayout.checkpoint_filename(step)).stem


class CheckpointMappings:
    """Builds both mapping files incrementally: feed steps' lines, then checkpoints as they are saved.

    Memory is one set of line ids (the lines seen so far) plus the mappings themselves.
    """

    def __init__(self, layout: RunLayout) -> None:
        self.layout = layout
        self.seen_lines: set[int] = set()
        self.checkpoints: dict[str, dict[str, Any]] = {}
        self.line_to_checkpoints: dict[str, list[str]] = {}
        self._listed: set[str] = set()  # names in the line mapping read by load()
        self._by_int: dict[int, list[str]] = {}  # the lists of line_to_checkpoints by int line id (no str() per line)

    def add_lines(self, lines: Iterable[int]) -> None:
        self.seen_lines.update(int(x) for x in lines)

    def add_checkpoint(self, step: int, path: str | Path | None = None) -> str:
        name = checkpoint_name(step)
        rel = Path(path).relative_to(self.layout.run_dir) if path and Path(path).is_absolute() else None
        lines = sorted(self.seen_lines)
        # A name new to both files cannot be in any line's list yet: skip the membership tests.
        known = name in self.checkpoints or name in self._listed
        self.checkpoints[name] = {
            "step": step,
            "path": str(rel if rel is not None else Path(RunLayout.CHECKPOINTS) / RunLayout.checkpoint_filename(step)),
            "lines": lines,
        }
        mapping, by_int = self.line_to_checkpoints, self._by_int
        if len(by_int) != len(mapping):  # line_to_checkpoints was loaded or replaced: re-index it
            by_int.clear()
            by_int.update((int(key), names) for key, names in mapping.items()
                          if key.lstrip("-").isdigit() and str(int(key)) == key)
        for line in lines:
            names = by_int.get(line)
            if names is None:
                names = mapping.setdefault(str(line), [])
                by_int[line] = names
            if not known or name not in names:  # a new name cannot be in any list yet
                names.append(name)
        return name

    def remove_checkpoint(self, name: str) -> None:
        """Forget a checkpoint that was deleted (e.g. by ``keep_last``)."""
        self.checkpoints.pop(name, None)
        self._listed.discard(name)
        for names in self.line_to_checkpoints.values():
            if name in names:
                names.remove(name)

    def load(self) -> None:
        """Continue from the files already in the run folder (resume)."""
        from .fileio import read_json

        if self.layout.checkpoint_mapping_json.exists():
            data: Mapping[str, Any] = read_json(self.layout.checkpoint_mapping_json)
            self.checkpoints = dict(data)
            for entry in self.checkpoints.values():
                self.seen_lines.update(entry.get("lines", []))
        if self.layout.line_checkpoint_mapping_json.exists():
            self.line_to_checkpoints = dict(read_json(self.layout.line_checkpoint_mapping_json))
            self._listed = {name for names in self.line_to_checkpoints.values() for name in names}

    def write(self) -> None:
        """Both files atomically, as one compact JSON object each (they hold millions of line ids)."""
        atomic_write_json(self.layout.checkpoint_mapping_json, self.checkpoints, compact=True)
        atomic_write_json(self.layout.line_checkpoint_mapping_json, self.line_to_checkpoints, compact=True)
