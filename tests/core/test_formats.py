"""The small format writers under the sinks: strict JSON lines, TFRecord event files, mapping files.

Each is checked against the reference reader or encoder a user's tools would use: the stdlib
``json`` module, tensorboard's own record reader and ``EventAccumulator``.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path

import pytest
from support.processes import script_env
from support.readers import tensorboard_scalars
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as tensorboard_masked_crc32c

from lightning_track.derived.digest import write_metrics_csv
from lightning_track.errors import JsonlProblem
from lightning_track.folder.fileio import iter_jsonl, json_line
from lightning_track.folder.layout import RunLayout
from lightning_track.folder.records import MetricRecord, read_metrics
from lightning_track.folder.tracking import CheckpointMappings
from lightning_track.sinks.tensorboard import EventFileWriter, masked_crc32c


# -- JSON lines ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"step": 3, "loss": 0.25, "lr": 1e-05}, {"step": 3, "loss": 0.25, "lr": 1e-05}),
        ({"loss": math.nan, "up": math.inf, "down": -math.inf}, {"loss": "NaN", "up": "Infinity", "down": "-Infinity"}),
        ({"none": None, "ok": True, "text": "é ✓"}, {"none": None, "ok": True, "text": "é ✓"}),
        ({1: "int key", None: "none key"}, {"1": "int key", "None": "none key"}),
        ({"path": Path("a/b"), "set": {2}, "big": 2**70}, {"path": "a/b", "set": [2], "big": 2**70}),
        ({"when": datetime(2025, 7, 20, 14, 31, 2)}, {"when": "2025-07-20 14:31:02"}),
    ],
)
def test_json_line_is_strict_json_with_nonfinite_as_strings(obj: dict, expected: dict) -> None:
    line = json_line(obj)
    assert line.endswith("\n") and "\n" not in line[:-1]
    assert json.loads(line, parse_constant=lambda c: pytest.fail(f"non-strict token {c}")) == expected


def test_iter_jsonl_reads_legacy_nan_and_explains_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"step": 1, "loss": NaN}\n'  # what Python's json.dumps writes for NaN
                     b'{"step": 2, "loss": 0.5}\n'
                     b'{"step": 3, \xff}\n'
                     b'[1, 2]\n'
                     b'{"step": 4, "loss": 0.4} trailing\n'
                     b'{"step": 5, "lo')
    problems: list[JsonlProblem] = []
    rows = list(iter_jsonl(path, problems))
    assert [n for n, _ in rows] == [1, 2]
    assert math.isnan(rows[0][1]["loss"]) and rows[1][1] == {"step": 2, "loss": 0.5}
    assert [(p.lineno, p.reason.split(" (")[0].split(" at ")[0]) for p in problems] == [
        (3, "not UTF-8"), (4, "expected a JSON object, got list"), (5, "invalid JSON"),
        (6, "partial last line")]


def test_metrics_csv_spells_nonfinite_values(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json_line({"step": s, "time": 1.0, "metrics": m}) for s, m in [
        (1, {"loss": 0.5, "epoch": 0}), (2, {"loss": math.nan}), (3, {"loss": math.inf, "acc": -math.inf})]))
    records = read_metrics(path)
    assert [type(v) for r in records for v in r.metrics.values()] == [float] * 5
    write_metrics_csv(records, tmp_path / "m.csv")
    assert (tmp_path / "m.csv").read_text().splitlines() == [
        "step,acc,epoch,loss", "1,,0.0,0.5", "2,,,nan", "3,-inf,,inf"]


# -- TensorBoard event files ------------------------------------------------------------------------------
@pytest.mark.parametrize("data", [b"", b"\x00", b"brain.Event:2", bytes(range(256)) * 3])
def test_masked_crc32c_matches_tensorboard(data: bytes) -> None:
    assert masked_crc32c(data) == tensorboard_masked_crc32c(data)


def test_event_file_reads_back_with_tensorboard_even_with_a_torn_tail(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader

    writer = EventFileWriter(tmp_path)
    second = EventFileWriter(tmp_path)  # same process, same second: its own file
    assert writer.path != second.path and writer.path.name.startswith("events.out.tfevents.")
    for step in range(5):
        writer.add_event(Event(wall_time=1000.0 + step, step=step, summary=Summary(value=[
            Summary.Value(tag="train/loss", simple_value=1.0 / (step + 1))])))
    writer.close()
    second.close()
    second.path.unlink()
    records = list(RawEventFileLoader(str(writer.path)).Load())  # verifies both CRCs of every record
    assert len(records) == 6 and Event.FromString(records[0]).file_version == "brain.Event:2"
    scalars = tensorboard_scalars(tmp_path)
    assert [(s, round(v, 6), w) for s, v, w in scalars["train/loss"]] == [
        (s, round(1.0 / (s + 1), 6), 1000.0 + s) for s in range(5)]
    with open(writer.path, "ab") as handle:  # a crash in the middle of a record
        handle.write(records[-1][:7])
    assert len(tensorboard_scalars(tmp_path)["train/loss"]) == 5


# -- checkpoint mappings ---------------------------------------------------------------------------------
def _mappings(tmp_path: Path, covers: dict[int, list[int]]) -> CheckpointMappings:
    layout = RunLayout(tmp_path)
    mappings = CheckpointMappings(layout)
    for step, lines in covers.items():
        mappings.add_checkpoint(step, lines=lines)
    mappings.write()
    return mappings


@pytest.mark.parametrize("covers", [
    {76: [12, 9, 873], 77: [12, 9, 873, 4410], 80: [1, 9, 12, 873, 4410]},  # cumulative (the usual case)
    {76: [12, 9], 77: [873], 80: [9, 873, 1]},  # not nested: each line lists only the checkpoints covering it
    {5: [], 6: [3], 7: [3]},
])
def test_line_mapping_is_the_inverse_of_the_checkpoint_mapping(tmp_path: Path, covers: dict[int, list[int]]) -> None:
    mappings = _mappings(tmp_path, covers)
    layout = mappings.layout
    checkpoints = json.loads(layout.checkpoint_mapping_json.read_text())
    assert {e["step"]: e["lines"] for e in checkpoints.values()} == {s: sorted(v) for s, v in covers.items()}
    assert checkpoints["checkpoint-step-076" if 76 in covers else "checkpoint-step-005"]["path"].startswith(
        "checkpoints/checkpoint-step-0")
    text = layout.line_checkpoint_mapping_json.read_text()
    expected: dict[str, list[str]] = {}
    for step, lines in covers.items():
        for line in sorted(lines):
            expected.setdefault(str(line), []).append(f"checkpoint-step-{step:03d}")
    assert json.loads(text) == expected
    assert text == json.dumps(mappings.line_to_checkpoints, separators=(",", ":")) + "\n"


def test_mappings_resume_and_forget_removed_checkpoints(tmp_path: Path) -> None:
    _mappings(tmp_path, {10: [1, 2], 20: [1, 2, 3]})
    again = CheckpointMappings(RunLayout(tmp_path))
    again.load()
    assert again.seen_lines == {1, 2, 3}
    again.remove_checkpoint("checkpoint-step-010")
    again.add_lines([4])
    again.add_checkpoint(30)
    again.write()
    assert json.loads(again.layout.line_checkpoint_mapping_json.read_text()) == {
        "1": ["checkpoint-step-020", "checkpoint-step-030"], "2": ["checkpoint-step-020", "checkpoint-step-030"],
        "3": ["checkpoint-step-020", "checkpoint-step-030"], "4": ["checkpoint-step-030"]}


def test_metric_record_type_is_what_read_metrics_returns(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text(json_line({"step": 7, "time": 2.5, "metrics": {"loss": 1}}))
    assert read_metrics(path) == [MetricRecord(7, 2.5, {"loss": 1.0})]


def test_staged_writes_skip_fsync_only_inside_the_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """lt-migrate builds a run in a staging folder renamed whole: no per-file fsync there; elsewhere
    (a live run's mappings, summary) every atomic write is fsynced before it replaces the file."""
    import os

    from lightning_track.folder import fileio

    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    fileio.atomic_write_text(tmp_path / "a.txt", "a")
    assert len(synced) == 1 and fileio.durable_writes()
    with fileio.staged_writes():
        assert not fileio.durable_writes()
        fileio.atomic_write_json(tmp_path / "b.json", {"b": 1})
        fileio.atomic_write_text(tmp_path / "c.txt", "c")
    assert len(synced) == 1 and fileio.durable_writes()
    assert json.loads((tmp_path / "b.json").read_text()) == {"b": 1} and (tmp_path / "c.txt").read_text() == "c"
    fileio.atomic_write_text(tmp_path / "d.txt", "d")
    assert len(synced) == 2


# -- the one-holder lock ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_second_holder_of_an_exclusive_lock_is_refused_in_one_line(tmp_path: Path, kind: str) -> None:
    """Another process holds the lock: refused at once, naming the place, the holder and the fix; free
    again once that process is gone. A folder is locked in place (no lock file left in a run folder)."""
    import subprocess
    import sys

    from lightning_track.errors import ConfigError, ExportBusy
    from lightning_track.folder.fileio import exclusive_lock

    target = tmp_path / ("store.lock" if kind == "file" else "run")
    if kind == "folder":
        target.mkdir()
    code = ("import sys\nfrom lightning_track.folder.fileio import exclusive_lock\n"
            f"with exclusive_lock({str(target)!r}, what='w', fix='f'):\n"
            "    print('held', flush=True); sys.stdin.read()\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env=script_env())
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(ConfigError, match=r"^store: another lt board is feeding this store; stop it$"):
            exclusive_lock(target, name="store", what="another lt board is feeding this store", fix="stop it")
        with pytest.raises(ExportBusy, match=rf"^{target}: busy; wait$"):
            exclusive_lock(target, what="busy", fix="wait", error=ExportBusy)
    finally:
        holder.communicate("", timeout=30)
    with exclusive_lock(target, what="busy", fix="wait") as held:
        assert held.held
    assert not held.held
    assert target.is_dir() if kind == "folder" else target.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]
