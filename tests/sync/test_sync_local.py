"""A sync cycle between two local folders: the engine's decisions without sshd (fast, not slow).

The engine only talks to the Transport interface, so LocalTransport -> LocalTransport runs every rule
a remote sync runs (copy, append, replace, delete, verify, resume, temp files, symlinks, Runicorn view).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
from support.sync import append_steps, make_run, tree

from lightning_track.cli.sync import main as lt_sync
from lightning_track.folder.fileio import atomic_write_json, temp_path
from lightning_track.sync import SyncError, SyncOptions, sync_once
from lightning_track.sync.manifest import part_path
from lightning_track.sync.state import SyncState
from lightning_track.sync.transport import LocalTransport

RUN = "arc_lora_20250101_120000"


def opts(tmp_path: Path, **kw) -> SyncOptions:
    return SyncOptions(state_path=tmp_path / "state.jsonl", **kw)


def mtimes(root: Path) -> dict[str, int]:
    return {rel: int((root / rel).stat().st_mtime) for rel in tree(root)}


def test_copy_then_nothing_then_an_appended_line(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    run = make_run(src, RUN, steps=10, events_bytes=5000)
    (temp_path(run / "summary.json", 4711)).write_text("{half")  # an atomic write in progress
    (run / part_path("config.yaml")).write_text("lr: 0.")  # another sync's partial copy
    wanted = {rel: data for rel, data in tree(src).items() if rel.rsplit("/", 1)[-1][0] != "."}

    first = sync_once(src, dest, opts(tmp_path))
    assert not first.errors and not first.refused and not first.skipped
    assert first.copied == len(wanted) == 5 and first.bytes_sent == sum(map(len, wanted.values()))
    assert tree(dest) == wanted  # byte-identical; no temp file, no part file, no checkpoint
    assert mtimes(dest) == {rel: m for rel, m in mtimes(src).items() if rel in wanted}
    assert not (dest / RUN / "checkpoints" / "checkpoint-step-005.ckpt").exists()

    again = sync_once(src, dest, opts(tmp_path))
    assert (again.files, again.bytes_sent, again.plan.actions) == (0, 0, [])
    assert again.plan.unchanged == len(wanted)

    added = append_steps(run, 10, 1)
    grown = sync_once(src, dest, opts(tmp_path))
    assert (grown.appended, grown.copied, grown.replaced, grown.recopied) == (1, 0, 0, 0)
    assert grown.bytes_sent == len(added)
    assert (dest / RUN / "metrics.jsonl").read_bytes() == (run / "metrics.jsonl").read_bytes()
    assert (dest / RUN / "metrics.jsonl").read_bytes().endswith(added)

    journal = [json.loads(line) for line in (tmp_path / "state.jsonl").read_text().splitlines()]
    assert {r["path"] for r in journal if r["op"] == "done"} == set(wanted)


def test_a_half_written_line_waits_for_its_newline(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    run = make_run(src, RUN, steps=3)
    sync_once(src, dest, opts(tmp_path))
    whole = (run / "metrics.jsonl").read_bytes()
    with open(run / "metrics.jsonl", "ab") as out:
        out.write(b'{"step": 3, "time": 1.0, "metr')
    sync_once(src, dest, opts(tmp_path))
    assert (dest / RUN / "metrics.jsonl").read_bytes() == whole  # never half a line on the mirror
    with open(run / "metrics.jsonl", "ab") as out:
        out.write(b'ics": {"train/loss": 0.5}}\n{"step": 4')
    sync_once(src, dest, opts(tmp_path))
    assert (dest / RUN / "metrics.jsonl").read_bytes() == whole + b'{"step": 3, "time": 1.0, "metrics": ' \
                                                                  b'{"train/loss": 0.5}}\n'


def test_replace_delete_checkpoints_and_dry_run(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    run = make_run(src, RUN)
    dry = sync_once(src, dest, opts(tmp_path, dry_run=True))
    assert dry.dry_run and dry.plan.count("copy") == 4 and not dest.exists()

    sync_once(src, dest, opts(tmp_path))
    atomic_write_json(run / "summary.json", {"status": "completed", "dataset": "arc", "method": "lora"})
    (run / "config.yaml").unlink()
    kept = sync_once(src, dest, opts(tmp_path))
    assert (kept.replaced, kept.deleted) == (1, 0) and (dest / RUN / "config.yaml").exists()
    assert json.loads((dest / RUN / "summary.json").read_text())["status"] == "completed"

    with_ckpt = sync_once(src, dest, opts(tmp_path, include_checkpoints=True))
    assert with_ckpt.copied == 1 and (dest / RUN / "checkpoints" / "checkpoint-step-005.ckpt").exists()
    gone = sync_once(src, dest, opts(tmp_path, delete=True))  # checkpoints not covered: never deleted
    assert gone.deleted == 1 and not (dest / RUN / "config.yaml").exists()
    assert (dest / RUN / "checkpoints" / "checkpoint-step-005.ckpt").exists()
    assert tree(dest) == tree(src)


def test_a_matching_partial_copy_is_continued(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    make_run(src, RUN, steps=2)
    big = src / RUN / "tensorboard_logs" / "events.out.tfevents.1.gpu1"
    data = os.urandom(300_000)
    big.write_bytes(data)
    rel = f"{RUN}/tensorboard_logs/events.out.tfevents.1.gpu1"
    state = SyncState(tmp_path / "state.jsonl")  # what a sync killed half way through this file left
    state.start_partial(rel, asyncio.run(LocalTransport(str(src)).stat(rel)))
    state.close()
    (dest / RUN / "tensorboard_logs").mkdir(parents=True)
    (dest / part_path(rel)).write_bytes(data[:100_000])

    result = sync_once(src, dest, opts(tmp_path))
    assert big.read_bytes() == (dest / rel).read_bytes() and not (dest / part_path(rel)).exists()
    others = sum(len(v) for k, v in tree(src).items() if k != rel)
    assert result.bytes_sent == others + len(data) - 100_000  # only the missing part was sent


def test_symlinks_and_exit_codes(tmp_path: Path, capsys) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "passwords.txt").write_text("hunter2\n")
    src, dest = tmp_path / "src", tmp_path / "dest"
    make_run(src, RUN)
    os.symlink(secret / "passwords.txt", src / RUN / "leak.txt")
    os.symlink(src / RUN / "config.yaml", src / RUN / "config_link.yaml")

    assert lt_sync([str(src), str(dest), "-q", "--state", str(tmp_path / "s.jsonl")]) == 3
    out = capsys.readouterr().out
    assert "leak.txt" in out and "out of the tree" in out
    assert not (dest / RUN / "leak.txt").exists()
    assert (dest / RUN / "config_link.yaml").read_text() == "lr: 0.1\n"

    make_run(src, "arc_x_20250102_120000")
    os.symlink(secret, dest / "arc_x_20250102_120000")  # the destination must not be written through
    result = sync_once(src, dest, opts(tmp_path))
    assert any("is a symlink" in line for line in result.refused)
    assert sorted(p.name for p in secret.iterdir()) == ["passwords.txt"]

    with pytest.raises(SyncError, match="source"):
        sync_once(tmp_path / "missing", dest, opts(tmp_path))
    assert lt_sync([str(tmp_path / "missing"), str(dest)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lt-sync: error: source") and len(err.strip().splitlines()) == 1


def test_runicorn_view_of_a_local_mirror(tmp_path: Path) -> None:
    src, dest, view = tmp_path / "src", tmp_path / "dest", tmp_path / "runicorn"
    run = make_run(src, RUN, steps=10)
    first = sync_once(src, dest, opts(tmp_path, runicorn_root=str(view)))
    assert first.runicorn_runs == 1
    (folder,) = (view / "runs" / "arc" / "lora").iterdir()
    assert folder.name.startswith("20250101_120000_")
    assert json.loads((folder / "status.json").read_text())["status"] == "running"
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["alias"] == RUN and "pid" not in meta

    def steps() -> list[int]:
        return [json.loads(line)["data"]["global_step"] for line in (folder / "events.jsonl").read_text().splitlines()]

    assert steps() == list(range(10))
    assert sync_once(src, dest, opts(tmp_path, runicorn_root=str(view))).runicorn_runs == 0  # nothing new

    append_steps(run, 10, 5)
    atomic_write_json(run / "summary.json", {"dataset": "arc", "method": "lora", "status": "completed",
                                             "start_time": "2025-01-01T12:00:00+00:00",
                                             "end_time": "2025-01-01T13:00:00+00:00"})
    sync_once(src, dest, opts(tmp_path, runicorn_root=str(view)))
    assert steps() == list(range(15))
    status = json.loads((folder / "status.json").read_text())
    assert status["status"] == "finished" and status["ended_at"] - status["started_at"] == 3600
    assert not [p for p in view.rglob("*lt-sync-part*")]
