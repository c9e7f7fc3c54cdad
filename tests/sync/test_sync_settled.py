"""Settled runs: a nothing-changed pass skips the runs that ended and did not change, and misses nothing else.

The rule (sync/settled.py): a run whose summary.json says it ended, quiet for SETTLE_S and found mirrored
whole is listed again only when one of its folders' mtime changes on either side; ``full`` lists all.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from support.sync import append_steps, make_run, tree
from support.sync import backdate as support_backdate

from lightning_track.cli.sync import main as lt_sync
from lightning_track.folder.fileio import atomic_write_json
from lightning_track.sync import SyncOptions, sync_once
from lightning_track.sync.settled import SETTLE_S
from lightning_track.sync.transport.ssh import SSHTransport

DONE, FAILED, LIVE = "arc_lora_20250101_120000", "arc_full_20250101_130000", "arc_live_20250101_140000"


def backdate(root: Path, seconds: float = 2 * SETTLE_S, *, files: bool = True) -> None:
    """Every folder (and file) under ``root`` last changed ``seconds`` ago (runs that ended a while back)."""
    support_backdate(root, seconds, files=files)


def three_runs(src: Path) -> None:
    make_run(src, DONE, status="completed", events_bytes=5000)
    make_run(src, FAILED, status="failed")
    make_run(src, LIVE, status="running")
    backdate(src)


def test_settled_runs_are_skipped_and_every_change_still_arrives(tmp_path: Path) -> None:
    src, dest, state = tmp_path / "src", tmp_path / "dest", tmp_path / "state.jsonl"
    three_runs(src)
    opts = SyncOptions(state_path=state)
    first = sync_once(src, dest, opts)
    assert first.copied == len(tree(src)) and first.runs_skipped == 0
    time.sleep(1.1)  # the mirror's folders a second older than the pass that checks them
    checked = sync_once(src, dest, opts)  # finds the ended runs mirrored whole: records them
    assert (checked.files, checked.runs_skipped) == (0, 0)
    journal = [json.loads(line) for line in state.read_text().splitlines()]
    assert sorted(r["path"] for r in journal if r["op"] == "run") == [FAILED, DONE]
    assert not [r for r in journal if r["op"] == "done" and r["path"].split("/")[0] in (DONE, FAILED)]

    quiet = sync_once(src, dest, opts)
    assert (quiet.files, quiet.runs_skipped, quiet.plan.unchanged) == (0, 2, len(tree(src)))

    grown = append_steps(src / LIVE, 10, 2)  # the live run is listed every pass
    atomic_write_json(src / DONE / "summary.json", {"status": "running", "dataset": "arc", "method": "lora"})
    append_steps(src / DONE, 10, 1)  # a resume: summary.json replaced (its folder changed), then appends
    (dest / FAILED / "config.yaml").unlink()  # someone deletes a file on the mirror
    make_run(src, "arc_new_20250102_090000", status="completed")
    moved = sync_once(src, dest, opts)
    assert moved.runs_skipped == 0 and moved.appended == 2 and moved.replaced == 1 and moved.copied == 5
    assert (dest / LIVE / "metrics.jsonl").read_bytes().endswith(grown)
    assert tree(dest) == tree(src)


def test_an_in_place_append_to_a_settled_run_waits_for_full(tmp_path: Path) -> None:
    """The rule's one blind spot, stated: appending to an ended run's file changes no folder's mtime."""
    src, dest, state = tmp_path / "src", tmp_path / "dest", tmp_path / "state.jsonl"
    three_runs(src)
    opts = SyncOptions(state_path=state)
    sync_once(src, dest, opts)
    time.sleep(1.1)
    sync_once(src, dest, opts)
    with open(src / DONE / "metrics.jsonl", "ab") as out:
        out.write(b'{"step": 99, "time": 1.0, "metrics": {"note": 1}}\n')
    assert sync_once(src, dest, opts).runs_skipped == 2
    assert tree(dest) != tree(src)
    assert lt_sync([str(src), str(dest), "--state", str(state), "--full", "-q"]) == 0
    assert tree(dest) == tree(src)


@pytest.mark.slow
@pytest.mark.parametrize("find", ["find", "no-such-find", "big-root"], ids=["remote-find", "sftp-only", "big-root"])
def test_settled_runs_over_ssh_push_and_pull(ssh_home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             find: str) -> None:
    """Over SSH a small root is looked at over SFTP, a big one (past SFTP_ROOT entries, SFTP_TOPS runs) with one
    remote ``find`` (or, where the remote has none, SFTP whole): the same results every way."""
    if find == "big-root":
        monkeypatch.setattr(SSHTransport, "SFTP_ROOT", 1)
        monkeypatch.setattr(SSHTransport, "SFTP_TOPS", 0)
    monkeypatch.setattr(SSHTransport, "FIND", "find" if find == "big-root" else find)
    src, remote, pulled = tmp_path / "src", tmp_path / "remote", tmp_path / "pulled"
    three_runs(src)
    remote_ep = f"ssh://{ssh_home.user}@127.0.0.1:{ssh_home.port}{remote}"
    for a, b, name in ((src, remote_ep, "push"), (remote_ep, pulled, "pull")):
        if name == "pull":  # the pushed copy's folders are new: make it a server whose runs ended a while ago
            backdate(remote, files=False)
        opts = SyncOptions(state_path=tmp_path / f"{name}.jsonl")
        assert sync_once(a, b, opts).copied == len(tree(src))
        time.sleep(1.1)
        assert sync_once(a, b, opts).runs_skipped == 0
        assert sync_once(a, b, opts).runs_skipped == 2
    atomic_write_json(src / FAILED / "summary.json", {"status": "completed", "dataset": "arc", "method": "full"})
    sync_once(src, remote_ep, SyncOptions(state_path=tmp_path / "push.jsonl"))
    again = sync_once(remote_ep, pulled, SyncOptions(state_path=tmp_path / "pull.jsonl"))
    assert (again.runs_skipped, again.replaced) == (1, 1)
    assert tree(pulled) == tree(remote) == tree(src)
