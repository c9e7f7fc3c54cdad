"""Media a run logs (images, text, histograms): the files under ``<run>/media/`` and their index ``media.jsonl``.

Each item is one file, written once and never changed, and one line of the index::

    {"key": "val/samples", "step": 30, "time": 1795323146.64, "kind": "image",
     "file": "media/val/samples/step-30-0.png", "caption": "epoch 1", "width": 256, "height": 256}

``kind`` is ``image`` (PNG), ``text`` (``.txt``, or ``.csv`` for a table given as rows and columns) or
``histogram`` (``.json``: bucket edges and counts, min, max, count, sum, sum of squares: what TensorBoard's
histogram holds). The file name carries the step and the item's index within one call, so two calls never
collide and the folder sorts by step. Torch- and numpy-free: the sinks and the readers use it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .fileio import iter_jsonl

__all__ = ["MediaRecord", "media_file", "MAX_PART_BYTES", "read_media_index", "IMAGE", "TEXT", "HISTOGRAM", "KINDS"]

IMAGE, TEXT, HISTOGRAM = "image", "text", "histogram"
KINDS = (IMAGE, TEXT, HISTOGRAM)
_UNSAFE = re.compile(r"[^\w.\-]+")


@dataclass
class MediaRecord:
    """One encoded item on its way to the sinks (the writer thread made it from what was logged)."""

    key: str
    step: int
    time: float
    kind: str
    file: str  # relative to the run folder
    data: bytes  # the file's bytes: PNG, UTF-8 text or CSV, JSON
    caption: str | None = None
    info: dict[str, Any] = field(default_factory=dict)  # image: width, height, channels; histogram: its numbers

    def index_line(self) -> dict[str, Any]:
        line: dict[str, Any] = {"key": self.key, "step": self.step, "time": round(self.time, 6), "kind": self.kind,
                                "file": self.file}
        if self.caption is not None:
            line["caption"] = self.caption
        if self.kind == IMAGE:
            line.update(width=self.info.get("width"), height=self.info.get("height"))
        return line


MAX_PART_BYTES = 120  # a file system allows 255 bytes a name; the rest is left for the prefix and hash


def _path_part(part: str) -> str:
    """One part of a key as a folder name: safe characters, and a long part cut with a hash of the whole
    part (two long keys that share a beginning stay apart; ``media.jsonl`` keeps the key whole)."""
    safe = _UNSAFE.sub("-", part).strip(".-") or "_"
    if len(safe.encode()) <= MAX_PART_BYTES:
        return safe
    digest = hashlib.sha1(part.encode()).hexdigest()[:12]
    cut = safe.encode()[: MAX_PART_BYTES - len(digest) - 1].decode("utf-8", "ignore")
    return f"{cut}-{digest}"


def media_file(key: str, step: int, index: int, extension: str) -> str:
    """``media/<key as folders>/step-<step>-<index>.<ext>``; each part of the key made safe for a path."""
    parts = [_path_part(part) for part in key.split("/") if part]
    return "/".join(["media", *(parts or ["_"]), f"step-{step}-{index}.{extension}"])


def read_media_index(path: str | Path) -> Iterator[dict[str, Any]]:
    """The lines of a ``media.jsonl`` (a torn last line is skipped)."""
    for _, line in iter_jsonl(path, problems=[]):
        yield line
