"""Images, text and histograms: what the training thread hands over, and how the writer thread encodes it.

Why two halves: ``log_image`` runs on the training thread, where TensorBoard's ``add_image`` converts,
PNG-encodes and serialises before it returns. Here the training thread only takes a copy of the pixels
(:func:`image_array`, the one thing that cannot wait: the tensor may change after the call); scaling to
8 bits, the PNG, the histogram buckets and every file are made on the writer thread (:class:`MediaEncoder`)
and written by the sinks (``media/`` and ``media.jsonl``, TensorBoard, SwanLab), off the training thread.

Accepted images: torch tensors, numpy arrays (``CHW``, ``HWC`` or ``HW``; floats in [0, 1] or integers
in [0, 255]), PIL images and matplotlib figures (rendered at the call: a figure is not thread-safe).
Pixels and grids follow ``SummaryWriter`` exactly, so a module moved from ``TensorBoardLogger`` shows
the same images.
The PNG encoder is zlib's (compression releases the GIL); nothing here imports torch.
"""

from __future__ import annotations

import csv
import io
import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..folder.media import HISTOGRAM, IMAGE, TEXT, MediaRecord, media_file

__all__ = ["MediaItem", "MediaEncoder", "image_array", "figure_array", "image_grid", "histogram_values",
           "encode_png", "tensorflow_buckets"]


@dataclass
class MediaItem:
    """What the training thread queues: raw, copied values; encoded later by :class:`MediaEncoder`."""

    key: str
    step: int
    time: float
    kind: str
    value: Any  # image: a numpy array (HWC); text: str or (rows, columns); histogram: a 1-D float array
    caption: str | None = None
    info: dict[str, Any] = field(default_factory=dict)  # image: index and many (several in one call)


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach()
        if getattr(value, "dtype", None) is not None and "bfloat16" in str(value.dtype):
            value = value.float()
        return value.cpu().numpy()
    return np.asarray(value)


def figure_array(figure: Any) -> np.ndarray:
    """A matplotlib figure rendered to RGBA pixels (HWC)."""
    canvas = figure.canvas
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def image_array(image: Any, dataformats: str | None = None) -> np.ndarray:
    """A copy of ``image``'s pixels as an HWC (or HW) array; the dtype is kept (scaled later)."""
    if hasattr(image, "canvas") and hasattr(image, "savefig"):
        return figure_array(image)
    if hasattr(image, "getbands") and hasattr(image, "convert"):  # PIL
        return np.array(image.convert("RGBA" if "A" in image.getbands() else "RGB"))
    array = _numpy(image)
    fmt = (dataformats or "").upper()
    if array.ndim == 3:
        if not fmt:  # a leading axis of 1, 3 or 4 is channels (CHW), as TensorBoard assumes by default
            fmt = "CHW" if array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4) else "HWC"
        if fmt == "CHW":
            array = np.transpose(array, (1, 2, 0))
        elif fmt != "HWC":
            raise ValueError(f"image dataformats {dataformats!r}: expected CHW, HWC or HW")
    elif array.ndim != 2:
        raise ValueError(f"an image needs 2 (HW) or 3 (CHW/HWC) dimensions, got shape {tuple(array.shape)}")
    return np.array(array, copy=True)


def image_grid(batch: Any, dataformats: str = "NCHW") -> np.ndarray:
    """A batch of images as one grid image (HWC), as ``SummaryWriter.add_images`` shows them."""
    array = _numpy(batch)
    fmt = dataformats.upper()
    if array.ndim == 3 and fmt in ("NHW", "NCHW", "NHWC"):
        array = array[:, None] if fmt != "NHWC" else array[..., None]
        fmt = "NCHW" if fmt != "NHWC" else "NHWC"
    if array.ndim != 4 or fmt not in ("NCHW", "NHWC"):
        raise ValueError(f"images dataformats {dataformats!r} with shape {tuple(array.shape)}: expected NCHW or NHWC")
    if fmt == "NCHW":
        array = np.transpose(array, (0, 2, 3, 1))
    count, height, width, channels = array.shape
    columns = min(count, 8)  # SummaryWriter's grid: rows of up to 8 images
    rows = int(np.ceil(count / columns))
    grid = np.zeros((rows * height, columns * width, channels), dtype=array.dtype)
    for i in range(count):
        r, c = divmod(i, columns)
        grid[r * height:(r + 1) * height, c * width:(c + 1) * width] = array[i]
    return grid


def histogram_values(values: Any) -> np.ndarray:
    """A flat float64 copy of ``values`` (non-finite values left out, as TensorBoard does)."""
    array = np.array(_numpy(values), dtype=np.float64, copy=True).reshape(-1)
    return array[np.isfinite(array)]


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.floating):  # SummaryWriter's rule: [0, 1] floats scaled, larger ones as 0-255
        array = np.nan_to_num(array.astype(np.float32))
        scale = 255.0 if array.size == 0 or float(array.max()) <= 1.0 else 1.0
        return np.clip(array * scale, 0, 255).astype(np.uint8)
    return np.clip(array, 0, 255).astype(np.uint8)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(array: np.ndarray) -> tuple[bytes, int, int, int]:
    """``(png bytes, height, width, channels)`` of a uint8 HW/HWC array with 1, 3 or 4 channels."""
    if array.ndim == 2:
        array = array[:, :, None]
    height, width, channels = array.shape
    if channels == 2:  # gray + alpha is a PNG type too, but TensorBoard's colorspaces are 1, 3, 4
        array = np.concatenate([np.repeat(array[:, :, :1], 3, axis=2), array[:, :, 1:]], axis=2)
        channels = 4
    if channels not in (1, 3, 4):
        raise ValueError(f"an image needs 1, 3 or 4 channels, got {channels}")
    color = {1: 0, 3: 2, 4: 6}[channels]
    rows = np.empty((height, 1 + width * channels), dtype=np.uint8)
    rows[:, 0] = 0  # filter type 0 (none) on every row
    rows[:, 1:] = np.ascontiguousarray(array).reshape(height, width * channels)
    header = struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
            + _chunk(b"IEND", b""))
    return data, height, width, channels


def tensorflow_buckets() -> np.ndarray:
    """TensorFlow's default histogram bucket edges (what ``SummaryWriter.add_histogram(bins="tensorflow")``
    uses): exponentially spaced by 1.1 from 1e-12 to 1e20, both signs."""
    positive = []
    value = 1e-12
    while value < 1e20:
        positive.append(value)
        value *= 1.1
    positive.append(float("inf"))
    return np.array([-v for v in reversed(positive)] + [0.0] + positive)


def _histogram(values: np.ndarray) -> dict[str, Any]:
    numbers: dict[str, Any] = {"min": float(values.min()) if values.size else 0.0,
                               "max": float(values.max()) if values.size else 0.0,
                               "num": int(values.size), "sum": float(values.sum()),
                               "sum_squares": float(np.dot(values, values))}
    edges = tensorflow_buckets()
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges))[:len(edges)]
    keep = np.nonzero(counts)[0]
    if keep.size:  # only the buckets that hold values, with a neighbour on each side (TensorFlow's layout)
        first, last = max(keep[0] - 1, 0), min(keep[-1] + 1, len(edges) - 1)
        numbers["bucket_limit"] = [float(e) for e in edges[first:last + 1]]
        numbers["bucket"] = [float(c) for c in counts[first:last + 1]]
    else:
        numbers["bucket_limit"], numbers["bucket"] = [], []
    return numbers


class MediaEncoder:
    """Turns queued items into :class:`MediaRecord` s with their file name and bytes (writer thread)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self._next: dict[tuple[str, int], int] = {}

    def _file(self, key: str, step: int, extension: str) -> str:
        index = self._next.get((key, step), 0)
        while True:  # a resumed run may have logged this key at this step before: never overwrite
            name = media_file(key, step, index, extension)
            index += 1
            if not (self.run_dir / name).exists():
                break
        self._next[(key, step)] = index
        return name

    def encode(self, item: MediaItem) -> MediaRecord:
        if item.kind == IMAGE:
            data, height, width, channels = encode_png(_to_uint8(item.value))
            return MediaRecord(item.key, item.step, item.time, IMAGE, self._file(item.key, item.step, "png"), data,
                               item.caption, {**item.info, "width": width, "height": height, "channels": channels})
        if item.kind == TEXT:
            if isinstance(item.value, str):
                return MediaRecord(item.key, item.step, item.time, TEXT, self._file(item.key, item.step, "txt"),
                                   item.value.encode("utf-8"), item.caption, {"text": item.value})
            rows, columns = item.value
            out = io.StringIO()
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(columns)
            writer.writerows(rows)
            markdown = "\n".join(["| " + " | ".join(str(c) for c in columns) + " |",
                                  "|" + "---|" * len(columns),
                                  *("| " + " | ".join(str(v) for v in row) + " |" for row in rows)])
            return MediaRecord(item.key, item.step, item.time, TEXT, self._file(item.key, item.step, "csv"),
                               out.getvalue().encode("utf-8"), item.caption,
                               {"text": markdown, "columns": [str(c) for c in columns]})
        if item.kind == HISTOGRAM:
            numbers = _histogram(item.value)
            return MediaRecord(item.key, item.step, item.time, HISTOGRAM, self._file(item.key, item.step, "json"),
                               json.dumps(numbers).encode("utf-8"), item.caption, numbers)
        raise ValueError(f"unknown media kind {item.kind!r}")
