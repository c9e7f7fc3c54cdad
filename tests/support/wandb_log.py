"""Read an offline W&B run back: the records of its ``.wandb`` transaction log, parsed by W&B's own
``wandb_internal_pb2.Record``, folded into what ``wandb sync`` would upload.

The framing is W&B's data store format (the LevelDB log format: 32 KiB blocks, each record in chunks
with a 7-byte header of CRC-32, length and type, after a file header ``:W&B``, 0xBEE1, version 0).
The installed SDK (0.31) keeps its reader in Go only, so the framing is read here and every CRC checked;
the records themselves are W&B's own protobuf messages."""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_BLOCK, _HEADER = 32768, 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def records(path: Path) -> list[Any]:
    """Every record of a ``.wandb`` file, in order (a bad CRC or header raises)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:_HEADER])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), (ident, magic, version)
    found, pos, parts = [], _HEADER, b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # block trailer
            pos += left
            continue
        crc, size, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        if (crc, size, kind) == (0, 0, 0):
            pos += left
            continue
        chunk = data[pos + _HEADER:pos + _HEADER + size]
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == crc, f"{path}: bad CRC at byte {pos}"
        pos += _HEADER + size
        parts = chunk if kind in (_FULL, _FIRST) else parts + chunk
        if kind in (_FULL, _LAST):
            record = pb.Record()
            record.ParseFromString(parts)
            found.append(record)
    return found


def _value(item: Any) -> Any:
    return json.loads(item.value_json)


def _key(item: Any) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


@dataclass
class OfflineRun:
    """What the segments of one W&B run id hold, applied in order as W&B applies them."""

    run_id: str = ""
    name: str = ""
    project: str = ""
    group: str = ""
    job_type: str = ""
    host: str = ""
    git_commit: str = ""
    tags: list[str] = field(default_factory=list)
    notes: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    console: list[tuple[str, str]] = field(default_factory=list)  # (stream, text)
    exit_codes: list[int] = field(default_factory=list)
    segments: int = 0


def read_run(segment_dirs: list[Path]) -> OfflineRun:  # noqa: C901 - one branch per record kind
    """Fold the ``.wandb`` files of ``segment_dirs`` (in the order given) into one :class:`OfflineRun`."""
    from wandb.proto import wandb_internal_pb2 as pb

    out = OfflineRun()
    for folder in segment_dirs:
        (log,) = Path(folder).glob("run-*.wandb")
        out.segments += 1
        for record in records(log):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run = record.run
                out.run_id, out.name, out.project = run.run_id, run.display_name, run.project
                out.group, out.job_type, out.host = run.run_group, run.job_type, run.host
                out.git_commit = run.git.commit
                out.tags, out.notes = list(run.tags), run.notes
                for item in run.config.update:
                    if item.key != "_wandb":
                        out.config[item.key] = _value(item)
            elif kind == "config":
                for item in record.config.update:
                    if item.key != "_wandb":
                        out.config[item.key] = _value(item)
            elif kind == "history":
                out.history.append({_key(item): _value(item) for item in record.history.item})
            elif kind == "summary":
                for item in record.summary.update:
                    out.summary[_key(item)] = _value(item)
            elif kind == "output_raw":
                stream = pb.OutputRawRecord.OutputType.Name(record.output_raw.output_type).lower()
                out.console.append((stream, record.output_raw.line))
            elif kind == "exit":
                out.exit_codes.append(record.exit.exit_code)
    return out
