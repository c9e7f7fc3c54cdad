"""A pass's remote listing in one command (transport/findstream.py): every batch of runs from one ``find``
stream, and the batches it could not list well walked the usual way.

Real parts: the test sshd on 127.0.0.1, its shell, xargs and GNU find (or a ``find`` wrapper that complains
about one run, says a file vanished, or prints what find never would), and the mirror read back.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from support.sync import make_run, tree

from lightning_track.sync import SyncOptions, engine, sync_once
from lightning_track.sync.pullstream import PullStream
from lightning_track.sync.transport import findstream
from lightning_track.sync.transport.findstream import FindStream, parse_records
from lightning_track.sync.transport.ssh import SSHTransport

RUNS = [f"arc_m{i}_20250101_1{i}0000" for i in range(7)]


def runs(root: Path, *, ended: bool = True) -> None:
    for name in RUNS:
        make_run(root, name, steps=20, events_bytes=3000, status="completed")
    if ended:
        day_ago = int(time.time()) - 86400
        for folder, _, files in os.walk(root, topdown=False):
            for name in files:
                os.utime(os.path.join(folder, name), (day_ago, day_ago))
            os.utime(folder, (day_ago, day_ago))


class Counted:
    """Counts the remote commands and the per-batch walks of a pass."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.finds: list[str] = []
        self.sftp_walks = self.tar_streams = 0
        find, sftp_walk, start = SSHTransport._find, SSHTransport._sftp_walk, PullStream.start

        async def counted_find(transport, paths, *args, **kwargs):
            self.finds.append(paths)
            return await find(transport, paths, *args, **kwargs)

        async def counted_sftp_walk(transport, *args, **kwargs):
            self.sftp_walks += 1
            return await sftp_walk(transport, *args, **kwargs)

        async def counted_start(stream):
            self.tar_streams += 1
            return await start(stream)

        monkeypatch.setattr(PullStream, "start", counted_start)
        monkeypatch.setattr(SSHTransport, "_find", counted_find)
        monkeypatch.setattr(SSHTransport, "_sftp_walk", counted_sftp_walk)
        monkeypatch.setattr(engine, "BATCH_TOPS", 2)  # 7 runs: four batches
        monkeypatch.setattr(findstream, "PER_FIND", 2)  # as engine.BATCH_TOPS
        monkeypatch.setattr(SSHTransport, "SFTP_TOPS", 0)  # a batch walked alone uses find, as a big one does
        monkeypatch.setattr(SSHTransport, "SFTP_ROOT", 2)  # the root looked at by find, as a big one is


def wrapper(tmp_path: Path, body: str) -> str:
    """A ``find`` on the remote side that runs ``body`` (sh) before the real one."""
    path = tmp_path / "find-wrapper"
    path.write_text(f"#!/bin/sh\n{body}\nexec find \"$@\"\n")
    path.chmod(0o755)
    return str(path)


def pull(ssh_home, src: Path, mirror: Path, state: Path) -> engine.CycleResult:
    result = sync_once(f"ssh://{ssh_home.user}@127.0.0.1:{ssh_home.port}{src}", str(mirror),
                       SyncOptions(state_path=state))
    assert (result.errors, result.skipped, result.refused) == ([], [], [])
    return result


@pytest.mark.slow
@pytest.mark.parametrize("ended", [True, False], ids=["ended: whole runs", "live: file by file"])
def test_every_batch_listed_by_one_command(ssh_home, tmp_path: Path, monkeypatch, ended: bool) -> None:
    src, mirror = tmp_path / "src", tmp_path / "mirror"
    runs(src, ended=ended)
    count = Counted(monkeypatch)
    result = pull(ssh_home, src, mirror, tmp_path / "state.jsonl")
    assert tree(mirror) == tree(src) and result.copied == len(tree(src))
    assert count.finds == [] and count.sftp_walks == 0  # the root and every batch listed by one command
    # live runs go file by file: the tar stream started with the listing (the mirror lacked runs) got none,
    # and ended with the pass, leaving no stage behind
    assert sorted(os.listdir(mirror)) == RUNS and result.notes == [] and count.tar_streams == 1
    again = pull(ssh_home, src, mirror, tmp_path / "state.jsonl")
    assert again.files == 0 and again.plan.unchanged == len(tree(src))
    assert count.tar_streams == 1  # the mirror has every run: no stream started for the second pass


@pytest.mark.slow
def test_one_batch_of_a_big_root_uses_the_root_command(ssh_home, tmp_path: Path, monkeypatch) -> None:
    src, mirror = tmp_path / "src", tmp_path / "mirror"
    runs(src)
    count = Counted(monkeypatch)
    monkeypatch.setattr(engine, "BATCH_TOPS", 1000)
    pull(ssh_home, src, mirror, tmp_path / "state.jsonl")
    assert tree(mirror) == tree(src) and count.finds == [] and count.sftp_walks == 0


@pytest.mark.slow
def test_push_lists_the_mirror_by_one_command(ssh_home, tmp_path: Path, monkeypatch) -> None:
    """The mirror has none of the runs yet: every name "vanished", which is an empty listing, not a failure."""
    src, mirror = tmp_path / "src", tmp_path / "mirror"
    runs(src)
    count = Counted(monkeypatch)
    for _ in range(2):
        result = sync_once(str(src), f"lt-test:{mirror}", SyncOptions(state_path=tmp_path / "state.jsonl"))
        assert (result.errors, result.skipped, result.refused) == ([], [], [])
        assert tree(mirror) == tree(src)
    assert result.files == 0 and "TOPS" not in count.finds and count.sftp_walks == 0


@pytest.mark.slow
def test_a_batch_whose_find_complains_is_walked_on_its_own(ssh_home, tmp_path: Path, monkeypatch) -> None:
    src, mirror = tmp_path / "src", tmp_path / "mirror"
    runs(src)
    count = Counted(monkeypatch)
    # the run of the third batch cannot be read, says find (root reads it anyway: the wrapper says so)
    monkeypatch.setattr(SSHTransport, "FIND", wrapper(tmp_path, f'''for a; do case $a in ./{RUNS[4]})
        echo "find: '$a/x': Permission denied" >&2; find "$@"; exit 1;; esac; done'''))
    pull(ssh_home, src, mirror, tmp_path / "state.jsonl")
    assert tree(mirror) == tree(src)
    # that batch (runs 4 and 5) listed on its own: find complains again, so SFTP lists it; the rest: the stream
    assert count.finds.count("TOPS") == 1 and count.sftp_walks == 1


@pytest.mark.slow
def test_a_vanished_file_is_no_complaint(ssh_home, tmp_path: Path, monkeypatch) -> None:
    src, mirror = tmp_path / "src", tmp_path / "mirror"
    runs(src)
    count = Counted(monkeypatch)
    monkeypatch.setattr(SSHTransport, "FIND", wrapper(tmp_path, f'''for a; do case $a in ./{RUNS[2]})
        echo "find: '$a/.tmp123': No such file or directory" >&2; find "$@"; exit 1;; esac; done'''))
    pull(ssh_home, src, mirror, tmp_path / "state.jsonl")
    assert tree(mirror) == tree(src)
    assert "TOPS" not in count.finds and count.sftp_walks == 0


@pytest.mark.slow
def test_what_find_never_prints_stops_the_stream(ssh_home, tmp_path: Path, monkeypatch) -> None:
    """A shell start-up file or a hostile server printing: that batch and the later ones are listed over SFTP."""
    src, mirror = tmp_path / "src", tmp_path / "mirror"
    runs(src)
    count = Counted(monkeypatch)
    monkeypatch.setattr(SSHTransport, "FIND", wrapper(tmp_path, f'''for a; do case $a in ./{RUNS[2]})
        printf 'f\\t5\\t1.0\\t./elsewhere/x\\0';; esac; done'''))
    pull(ssh_home, src, mirror, tmp_path / "state.jsonl")
    assert tree(mirror) == tree(src)
    assert not (mirror / "elsewhere").exists()
    assert count.sftp_walks == 3  # batches 1, 2, 3 (runs 2-6), find no longer asked; batch 0 from the stream


class Reader:
    """asyncssh's reader, played back in pieces of ``size`` bytes."""

    def __init__(self, data: bytes, size: int) -> None:
        self.data, self.size = data, size

    async def read(self, n: int) -> bytes:
        piece, self.data = self.data[:min(n, self.size)], self.data[min(n, self.size):]
        return piece


def test_the_stream_cut_anywhere_gives_the_same_batches() -> None:
    import asyncio

    def rec(kind: str, path: str, size: int = 0) -> bytes:
        return f"{kind}\t{size}\t1700000000.5\t./{path}\0".encode()

    stream = (rec("d", "a") + rec("f", "a/x", 3) + rec("d", "b") + b"\x010\t2\t\0"  # a find for a and b
              + rec("d", "d") + rec("f", "d/y", 4) + b"\x011\t2\tfind: './c': No such file or directory\0"  # c gone
              + rec("d", "e") + b"\x011\t1\tfind: './e/z': Permission denied\0")
    batches = [["a"], ["b", "c"], ["d"], ["e"]]

    async def read_all(size: int) -> list:
        found = FindStream(Reader(stream, size), batches)
        return [await found.batch(k) for k in range(len(batches))]

    for size in (1, 7, 50, 1 << 20):
        got = asyncio.run(read_all(size))
        assert [None if b is None else sorted(e.rel for e in b) for b in got] == \
            [["a", "a/x"], ["b"], ["d", "d/y"], None], size  # e: walked on its own
    assert parse_records([rec("f", "a/x", 3)[:-1]])[0].size == 3
    with pytest.raises(ValueError):
        parse_records([rec("f", "a/../x")[:-1]])


def test_a_find_of_the_root_command_is_one_batch() -> None:
    assert findstream.PER_FIND == engine.BATCH_TOPS


def test_the_root_commands_look_cut_anywhere_comes_an_entry_at_a_time() -> None:
    """The look at the root is handed on as it is read, and what follows its end record is the listing's."""
    import asyncio

    def rec(kind: str, path: str) -> bytes:
        return f"{kind}\t0\t1700000000.5\t./{path}\0".encode()

    after = rec("d", "a") + b"\x010\t1\t\0"
    output = rec("d", "a") + rec("d", "b") + rec("f", "notes.txt") + b"\x020\t\0" + after

    async def look(size: int) -> tuple[list, bytes]:
        seen: list = []
        rest = await findstream.read_root(Reader(output, size), lambda *entry: seen.append(entry))
        assert rest is not None
        got = b""
        while data := await rest.read(1 << 16):
            got += data
        return seen, got

    for size in (1, 5, 40, 1 << 20):
        seen, got = asyncio.run(look(size))
        assert [(rel, kind) for rel, kind, _, _ in seen] == [("a", "dir"), ("b", "dir"), ("notes.txt", "file")]
        assert got == after, size
    failed = rec("d", "a") + b"\x021\tfind: './b': Permission denied\0"
    assert asyncio.run(findstream.read_root(Reader(failed, 7), lambda *entry: None)) is None


@pytest.mark.slow
def test_a_warm_pass_looks_and_lists_by_one_command(ssh_home, tmp_path: Path, monkeypatch) -> None:
    """Settled runs without deeper folders: the look at the root (reported as it comes) and the listing of the
    runs it finds changed are one remote command."""
    import asyncssh

    src, mirror = tmp_path / "src", tmp_path / "mirror"
    runs(src)
    for name in RUNS:  # runs of files only: the look has no known folders to stat
        for sub in ("tensorboard_logs", "checkpoints"):
            for item in (src / name / sub).iterdir():
                item.unlink()
            (src / name / sub).rmdir()
    day_ago = int(time.time()) - 86400
    for name in RUNS:
        os.utime(src / name, (day_ago, day_ago))
    os.utime(src, (day_ago, day_ago))
    count = Counted(monkeypatch)
    pull(ssh_home, src, mirror, tmp_path / "state.jsonl")
    time.sleep(1.1)
    pull(ssh_home, src, mirror, tmp_path / "state.jsonl")
    assert pull(ssh_home, src, mirror, tmp_path / "state.jsonl").runs_skipped == len(RUNS)  # all settled
    commands: list[str] = []
    create = asyncssh.SSHClientConnection.create_process

    async def counted(conn, command, *args, **kwargs):
        commands.append(command)
        return await create(conn, command, *args, **kwargs)

    monkeypatch.setattr(asyncssh.SSHClientConnection, "create_process", counted)
    for name in RUNS[2:5]:
        (src / name / "later.txt").write_text("more\n")  # three runs' folders changed
    again = pull(ssh_home, src, mirror, tmp_path / "state.jsonl")
    assert tree(mirror) == tree(src) and again.runs_skipped == len(RUNS) - 3 and again.copied == 3
    assert len(commands) == 1 and "xargs" in commands[0]  # the look and the listing of batches, one command
    assert count.finds == [] and count.sftp_walks == 0
