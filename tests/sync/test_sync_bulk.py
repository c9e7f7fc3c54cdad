"""New runs copied whole (sync/bulk.py): one tar stream over SSH (pull and push), plain copies locally.

Real parts: the test sshd on 127.0.0.1 and its GNU tar, a remote "tar" that hangs mid-stream while the
client is killed with SIGKILL, one that adds hostile members (``..``, absolute names, links, unlisted files),
the local GNU tar that writes the stream, and ``lt ls`` reading the mirror back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.sync import make_run, tree

from lightning_track.cli.lt import main as lt
from lightning_track.cli.sync import main as lt_sync
from lightning_track.sync import SyncOptions, sync_once
from lightning_track.sync.bulk import WholeRun, _local_copy, whole_runs
from lightning_track.sync.manifest import STAGE, Manifest
from lightning_track.sync.plan import make_plan
from lightning_track.sync.transport import FILE, Entry
from lightning_track.sync.transport.ssh import SSHTransport

RUNS = ["arc_lora_20250101_120000", "arc_full_20250101_130000", "mnist_cnn_20250102_090000"]
DAY_AGO = int(time.time()) - 86400


def ended_runs(root: Path, names: list[str] = RUNS) -> None:
    """Runs that ended a day ago: every file and folder backdated (how a first copy of a server finds them)."""
    for name in names:
        make_run(root, name, steps=30, events_bytes=5000, status="completed")
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            os.utime(os.path.join(folder, name), (DAY_AGO, DAY_AGO))
        os.utime(folder, (DAY_AGO, DAY_AGO))


def listed(mirror: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    capsys.readouterr()
    assert lt(["ls", "--json", str(mirror)]) == 0
    return sorted(r["name"] for r in json.loads(capsys.readouterr().out))


def journal(state: Path) -> set[str]:
    return {r["path"] for r in map(json.loads, state.read_text().splitlines()) if r["op"] == "done"}


@pytest.mark.slow
def test_pull_and_push_copy_new_runs_whole(ssh_home, tmp_path: Path, capsys) -> None:
    src = tmp_path / "src"
    ended_runs(src)
    make_run(src, "live_run_20250103_100000", steps=5)  # written just now: file by file, whole lines only
    remote = f"ssh://{ssh_home.user}@127.0.0.1:{ssh_home.port}{src}"
    for name, source, dest, mirror in (("pull", remote, tmp_path / "pulled", tmp_path / "pulled"),
                                       ("push", str(src), f"lt-test:{tmp_path / 'pushed'}", tmp_path / "pushed")):
        state = tmp_path / f"{name}.jsonl"
        result = sync_once(source, dest, SyncOptions(state_path=state))
        assert (result.copied, result.files, result.errors, result.notes) == (len(tree(src)), len(tree(src)), [], [])
        assert result.bytes_sent == sum(len(b) for b in tree(src).values())
        assert tree(mirror) == tree(src), name
        assert sorted(os.listdir(mirror)) == sorted([*RUNS, "live_run_20250103_100000"])  # no stage left
        assert not (mirror / RUNS[0] / "checkpoints").exists()
        for run in RUNS:  # copied whole: the folders keep the source's times (file by file makes them now)
            assert (mirror / run).stat().st_mtime == DAY_AGO
            assert (mirror / run / "summary.json").stat().st_mtime == DAY_AGO
        assert (mirror / "live_run_20250103_100000").stat().st_mtime > DAY_AGO + 3600
        assert journal(state) == set(tree(src))
        assert listed(mirror, capsys) == sorted([*RUNS, "live_run_20250103_100000"])
        again = sync_once(source, dest, SyncOptions(state_path=state))
        assert (again.files, again.plan.unchanged) == (0, len(tree(src)))


@pytest.mark.slow
def test_remote_without_tar_falls_back_to_sftp(ssh_home, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(SSHTransport, "TAR", "lt-test-no-such-tar")
    src = tmp_path / "src"
    ended_runs(src)
    assert lt_sync([f"ssh://{ssh_home.user}@127.0.0.1:{ssh_home.port}{src}", str(tmp_path / "pulled")]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "no usable `tar` on the remote side" in notes[0] and "over SFTP" in notes[0]
    assert tree(tmp_path / "pulled") == tree(src)
    pushed = sync_once(src, f"lt-test:{tmp_path / 'pushed'}")
    assert len(pushed.notes) == 1 and "lt-test-no-such-tar" in pushed.notes[0]
    assert tree(tmp_path / "pushed") == tree(src) and not (tmp_path / "pushed" / STAGE).exists()


_KILLED_CLIENT = """
import sys
from lightning_track.sync import sync_once
from lightning_track.sync.transport.ssh import SSHTransport
SSHTransport.TAR = sys.argv[1]
sync_once(sys.argv[2], sys.argv[3])
"""

# The remote's "tar": the real one's stream cut 4 KB into the second run, then a stall (the client is killed then)
_STALLING_TAR = """#!{python}
import subprocess, sys, tarfile, io, time
out = subprocess.run(["tar", *sys.argv[1:]], stdin=sys.stdin.buffer, capture_output=True).stdout
members = tarfile.open(fileobj=io.BytesIO(out)).getmembers()
first = members[0].name.split("/")[0]
second = next(m for m in members if m.name.split("/")[0] != first)
cut = (second.offset // 10240 + 1) * 10240  # GNU tar writes whole 10 KiB records: it stalls at their ends
assert any(m.offset_data + m.size > cut for m in members if m.name.split("/")[0] == second.name.split("/")[0])
sys.stdout.buffer.write(out[:cut])
sys.stdout.buffer.flush()
open("{now}", "w").close()
time.sleep(30)
"""


@pytest.mark.slow
def test_killed_mid_stream_leaves_no_half_run(ssh_home, tmp_path: Path, capsys) -> None:
    src, mirror = tmp_path / "src", tmp_path / "mirror"
    ended_runs(src)
    now = tmp_path / "stalled"
    (tmp_path / "tar").write_text(_STALLING_TAR.format(python=sys.executable, now=now))
    (tmp_path / "tar").chmod(0o755)
    remote = f"ssh://{ssh_home.user}@127.0.0.1:{ssh_home.port}{src}"
    client = subprocess.Popen([sys.executable, "-c", _KILLED_CLIENT, str(tmp_path / "tar"), remote, str(mirror)])
    try:
        deadline = time.monotonic() + 60
        while not now.exists() and client.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert now.exists(), "the client never reached the stalled stream"
        first = sorted(RUNS)[0]
        while not (mirror / first).exists() and client.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)  # the first run is placed once written; the second is still in the stream
    finally:
        client.kill()
        client.wait()
    assert tree(mirror / first) == tree(src / first)  # the first run whole, nothing of the second
    assert [n for n in os.listdir(mirror) if not n.startswith(".")] == [first]
    assert listed(mirror, capsys) == [first]
    (mirror / STAGE / RUNS[2]).mkdir(parents=True, exist_ok=True)  # what a kill between build and rename leaves
    (mirror / STAGE / RUNS[2] / "metrics.jsonl").write_text('{"step": 0, "ti')
    assert listed(mirror, capsys) == [first]

    result = sync_once(remote, mirror)  # the next pass finishes the job
    assert tree(mirror) == tree(src) and result.copied == len(tree(src)) - len(tree(src / first))
    assert sorted(os.listdir(mirror)) == sorted(RUNS) and listed(mirror, capsys) == sorted(RUNS)


def test_local_copy_builds_only_the_listed_versions(tmp_path: Path) -> None:
    src, stage = tmp_path / "src", tmp_path / "mirror" / STAGE
    ended_runs(src, RUNS[:2])
    stage.mkdir(parents=True)
    runs = []
    for name in RUNS[:2]:
        files = [Entry(p.relative_to(src).as_posix(), FILE, p.stat().st_size, DAY_AGO)
                 for p in sorted((src / name).rglob("*")) if p.is_file() and "checkpoints" not in p.parts]
        runs.append(WholeRun(name, files, {name: DAY_AGO, f"{name}/tensorboard_logs": DAY_AGO}))
    with open(src / RUNS[1] / "metrics.jsonl", "a") as out:  # grew after the listing: not the listed version
        out.write('{"step": 99}\n')
    built, tails = _local_copy(str(src), str(stage), runs)
    assert built == [RUNS[0]] and sorted(os.listdir(stage)) == [RUNS[0]]
    assert tree(stage / RUNS[0]) == tree(src / RUNS[0]) and set(tails) == {e.rel for e in runs[0].files}
    assert (stage / RUNS[0] / "tensorboard_logs").stat().st_mtime == DAY_AGO


def test_whole_runs_are_new_quiet_and_small() -> None:
    now = time.time()
    old, new = int(now) - 3600, int(now) - 5

    def side(files: dict[str, int], dirs: dict[str, int]) -> Manifest:
        return Manifest(files={r: Entry(r, FILE, 10, m) for r, m in files.items()}, dirs=set(dirs), dir_mtimes=dirs)

    src = side({"a/x": old, "a/d/y": old, "b/x": new, "c/x": old, "d/x": old, "top.txt": old},
               {"a": old, "a/d": old, "b": old, "c": new, "d": old})
    dst = side({"d/other": old}, {"d": old})
    chosen = whole_runs(make_plan(src, dst), src, dst, now)
    # b: a file written 5 s ago; c: a folder changed 5 s ago; d: the mirror has part of it; top.txt: no folder
    assert [(r.top, sorted(e.rel for e in r.files), r.dirs) for r in chosen] == [
        ("a", ["a/d/y", "a/x"], {"a": old, "a/d": old})]


@pytest.mark.slow
def test_pull_run_changed_after_listing_goes_file_by_file(ssh_home, tmp_path: Path, monkeypatch) -> None:
    src, mirror = tmp_path / "src", tmp_path / "mirror"
    ended_runs(src)
    grown = src / RUNS[1] / "metrics.jsonl"  # grows between the listing and tar: its header is not the listed one
    (tmp_path / "tar").write_text(f"#!/bin/sh\necho '{{\"step\": 99}}' >> {grown}\nexec tar \"$@\"\n")
    (tmp_path / "tar").chmod(0o755)
    monkeypatch.setattr(SSHTransport, "TAR", str(tmp_path / "tar"))
    remote, opts = f"ssh://{ssh_home.user}@127.0.0.1:{ssh_home.port}{src}", SyncOptions(state_path=tmp_path / "s")
    listed_version = grown.read_bytes()
    result = sync_once(remote, mirror, opts)
    assert (result.errors, result.notes, result.copied) == ([], [], len(tree(src)))
    assert (mirror / RUNS[0]).stat().st_mtime == DAY_AGO  # placed whole from the stream
    assert (mirror / RUNS[1]).stat().st_mtime > DAY_AGO + 3600  # file by file: its folders made now
    assert (mirror / grown.relative_to(src)).read_bytes() == listed_version  # as listed, like any per-file copy
    assert sorted(os.listdir(mirror)) == sorted(RUNS)
    monkeypatch.setattr(SSHTransport, "TAR", "tar")
    again = sync_once(remote, mirror, opts)
    assert (again.appended, again.errors) == (1, []) and tree(mirror) == tree(src)


# The remote's "tar": the real one's stream with hostile members after each run's own (a server not to be trusted)
_HOSTILE_TAR = """#!{python}
import io, subprocess, sys, tarfile
real = subprocess.run(["tar", *sys.argv[1:]], stdin=sys.stdin.buffer, capture_output=True).stdout
out = io.BytesIO()
with tarfile.open(fileobj=io.BytesIO(real)) as src, tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) \\
        as tar:
    members = src.getmembers()
    def add(name, data=b"pwned", **kw):
        info = tarfile.TarInfo(name)
        for key, value in kw.items():
            setattr(info, key, value)
        info.size = 0 if info.type != tarfile.REGTYPE else len(data)
        tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    for i, m in enumerate(members):
        tar.addfile(m, src.extractfile(m))
        top = m.name.split("/")[0]
        if i + 1 < len(members) and members[i + 1].name.split("/")[0] == top:
            continue
        if top == {runs!r}[0]:  # out of the tree, absolute, through a link to outside
            add("../" * 12 + {outside!r}[1:] + "/dotdot.txt")
            add({outside!r} + "/absolute.txt")
            add(top + "/link", type=tarfile.SYMTYPE, linkname={outside!r})
            add(top + "/link/through.txt")
        elif top == {runs!r}[1]:  # a file not in the listing
            add(top + "/unlisted.txt")
        else:  # a listed file replaced by a hard link, and a link left for tar's end
            add(top + "/config.yaml", type=tarfile.LNKTYPE, linkname=top + "/meta.json")
            add(top + "/late", type=tarfile.SYMTYPE, linkname={outside!r})
sys.stdout.buffer.write(out.getvalue())
"""


@pytest.mark.slow
def test_pull_from_a_hostile_server_writes_only_listed_files(ssh_home, tmp_path: Path, monkeypatch) -> None:
    src, mirror, outside = tmp_path / "src", tmp_path / "mirror", tmp_path / "outside"
    ended_runs(src)
    outside.mkdir()
    (tmp_path / "tar").write_text(_HOSTILE_TAR.format(python=sys.executable, runs=sorted(RUNS), outside=str(outside)))
    (tmp_path / "tar").chmod(0o755)
    monkeypatch.setattr(SSHTransport, "TAR", str(tmp_path / "tar"))
    remote = f"ssh://{ssh_home.user}@127.0.0.1:{ssh_home.port}{src}"
    result = sync_once(remote, mirror, SyncOptions(state_path=tmp_path / "s"))
    assert (result.errors, result.copied) == ([], len(tree(src)))
    assert os.listdir(outside) == []  # nothing written through ../, an absolute name or a link
    assert tree(mirror) == tree(src) and sorted(os.listdir(mirror)) == sorted(RUNS)  # no stage, nothing unlisted
    for folder, dirs, files in os.walk(mirror):
        assert not any(os.path.islink(os.path.join(folder, n)) for n in dirs + files)
        assert all(os.stat(os.path.join(folder, n)).st_nlink == 1 for n in files)
    for run in RUNS:  # each run failed its check: copied file by file (its folders made now)
        assert (mirror / run).stat().st_mtime > DAY_AGO + 3600
