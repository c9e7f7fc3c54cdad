"""The export record, ``<run>/export.json``: where the run was sent and how far each file went.

Why in the run folder: the folder is the truth, so what a tracker holds of it is part of its record.
An export reads it to send only what is new, and writes it after every batch the tracker confirmed,
so an interrupted export (or a dead server) never makes the next one send a value twice. One entry per
target (its URI without credentials)::

    {"version": 1, "targets": {"http://host:5000": {
        "tracker": "mlflow", "experiment": "arc", "experiment_id": "1", "run_id": "4f1c...", "link": "...",
        "sent": {"metrics.jsonl": {"bytes": 3526, "records": 30, "sha256": "..."}, "system.jsonl": {...}},
        "artifacts": {"config.yaml": {"size": 150, "mtime_ns": ...}},
        "params": {"model.lr": "0.01"}, "tags": {"status": "completed", ...}, "status": "FINISHED",
        "adaptations": [{"kind": "param", "name": "a@b", "sent_as": "a_b", "why": "..."}],
        "refused": [{"kind": "metric", "name": "x", "why": "..."}], "recreated": [...], "exported_at": "...",
        "not_sent": {"why": "...", "at": "...", "metrics.jsonl": {"bytes": 120, "records": 4}, ...}}}}

``not_sent`` is there only while an export (a live sink's last one included) ended before the tracker had
everything: what of each file it lacks and why; the next export that completes removes it.

A JSONL file is "sent up to byte N" together with the SHA-256 of those N bytes: when a resume has
moved records aside the file is rewritten and the digest no longer matches, which is how an export
knows the target holds values the folder no longer has.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import ExportBusy, RunFolderError, RunNotFound
from ..folder.fileio import atomic_write_json, exclusive_lock, read_json
from ..folder.layout import RunLayout
from ..vocabulary import iso_time

__all__ = ["read_record", "write_record", "export_lock", "SentFile", "not_sent"]

VERSION = 1
_CHUNK = 1 << 20


def read_record(run_dir: str | Path, name: str = RunLayout.EXPORT) -> dict[str, Any]:
    """The run's export record (empty when it was never exported); a torn or foreign file raises.
    ``name``: ``export.json``, or the mirror's own record (``RunLayout.MIRROR_EXPORT``) for lt-sync --export."""
    path = Path(run_dir) / name
    if not path.exists():
        return {"version": VERSION, "targets": {}}
    try:
        data = read_json(path)
    except (ValueError, OSError) as exc:
        raise RunFolderError(f"{path}: {exc}; move it aside to export the run from the start") from None
    if not isinstance(data, dict) or not isinstance(data.get("targets"), dict):
        raise RunFolderError(f"{path}: not an export record (no 'targets' object); move it aside to export again")
    return data


def write_record(run_dir: str | Path, record: dict[str, Any], name: str = RunLayout.EXPORT) -> None:
    atomic_write_json(Path(run_dir) / name, record)


@contextmanager
def export_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold the run's export lock (``flock`` on the run folder itself: no file left behind), or raise
    :class:`ExportBusy` at once when another export of the run holds it: two exports never interleave."""
    if not Path(run_dir).is_dir():
        raise RunNotFound(f"{run_dir}: no such run folder; name an existing one")  # not a lock file in its place
    with exclusive_lock(run_dir, name=Path(run_dir).name, what="another lt export of this run is in progress",
                        fix="nothing sent (run lt export again when it has ended)", error=ExportBusy):
        yield


class SentFile:
    """How far an append-only file was sent: a byte offset on a line boundary and the digest of the bytes
    before it, advanced as batches are confirmed."""

    def __init__(self, path: Path, entry: dict[str, Any] | None) -> None:
        self.path = path
        self.bytes = 0
        self.records = 0
        self._hash = hashlib.sha256()
        self.rewritten = False  # the part already sent is no longer what the file holds
        if not entry:
            return
        sent = int(entry.get("bytes", 0))
        size = path.stat().st_size if path.exists() else 0
        if size < sent:
            self.rewritten = True
            return
        self._feed(0, sent)
        if self._hash.hexdigest() != entry.get("sha256"):
            self.rewritten, self._hash = True, hashlib.sha256()
            return
        self.bytes, self.records = sent, int(entry.get("records", 0))

    def _feed(self, start: int, end: int) -> None:
        with open(self.path, "rb") as handle:
            handle.seek(start)
            left = end - start
            while left > 0:
                chunk = handle.read(min(_CHUNK, left))
                if not chunk:
                    raise RunFolderError(f"{self.path}: shrank while it was read; export again")
                self._hash.update(chunk)
                left -= len(chunk)

    def advance(self, offset: int, records: int) -> None:
        """Mark the file sent up to ``offset`` (``records`` more records)."""
        if offset > self.bytes:
            self._feed(self.bytes, offset)
            self.bytes = offset
        self.records += records

    def entry(self) -> dict[str, Any]:
        return {"bytes": self.bytes, "records": self.records, "sha256": self._hash.hexdigest()}


def not_sent(run_dir: str | Path, entry: dict[str, Any] | None, why: str) -> dict[str, Any]:
    """What of the run's JSONL files the target of ``entry`` (None: never reached) lacks, for ``not_sent``."""
    layout = RunLayout(run_dir)
    found: dict[str, Any] = {"why": why, "at": iso_time()}
    sent = (entry or {}).get("sent", {})
    for path in (layout.metrics_jsonl, layout.system_jsonl):
        if not path.exists():
            continue
        done = SentFile(path, sent.get(path.name))
        start = 0 if done.rewritten else done.bytes
        records, end, offset = 0, start, start
        with open(path, "rb") as handle:
            handle.seek(start)
            while chunk := handle.read(_CHUNK):
                if (last := chunk.rfind(b"\n")) >= 0:  # a line still being written is not there yet
                    records, end = records + chunk.count(b"\n"), offset + last + 1
                offset += len(chunk)
        if records:
            found[path.name] = {"bytes": end - start, "records": records}
    return found
