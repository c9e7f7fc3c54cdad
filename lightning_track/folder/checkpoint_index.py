"""Reading ``checkpoints.json``, the index of every checkpoint a run wrote (written by
:mod:`lightning_track.run.lineage`): ``{"checkpoints": [{"file", "step", "epoch", "attempt", "time",
"metrics", "size", "sha256"}, ...]}``, paths relative to the run folder."""

from __future__ import annotations

from typing import Any

from .fileio import read_json
from .layout import RunLayout

__all__ = ["read_index", "HASH"]

HASH = "sha256"  # the key of an entry's content hash (hex, as sha256sum prints it)


def read_index(layout: RunLayout) -> list[dict[str, Any]]:
    """The entries of ``checkpoints.json`` (none when it is missing or unreadable)."""
    try:
        data = read_json(layout.checkpoints_index)
    except (OSError, ValueError):
        return []
    entries = data.get("checkpoints") if isinstance(data, dict) else None
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
