"""lt-sync against a real OpenSSH server: push, pull, incremental appends, host keys, unsafe paths."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from support.sync import append_steps, make_run, tree, write_ssh_home

from lightning_track.cli.sync import main as lt_sync
from lightning_track.folder.fileio import atomic_write_json
from lightning_track.sync import HostKeyError, SyncOptions, SyncSession, sync_once

pytestmark = pytest.mark.slow  # every test here starts or talks to a real sshd

RUN = "arc_lora_20250101_120000"


def opts(**kw) -> SyncOptions:
    return SyncOptions(**kw)


def test_push_then_pull_incremental(ssh_home, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_run(src, RUN, steps=20, events_bytes=300_000)
    make_run(src, "arc_full_20250101_130000", steps=5)
    remote = tmp_path / "remote"

    first = sync_once(src, f"lt-test:{remote}")  # alias from ~/.ssh/config: port, user, key
    assert first.copied == len(tree(src)) and not first.errors and not first.refused
    assert tree(remote) == tree(src)
    assert not (remote / RUN / "checkpoints" / "checkpoint-step-005.ckpt").exists()

    again = sync_once(src, f"lt-test:{remote}")
    assert (again.files, again.bytes_sent) == (0, 0)
    assert again.plan.unchanged == len(tree(src))

    added = append_steps(src / RUN, 20, 3)
    atomic_write_json(src / RUN / "summary.json", {"status": "completed", "dataset": "arc", "method": "lora"})
    summary_size = (src / RUN / "summary.json").stat().st_size
    inc = sync_once(src, f"lt-test:{remote}")
    assert (inc.appended, inc.replaced, inc.copied) == (1, 1, 0)
    assert inc.bytes_sent == len(added) + summary_size
    assert tree(remote) == tree(src)

    pulled = tmp_path / "pulled"
    back = sync_once(f"ssh://{ssh_home.user}@127.0.0.1:{ssh_home.port}{remote}", pulled)
    assert back.copied == len(tree(src)) and tree(pulled) == tree(src)
    added = append_steps(remote / RUN, 23, 2)
    pull2 = sync_once(f"ssh://{ssh_home.user}@127.0.0.1:{ssh_home.port}{remote}", pulled)
    assert pull2.appended == 1 and pull2.bytes_sent == len(added)
    assert tree(pulled) == tree(remote)


def test_checkpoints_delete_dry_run(ssh_home, tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    make_run(src, RUN)
    (src / RUN / "final_model").mkdir()
    (src / RUN / "final_model" / "model.safetensors").write_bytes(b"w" * 100)

    dry = sync_once(src, f"lt-test:{dest}", opts(dry_run=True))
    assert dry.plan.count("copy") == len(tree(src, skip_checkpoints=False)) - 2 and not dest.exists()

    sync_once(src, f"lt-test:{dest}")
    assert not (dest / RUN / "final_model").exists()
    with_ckpt = sync_once(src, f"lt-test:{dest}", opts(include_checkpoints=True))
    assert with_ckpt.copied == 2
    assert tree(dest, skip_checkpoints=False) == tree(src, skip_checkpoints=False)

    (src / RUN / "config.yaml").unlink()
    kept = sync_once(src, f"lt-test:{dest}")
    assert kept.deleted == 0 and (dest / RUN / "config.yaml").exists()
    gone = sync_once(src, f"lt-test:{dest}", opts(delete=True))  # checkpoints not covered: never deleted
    assert gone.deleted == 1 and not (dest / RUN / "config.yaml").exists()
    assert (dest / RUN / "checkpoints" / "checkpoint-step-005.ckpt").exists()


def test_append_verifies_destination_tail(ssh_home, tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    make_run(src, RUN, steps=50)
    sync_once(src, f"lt-test:{dest}")
    mirror = dest / RUN / "metrics.jsonl"
    data = bytearray(mirror.read_bytes())
    data[-10] ^= 0x01  # corrupt the mirror's tail, same size
    mirror.write_bytes(bytes(data))
    append_steps(src / RUN, 50, 5)
    result = sync_once(src, f"lt-test:{dest}")
    assert result.recopied == 1
    assert mirror.read_bytes() == (src / RUN / "metrics.jsonl").read_bytes()


def test_unknown_and_changed_host_key_refused(sshd, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    write_ssh_home(sshd, trust=False)
    src, dest = tmp_path / "src", tmp_path / "dest"
    make_run(src, RUN)
    with pytest.raises(HostKeyError) as info:
        sync_once(src, f"lt-test:{dest}")
    message = str(info.value)
    assert "unknown" in message and sshd.fingerprint() in message and "known_hosts" in message
    assert not dest.exists()

    assert lt_sync([str(src), f"{sshd.user}@127.0.0.1:{sshd.port}:{dest}"]) == 2
    err = capsys.readouterr().err
    assert sshd.fingerprint() in err and len(err.strip().splitlines()) == 1

    other = tmp_path / "other_key"
    os.system(f"ssh-keygen -q -t ed25519 -N '' -f {other}")
    kind, blob = Path(f"{other}.pub").read_text().split()[:2]
    (Path.home() / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{sshd.port} {kind} {blob}\n")
    with pytest.raises(HostKeyError, match="CHANGED") as info:
        sync_once(src, f"lt-test:{dest}")
    assert sshd.fingerprint() in str(info.value) and "ssh-keygen -R" in str(info.value)
    assert not dest.exists()


def test_symlinks_out_of_tree_refused_both_sides(ssh_home, tmp_path: Path, capsys) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "passwords.txt").write_text("hunter2\n")
    src, dest = tmp_path / "src", tmp_path / "dest"
    make_run(src, RUN)
    os.symlink(secret / "passwords.txt", src / RUN / "leak.txt")  # source link out of the tree
    os.symlink(src / RUN / "config.yaml", src / RUN / "config_link.yaml")  # inside the tree: followed

    code = lt_sync([str(src), f"lt-test:{dest}", "-q"])
    out = capsys.readouterr().out
    assert code == 3 and "leak.txt" in out and "out of the tree" in out
    assert not (dest / RUN / "leak.txt").exists()
    assert (dest / RUN / "config_link.yaml").read_text() == "lr: 0.1\n"

    # Destination side: a run folder replaced by a symlink to somewhere else must not be written through.
    make_run(src, "arc_x_20250102_120000")
    os.symlink(secret, dest / "arc_x_20250102_120000")
    result = sync_once(src, f"lt-test:{dest}")
    assert any("is a symlink" in line for line in result.refused)
    assert sorted(p.name for p in secret.iterdir()) == ["passwords.txt"]

    # Pull from a remote source with a symlink pointing out of its tree.
    pulled = tmp_path / "pulled"
    pull = sync_once(f"lt-test:{src}", pulled)
    assert any("leak.txt" in line for line in pull.refused)
    assert not (pulled / RUN / "leak.txt").exists()


def test_remote_listing_with_unsafe_names_is_refused(ssh_home, tmp_path: Path) -> None:
    from lightning_track.sync.transport import UnsafePathError, check_name, check_rel

    for bad in ("../x", "/etc/passwd", "a/../../b", "a//b", "a\\b"):
        with pytest.raises(UnsafePathError):
            check_rel(bad)
    for bad in ("..", ".", "a/b", ""):
        with pytest.raises(UnsafePathError):
            check_name(bad, "run")
    assert check_rel("run/metrics.jsonl") == "run/metrics.jsonl"

    async def write_outside() -> None:
        session = SyncSession(tmp_path / "src", f"lt-test:{tmp_path / 'dest'}", opts())
        (tmp_path / "src").mkdir()
        await session.connect()
        try:
            with pytest.raises(UnsafePathError):
                await session.dst.write_at("../escaped.txt", 0, b"x")
            with pytest.raises(UnsafePathError):
                await session.dst.write_at(str(tmp_path / "escaped.txt"), 0, b"x")
        finally:
            await session.close()

    asyncio.run(write_outside())
    assert not (tmp_path / "escaped.txt").exists()


def test_ssh_write_final_renames_only_when_verified(ssh_home, tmp_path: Path) -> None:
    """The pipelined write + mtime + read-back: the temp file becomes the target only when size and tail match."""
    from lightning_track.sync.endpoints import parse_endpoint
    from lightning_track.sync.transport import SSHTransport

    remote = tmp_path / "remote"
    remote.mkdir()
    data = os.urandom(600_000)  # several SFTP write requests on one handle

    async def go() -> tuple[tuple[int, bytes], tuple[int, bytes]]:
        dst = SSHTransport(parse_endpoint(f"lt-test:{remote}"))
        await dst.open()
        try:
            await dst.mkdir("run")
            await dst.mkdir("run")  # an existing folder is fine
            good = await dst.write_final("run/.a.part", 0, data, truncate=True, mtime=1_700_000_000, verify=4096,
                                         rename_to="run/a.bin", expect=(len(data), data[-4096:]))
            bad = await dst.write_final("run/.b.part", 0, data, truncate=True, mtime=1_700_000_000, verify=4096,
                                        rename_to="run/b.bin", expect=(len(data) + 1, data[-4096:]))
            return good, bad
        finally:
            await dst.close()

    good, bad = asyncio.run(go())
    assert good == bad == (len(data), data[-4096:])
    assert (remote / "run" / "a.bin").read_bytes() == data
    assert int((remote / "run" / "a.bin").stat().st_mtime) == 1_700_000_000
    assert not (remote / "run" / ".a.part").exists()
    assert not (remote / "run" / "b.bin").exists()  # expectation not met: left as the temp file
    assert (remote / "run" / ".b.part").read_bytes() == data
