"""The sync journal (sync/state.py): its settled runs kept as a table of arrays, and passes from any journal.

A pass started from whatever journal it finds (one a killed pass left, one an older lt-sync wrote, one naming
runs changed or deleted since) must leave the mirror equal to the source: a journal can make a pass slower
(a run listed that could have been skipped), never wrong.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from support.sync import append_steps, backdate, make_run, tree

from lightning_track.folder.fileio import atomic_write_json, json_line
from lightning_track.sync import SyncOptions, sync_once
from lightning_track.sync.engine import CHUNK
from lightning_track.sync.manifest import part_path
from lightning_track.sync.runtable import SettledRuns
from lightning_track.sync.settled import SETTLE_S
from lightning_track.sync.state import SyncState
from lightning_track.sync.transport.local import LocalTransport
from lightning_track.sync.transport.ssh import SSHTransport

DONE, FAILED, LIVE = "arc_lora_20250101_120000", "arc_full_20250101_130000", "arc_live_20250101_140000"


def journal(state: Path) -> list[dict]:
    return [json.loads(line) for line in state.read_text().splitlines()]


def settled_mirror(tmp_path: Path, runs: int = 3) -> tuple[Path, Path, SyncOptions]:
    """Ended runs (and a live one) mirrored, checked and recorded settled: the next pass skips the ended ones."""
    src, dest = tmp_path / "src", tmp_path / "dest"
    make_run(src, DONE, status="completed", events_bytes=5000)
    make_run(src, FAILED, status="failed")
    make_run(src, LIVE, status="running")
    for i in range(runs - 3):
        make_run(src, f"arc_more_20250102_{i:06d}", status="completed")
    backdate(src, 2 * SETTLE_S)
    opts = SyncOptions(state_path=tmp_path / "state.jsonl")
    sync_once(src, dest, opts)
    time.sleep(1.1)  # the mirror's folders a second older than the pass that checks them
    sync_once(src, dest, opts)
    assert sync_once(src, dest, opts).runs_skipped == runs - 1
    return src, dest, opts


def test_the_table_holds_what_the_run_lines_said() -> None:
    table = SettledRuns()
    names = [f"run{i:04d}" for i in range(500)] + ["über-run", "bad\udcffname"]
    for i, name in enumerate(names):
        src = {name: 1_700_000_000 + i, f"{name}/tensorboard_logs": 1_700_000_001 + i}
        assert table.put(name, src, {name: 1_700_000_500 + i}, i, "" if i % 3 else "checkpoints")
    assert table.drop("run0007") and not table.drop("run0007") and "run0007" not in table
    assert table.put("run0008", {"run0008": 5}, {"run0008": 6, "run0008/media": 7}, 3, "")  # again, new folders
    assert len(table) == len(names) - 1 and table.rows == len(names)
    assert table.record(table.find("run0008")) == {"src": {"run0008": 5}, "dst": {"run0008": 6, "run0008/media": 7},
                                                   "files": 3, "cover": ""}
    for i, name in enumerate(names):
        if name != "run0007" and name != "run0008":
            row = table.find(name)
            assert table.name(row) == name and table.record(row) == {
                "src": {name: 1_700_000_000 + i, f"{name}/tensorboard_logs": 1_700_000_001 + i},
                "dst": {name: 1_700_000_500 + i}, "files": i, "cover": "" if i % 3 else "checkpoints"}
    assert table.find("run") == -1 and "run0500" not in table
    assert len(table.shapes) == 3  # the few distinct folder sets, not one a run
    for name in ('q"uote\\run', "tab\trun", "über-run", "run0008", "run0009"):  # its journal line
        row = table.find(name) if name in table else -1
        if row < 0:
            assert table.put(name, {name: 1, f"{name}/a\"b": 2, f"{name}/ü": 3}, {name: 4}, 7, "checkpoints")
            row = table.find(name)
        assert table.line(row).decode() == json_line(
            {"op": "run", "path": name, **table.record(row)})
    # what is no settled run's record is not recorded (the run is listed: slower, never wrong)
    assert not table.put("x", {"y": 1}, {"x": 1}, 1, "")
    assert not table.put("x", {"x": "1"}, {"x": 1}, 1, "")
    assert not table.put("x", {"x": 1}, {"x": 1}, 1, None)
    assert not table.put("x/y", {"x/y": 1}, {"x/y": 1}, 1, "")
    assert "x" not in table


def test_a_journal_of_the_previous_version_is_read_and_written_back_in_its_format(tmp_path: Path) -> None:
    """The lines are the same as before: an uncompacted journal with history, loaded and compacted, says the same
    (each file's last done line, read from the journal itself; none of a settled run's files)."""
    state = tmp_path / "state.jsonl"
    run_a = {"op": "run", "path": "a_x_1", "src": {"a_x_1": 10, "a_x_1/tensorboard_logs": 11},
             "dst": {"a_x_1": 20, "a_x_1/tensorboard_logs": 21}, "files": 4, "cover": ""}
    lines = [
        {"op": "done", "path": "a_x_1/summary.json", "size": 10, "mtime": 10, "tail": "00" * 16},
        {"op": "partial", "path": "b_x_1/big.log", "size": 100, "mtime": 5},
        {"op": "done", "path": "b_x_1/metrics.jsonl", "size": 7, "mtime": 3, "tail": "ab" * 16},
        {"op": "done", "path": "b_x_1/odd.txt", "size": 1, "mtime": 1, "tail": "ef" * 16},  # the file again:
        {"op": "done", "path": "b_x_1/odd.txt", "size": 7, "mtime": 3.5, "tail": "not hex"},  # its last line kept
        {"op": "partial", "path": "b_x_1/done.log", "size": 9, "mtime": 5},
        {"op": "done", "path": "b_x_1/done.log", "size": 9, "mtime": 5, "tail": "cd" * 16},
        run_a,
        {"op": "run", "path": "c_x_1", "src": {"c_x_1": 1}, "dst": {"c_x_1": 2}, "files": 1, "cover": "checkpoints"},
        {"op": "unrun", "path": "c_x_1"},
        {"op": "run", "path": "d_x_1", "src": {"d_x_1": 1}, "dst": {"d_x_1": 2}, "files": 2, "cover": ""},
        {"op": "forget", "path": "b_x_1/metrics.jsonl"},
    ]
    state.write_text("".join(json.dumps(line) + "\n" for line in lines))
    loaded = SyncState(state)
    assert "a_x_1" in loaded.runs and "d_x_1" in loaded.runs and "c_x_1" not in loaded.runs
    assert loaded.partial == {"b_x_1/big.log": (100, 5)}
    loaded._dirty = True
    loaded.compact()
    again = journal(state)
    assert [r for r in again if r["op"] == "run"] == [run_a, lines[10]]
    assert sorted((r["path"], r["size"], r["mtime"], r["tail"]) for r in again if r["op"] == "done") == [
        ("b_x_1/done.log", 9, 5, "cd" * 16), ("b_x_1/odd.txt", 7, 3.5, "not hex")]  # a settled run's: dropped
    assert [r for r in again if r["op"] == "partial"] == [lines[1]]
    assert len(again) == 5
    assert SyncState(state).runs.record(SyncState(state).runs.find("a_x_1")) == {
        k: run_a[k] for k in ("src", "dst", "files", "cover")}


def test_not_a_journal_is_refused(tmp_path: Path) -> None:
    from lightning_track.errors import SyncError

    other = tmp_path / "notes.jsonl"
    other.write_text('{"op": "run", "path": "a", "src": {}, "dst": {}}\n{"step": 1}\n')
    with pytest.raises(SyncError, match="not an lt-sync state file"):
        SyncState(other)
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n\n")
    with pytest.raises(SyncError, match="not an lt-sync state file"):
        SyncState(blank)


def test_an_old_journal_whose_records_no_longer_hold_makes_a_pass_list_those_runs(tmp_path: Path) -> None:
    """Records of folders that changed since, of a shape this version does not take, of runs gone: listed."""
    src, dest, opts = settled_mirror(tmp_path)
    state = Path(opts.state_path)
    records = journal(state)
    for record in records:
        if record["path"] == DONE:  # an older version's record this one does not take: no own folder
            record["src"] = {k: v for k, v in record["src"].items() if k != DONE}
        elif record["path"] == FAILED:  # a folder's mtime recorded wrong
            record["dst"] = {k: v - 7 for k, v in record["dst"].items()}
    records.append({"op": "run", "path": "gone_x_20250101_000000", "src": {"gone_x_20250101_000000": 1},
                    "dst": {"gone_x_20250101_000000": 1}, "files": 9, "cover": ""})
    state.write_text("".join(json.dumps(r) + "\n" for r in records))
    with open(src / DONE / "metrics.jsonl", "ab") as out:  # in place: only a listing of DONE finds it
        out.write(b'{"step": 99, "time": 1.0, "metrics": {"note": 1}}\n')
    passed = sync_once(src, dest, opts)
    assert passed.runs_skipped == 0 and passed.appended == 1
    assert tree(dest) == tree(src)


def test_a_pass_killed_mid_way_resumes_and_its_journal_is_read(tmp_path: Path, monkeypatch) -> None:
    src, dest, opts = settled_mirror(tmp_path, runs=6)
    state = Path(opts.state_path)
    atomic_write_json(src / DONE / "summary.json", {"status": "running", "dataset": "arc", "method": "lora"})
    append_steps(src / DONE, 10, 3)  # a resume of a settled run
    (src / FAILED / "tensorboard_logs" / "events.out.tfevents.2.gpu1").write_bytes(os.urandom(3000))  # deeper
    append_steps(src / LIVE, 10, 2)
    calls = []
    write_final = LocalTransport.write_final

    async def killed(self, *args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process stops here: no compaction, the journal as appended so far
        return await write_final(self, *args, **kwargs)

    monkeypatch.setattr(LocalTransport, "write_final", killed)
    with pytest.raises(KeyboardInterrupt):
        sync_once(src, dest, opts)
    monkeypatch.undo()
    assert any(r["op"] == "unrun" for r in journal(state))  # the history a killed pass leaves
    assert tree(dest) != tree(src)
    resumed = sync_once(src, dest, opts)
    assert not resumed.errors and tree(dest) == tree(src)
    assert resumed.runs_skipped == 3  # the three runs nothing happened to
    assert sync_once(src, dest, opts).files == 0


def test_a_partial_copy_is_continued_only_from_the_same_source_version(tmp_path: Path, monkeypatch) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    make_run(src, LIVE, steps=2)
    rel = f"{LIVE}/tensorboard_logs/events.out.tfevents.1.gpu1"
    data = os.urandom(2 * CHUNK + 1000)
    (src / rel).write_bytes(data)
    opts = SyncOptions(state_path=tmp_path / "state.jsonl")
    write_at = LocalTransport.write_at

    async def killed(self, rel_: str, offset: int, chunk: bytes, **kwargs):
        if offset >= CHUNK:
            raise KeyboardInterrupt  # killed after the first MiB of the big file was written
        return await write_at(self, rel_, offset, chunk, **kwargs)

    monkeypatch.setattr(LocalTransport, "write_at", killed)
    with pytest.raises(KeyboardInterrupt):
        sync_once(src, dest, opts)
    monkeypatch.undo()
    assert (dest / part_path(rel)).stat().st_size == CHUNK
    resumed = sync_once(src, dest, opts)
    assert (dest / rel).read_bytes() == data and not (dest / part_path(rel)).exists()
    assert resumed.bytes_sent < len(data)  # continued, not copied again

    (src / rel).write_bytes(data[:CHUNK] + os.urandom(CHUNK + 5000))  # a new version, same first MiB
    monkeypatch.setattr(LocalTransport, "write_at", killed)
    with pytest.raises(KeyboardInterrupt):
        sync_once(src, dest, opts)
    monkeypatch.undo()
    os.utime(src / rel, (time.time() + 5, time.time() + 5))  # and again another version after the kill
    (src / rel).write_bytes((src / rel).read_bytes()[:-10] + b"0123456789")
    again = sync_once(src, dest, opts)
    assert (dest / rel).read_bytes() == (src / rel).read_bytes() and tree(dest) == tree(src)
    assert again.bytes_sent >= (src / rel).stat().st_size  # the part file was not taken for this version


def test_a_settled_run_changed_in_a_deeper_folder_or_deleted_on_either_side(tmp_path: Path) -> None:
    src, dest, opts = settled_mirror(tmp_path, runs=5)
    (src / DONE / "tensorboard_logs" / "events.out.tfevents.2.gpu1").write_bytes(b"x" * 100)  # the run's folder kept
    (dest / FAILED / "tensorboard_logs").rmdir()  # someone tidies the mirror
    shutil.rmtree(dest / "arc_more_20250102_000000")  # or removes a run from it
    shutil.rmtree(src / "arc_more_20250102_000001")  # a run deleted on the server
    passed = sync_once(src, dest, opts)
    assert passed.runs_skipped == 0 and passed.copied == 1 + len(tree(src / "arc_more_20250102_000000"))
    assert tree(dest / "arc_more_20250102_000001")  # not deleted without --delete
    assert {k: v for k, v in tree(dest).items() if "000001" not in k} == tree(src)
    left = len(tree(dest / "arc_more_20250102_000001"))
    deleted = sync_once(src, dest, SyncOptions(state_path=opts.state_path, delete=True))
    assert deleted.deleted == left > 0
    assert tree(dest) == tree(src)
    assert "arc_more_20250102_000001" not in SyncState(opts.state_path).runs


@pytest.mark.slow
def test_a_big_root_over_ssh_streams_its_look(ssh_home, tmp_path: Path, monkeypatch) -> None:
    """Past SFTP_ROOT the look is one remote find whose known folders are fed in pieces and whose output is read
    as it comes: the same runs skipped, a change in a deeper folder found, both ways."""
    monkeypatch.setattr(SSHTransport, "SFTP_ROOT", 1)
    monkeypatch.setattr(SSHTransport, "SFTP_STATS", 0)
    monkeypatch.setattr(SSHTransport, "FEED_BYTES", 64)
    answered = []
    find_each = SSHTransport._find_each

    async def counted(self, looker, known):
        answered.append(await find_each(self, looker, known))
        return answered[-1]

    monkeypatch.setattr(SSHTransport, "_find_each", counted)
    src, remote, pulled = tmp_path / "src", tmp_path / "remote", tmp_path / "pulled"
    for i in range(12):
        make_run(src, f"arc_m{i}_20250101_120000", status="completed")
    backdate(src, 2 * SETTLE_S)
    remote_ep = f"ssh://{ssh_home.user}@127.0.0.1:{ssh_home.port}{remote}"
    for a, b, name, changed in ((src, remote_ep, "push", src), (remote_ep, pulled, "pull", remote)):
        if name == "pull":  # a server whose runs ended a while ago (the pushed file too)
            backdate(remote, 2 * SETTLE_S)
        opts = SyncOptions(state_path=tmp_path / f"{name}.jsonl")
        sync_once(a, b, opts)
        time.sleep(1.1)
        sync_once(a, b, opts)
        assert sync_once(a, b, opts).runs_skipped == 12
        (changed / "arc_m3_20250101_120000" / "tensorboard_logs" / f"{name}.txt").write_text("new\n")
        passed = sync_once(a, b, opts)
        assert (passed.runs_skipped, passed.copied) == (11, 1)
    assert answered and all(answered)  # every look at the remote side was find's, streamed
    assert tree(pulled) == tree(remote) and set(tree(remote)) - set(tree(src)) == {
        "arc_m3_20250101_120000/tensorboard_logs/pull.txt"}
