"""``media/`` and ``media.jsonl``: every image, text and histogram as a file, and the index that finds them.

Runs on the writer thread beside ``metrics.jsonl`` (the files are the record; TensorBoard and SwanLab get
the same items). Each file is written whole under a temporary name and renamed into place, then its index
line appended, so a reader never finds an index line whose file is missing or half written.
"""

from __future__ import annotations

from ..folder.fileio import JsonlAppender, atomic_write_bytes, json_line, staged_writes
from ..folder.media import MediaRecord
from ..folder.records import MetricRecord
from .base import Sink, SinkContext


class MediaFilesSink(Sink):
    name = "media"

    def __init__(self) -> None:
        self._context: SinkContext | None = None
        self._index: JsonlAppender | None = None

    def open(self, context: SinkContext) -> None:
        self._context = context

    def write(self, records: list[MetricRecord]) -> None:
        pass  # scalars are metrics.jsonl's

    def write_media(self, records: list[MediaRecord]) -> None:
        if not records:
            return
        assert self._context is not None, "sink not opened"
        run_dir = self._context.layout.run_dir
        with staged_writes():  # renamed into place whole; no fsync per image holding up the metrics
            for record in records:
                target = run_dir / record.file
                target.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(target, record.data)
        if self._index is None:
            self._index = JsonlAppender(self._context.layout.media_jsonl)
        self._index.write_lines([json_line(record.index_line()) for record in records])

    def close(self, status: str, reason: str | None = None) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None


SINK = MediaFilesSink
