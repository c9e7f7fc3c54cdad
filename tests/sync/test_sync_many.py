"""Many sources into one mirror (`lt sync SRC... MIRROR`, `--from FILE`), and the mirror's catalog kept warm.

Real sources: local folders and endpoints on the test sshd (127.0.0.1), a closed port for a server that is
down, a listener that never answers for a slow one, and a second sshd killed in the middle of a pass.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support.sync import another_sshd, append_steps, free_port, kill_server, make_run, tree, trust

from lightning_track.cli.lt import main as lt
from lightning_track.cli.sync import main as lt_sync
from lightning_track.errors import ConfigError
from lightning_track.folder.fileio import atomic_write_json
from lightning_track.query import catalog
from lightning_track.query.runs import find_runs
from lightning_track.sync import SyncOptions, parse_endpoint
from lightning_track.sync.many import ManySync, plan_sources, read_sources_file, source_folder


def runs_at(root: Path, tag: str, count: int = 2, **kw) -> Path:
    for i in range(count):
        make_run(root, f"ds_{tag}_2025010{i + 1}_120000", **kw)
    return root


def folder_of(spec: str) -> str:
    return source_folder(parse_endpoint(spec))


# -- the naming rule and the sources file (fast) -------------------------------------------------------
def test_source_folder_is_readable_stable_and_never_shared(tmp_path: Path) -> None:
    assert folder_of("gpu1:runs").startswith("gpu1_runs-")
    assert folder_of("alice@gpu1:2222:/home/alice/runs").startswith("gpu1-2222_alice-runs-")
    assert folder_of("ssh://alice@gpu1:2222/home/alice/runs") == folder_of("alice@gpu1:2222:/home/alice/runs")
    assert folder_of("gpu1:.").startswith("gpu1_home-")
    assert folder_of("/mnt/gpu2/runs").startswith("local_gpu2-runs-")
    # same readable part, different sources: different folders (the hash is of the whole source)
    names = {folder_of(s) for s in ("gpu1:runs", "bob@gpu1:runs", "gpu1:/runs", "gpu1:2200:runs", "gpu1:x/runs")}
    assert len(names) == 5
    # a source's folder depends on that source alone: adding another renames nothing
    mirror = parse_endpoint(str(tmp_path / "mirror"))
    alone = plan_sources([("gpu1:runs", "SRC")], mirror)
    more = plan_sources([("gpu0:runs", "SRC"), ("gpu1:runs", "SRC")], mirror)
    assert alone[0].folder == more[1].folder == folder_of("gpu1:runs")
    assert plan_sources([("gpu1:runs", "SRC")], mirror, own_folders=False)[0].folder == ""


def test_sources_file_comments_and_bad_lines(tmp_path: Path, capsys) -> None:
    listing = tmp_path / "servers.txt"
    listing.write_text("# the lab's servers\n\ngpu1:runs   # A100s\n  alice@gpu2:2222:/data/runs\n")
    assert read_sources_file(listing) == [("gpu1:runs", f"{listing}:3"), ("alice@gpu2:2222:/data/runs", f"{listing}:4")]

    mirror = str(tmp_path / "mirror")
    cases = {
        "gpu1:runs\ngpu1:99999:runs\n": f"{listing}:2: 'gpu1:99999:runs': port 99999 is out of range 1-65535",
        "gpu1:runs\n\ngpu1:runs\n": f"{listing}:3: gpu1:runs is given twice (also at {listing}:1)",
        "# nothing but comments\n": f"--from {listing}: no sources in it",
        f"{mirror}/inner\n": f"{listing}:1: SRC {mirror}/inner is inside DEST {mirror}",
    }
    for text, wanted in cases.items():
        listing.write_text(text)
        assert lt_sync(["--from", str(listing), mirror]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and wanted in err[0], (text, err)
    assert lt_sync(["--from", str(tmp_path / "missing.txt"), mirror]) == 2
    assert "missing.txt: cannot read it (No such file or directory)" in capsys.readouterr().err
    assert not Path(mirror).exists()  # bad input: nothing written
    with pytest.raises(ConfigError, match="given twice"):
        plan_sources([("/a/runs", "SRC"), ("/a/runs/", "SRC")], parse_endpoint(mirror))


# -- real passes ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_local_and_ssh_sources_one_down(ssh_home, tmp_path: Path, capsys) -> None:
    a, b = runs_at(tmp_path / "gpu1" / "runs", "a"), runs_at(tmp_path / "gpu2" / "runs", "b", count=1)
    c, d = runs_at(tmp_path / "srv" / "c", "c"), runs_at(tmp_path / "srv" / "d", "d", status="completed")
    down = f"127.0.0.1:{free_port()}:runs"  # nothing listens there
    listing = tmp_path / "servers.txt"
    listing.write_text(f"# servers\nlt-test:{c}\n127.0.0.1:{ssh_home.port}:{d}   # same sshd, another folder\n"
                       f"{down}\n")
    mirror = tmp_path / "mirror"
    argv = [str(a), "--from", str(listing), str(b), "-q", str(mirror)]

    assert lt_sync(argv) == 1
    out, err = capsys.readouterr()
    assert err.splitlines() == [f"lt-sync: {folder_of(down)} ({down}): TransportError: {down}: cannot connect "
                                f"(ConnectionRefusedError: Connect call failed ('127.0.0.1', {down.split(':')[1]})); "
                                "retried next pass"]
    good = {str(a): a, str(b): b, f"lt-test:{c}": c, f"127.0.0.1:{ssh_home.port}:{d}": d}
    assert sorted(line.split(":")[0] for line in out.splitlines()) == sorted(folder_of(s) for s in good)
    assert sorted(os.listdir(mirror)) == sorted(folder_of(s) for s in good)
    for spec, root in good.items():
        assert tree(mirror / folder_of(spec)) == tree(root)

    assert lt(["ls", "--json", str(mirror)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted((r["source"], r["name"]) for r in listed) == sorted(
        (folder_of(spec), run) for spec, root in good.items() for run in os.listdir(root))

    append_steps(c / "ds_c_20250101_120000", 10, 3)
    assert lt_sync(argv) == 1  # the next pass: the grown run is appended, the down server is one line again
    out, err = capsys.readouterr()
    assert len(err.splitlines()) == 1 and down in err
    assert f"{folder_of(f'lt-test:{c}')}: " in out and "1 appended" in out
    assert tree(mirror / folder_of(f"lt-test:{c}")) == tree(c)


@pytest.mark.slow
def test_a_slow_source_delays_no_other(tmp_path: Path) -> None:
    """A server that accepts and never answers holds a slot of the sources over SSH, never the local sources'
    one slot: those all finish first."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def hold() -> None:
        conn, _ = listener.accept()
        held.append(conn)
        time.sleep(3)
        conn.close()

    threading.Thread(target=hold, daemon=True).start()
    slow = f"127.0.0.1:{listener.getsockname()[1]}:runs"
    locals_ = [str(runs_at(tmp_path / f"gpu{i}" / "runs", f"m{i}")) for i in range(4)]
    mirror = parse_endpoint(str(tmp_path / "mirror"))
    sources = plan_sources([(s, "SRC") for s in [slow, *locals_]], mirror)
    finished: dict[str, float] = {}

    async def main() -> list:
        many = ManySync(sources, mirror, SyncOptions(), jobs=1)
        try:
            return await many.once(on_pass=lambda p: finished.setdefault(p.source.spec, time.monotonic()))
        finally:
            await many.close()

    began = time.monotonic()
    passes = asyncio.run(main())
    listener.close()
    assert [p.failed for p in passes] == [True, False, False, False, False]
    assert "connection lost" in str(passes[0].error) or "cannot connect" in str(passes[0].error)
    assert max(finished[s] for s in locals_) - began < 2.0 <= finished[slow] - began
    for spec in locals_:
        assert tree(Path(mirror.path) / folder_of(spec)) == tree(Path(spec))


@pytest.mark.slow
def test_source_killed_mid_pass_others_complete_next_pass_heals(ssh_home, tmp_path: Path) -> None:
    second = another_sshd(ssh_home, tmp_path / "sshd2")
    second.start()
    trust(second)
    try:
        far = runs_at(tmp_path / "far" / "runs", "far", count=6, events_bytes=300_000)
        near = runs_at(tmp_path / "near" / "runs", "near", count=3)
        here = runs_at(tmp_path / "loc" / "runs", "loc")
        specs = [f"127.0.0.1:{second.port}:{far}", f"lt-test:{near}", str(here)]
        mirror = parse_endpoint(str(tmp_path / "mirror"))
        sources = plan_sources([(s, "SRC") for s in specs], mirror)
        killed: list[str] = []

        def progress(source, rel: str, nbytes: int) -> None:
            if source.spec == specs[0] and not killed:
                killed.append(rel)
                kill_server(second)  # the machine goes away with the first file of its pass copied

        far_mirror = Path(mirror.path) / folder_of(specs[0])
        half: dict[str, bytes] = {}

        async def main() -> tuple[list, list]:
            many = ManySync(sources, mirror, SyncOptions(parallel=4), jobs=3)
            try:
                first = await many.once(progress)
                half.update(tree(far_mirror, skip_checkpoints=False))
                second.start()  # the machine is back: the next pass connects again
                return first, await many.once()
            finally:
                await many.close()

        first, again = asyncio.run(main())
        assert killed and [p.failed for p in first] == [True, False, False]
        line = first[0].line()  # the connection lost: TransportError, or the socket's own BrokenPipeError
        assert line.startswith(f"{folder_of(specs[0])} ({specs[0]}): ") and line.endswith("; retried next pass")
        assert "\n" not in line
        done = {rel: data for rel, data in half.items() if not rel.endswith(".lt-sync-part")}
        assert 0 < len(done) < len(tree(far))
        assert all(data == (far / rel).read_bytes() for rel, data in done.items())  # nothing torn in place
        for spec, root in zip(specs[1:], (near, here), strict=True):
            assert tree(Path(mirror.path) / folder_of(spec)) == tree(root)

        assert [p.failed for p in again] == [False, False, False]
        assert again[1].result.files == again[2].result.files == 0
        assert tree(far_mirror) == tree(far)
        assert not [n for _, _, names in os.walk(far_mirror) for n in names if n.endswith(".lt-sync-part")]
    finally:
        second.stop()


@pytest.mark.slow
def test_pass_keeps_the_mirror_catalog_warm(tmp_path: Path, monkeypatch, capsys) -> None:
    """After a pass, `lt ls MIRROR` reads no run's files, and prints what a plain read of them prints."""
    one, two = runs_at(tmp_path / "gpu1" / "runs", "a", count=3), runs_at(tmp_path / "gpu2" / "runs", "b")
    atomic_write_json(one / "ds_a_20250102_120000" / "annotations.json", {"tags": ["keep"], "notes": "best so far"})
    mirror = tmp_path / "mirror"
    single = tmp_path / "single"

    def listing(root: Path, cache: Path) -> tuple[str, int]:
        monkeypatch.setenv("LIGHTNING_TRACK_CACHE_DIR", str(cache))
        assert lt(["ls", "--json", str(root)]) == 0
        return capsys.readouterr().out, catalog.last_look["read"]

    def check(root: Path, runs: int) -> None:
        time.sleep(catalog.RACY_S + 0.1)  # a reader takes no entry younger than that, whoever wrote it
        warm, read = listing(root, tmp_path / "cache")
        assert read == 0 and len(json.loads(warm)) == runs
        plain, read = listing(root, tmp_path / f"empty-{time.monotonic()}")  # no catalog: every run's files read
        assert read == runs and warm == plain
        assert [r.record() for r in find_runs(root, [])] == [r.record() for r in find_runs(root, [], catalog=False)]

    monkeypatch.setenv("LIGHTNING_TRACK_CACHE_DIR", str(tmp_path / "cache"))
    assert lt_sync(["-q", str(one), str(two), str(mirror)]) == 0
    assert lt_sync(["-q", str(one), str(single)]) == 0  # one source: the runs in the mirror itself, as before
    capsys.readouterr()
    check(mirror, 5)
    check(single, 3)

    # runs change at the source: a finished run, a new run, tags edited, a run deleted (--delete)
    run = one / "ds_a_20250101_120000"
    append_steps(run, 10, 5)
    atomic_write_json(run / "summary.json", {"dataset": "ds", "method": "a", "status": "completed",
                                             "start_time": "2025-01-01T12:00:00+00:00", "last_step": 14})
    make_run(two, "ds_b_20250109_120000")
    atomic_write_json(one / "ds_a_20250102_120000" / "annotations.json", {"tags": ["keep", "paper"]})
    for path in sorted((one / "ds_a_20250103_120000").iterdir(), reverse=True):
        if path.is_file():
            path.unlink()
    monkeypatch.setenv("LIGHTNING_TRACK_CACHE_DIR", str(tmp_path / "cache"))
    assert lt_sync(["-q", "--delete", str(one), str(two), str(mirror)]) == 0
    capsys.readouterr()
    check(mirror, 5)
    listed = {r.name: r for r in find_runs(mirror, [])}
    assert listed["ds_a_20250101_120000"].status == "completed" and "ds_a_20250103_120000" not in listed
    assert listed["ds_a_20250102_120000"].tags == ["keep", "paper"]

    # a mirror filled before (another cache): its first pass here adds what the catalog lacks
    monkeypatch.setenv("LIGHTNING_TRACK_CACHE_DIR", str(tmp_path / "other-cache"))
    assert lt_sync(["-q", str(one), str(two), str(mirror)]) == 0
    capsys.readouterr()
    time.sleep(catalog.RACY_S + 0.1)
    assert listing(mirror, tmp_path / "other-cache")[1] == 0


def test_a_first_pass_drops_runs_gone_from_the_mirror_and_adds_the_ones_the_catalog_lacks(tmp_path: Path,
                                                                                         monkeypatch) -> None:
    """The warmer's first pass compares the mirror's names with the catalog's as hashes (never a set of paths)."""
    from lightning_track.query.catalog_writer import known_runs
    from lightning_track.sync.engine import CycleResult
    from lightning_track.sync.plan import Plan
    from lightning_track.sync.warm import CatalogWarmer, KnownRuns

    monkeypatch.setenv("LIGHTNING_TRACK_CACHE_DIR", str(tmp_path / "cache"))
    src, mirror = runs_at(tmp_path / "src", "a", count=4), tmp_path / "mirror"
    assert lt_sync(["-q", str(src), str(mirror)]) == 0
    before = known_runs(mirror)
    assert before is not None and len(before) == 4
    for gone in ("ds_a_20250101_120000", "ds_a_20250103_120000"):  # removed by hand, behind the sync's back
        for path in sorted((mirror / gone).rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        (mirror / gone).rmdir()
    make_run(mirror, "ds_b_20250109_120000")  # and one put there by hand
    (mirror / "notes.txt").write_text("not a run\n")
    known = KnownRuns(mirror)
    assert CatalogWarmer(mirror, known).after(CycleResult(plan=Plan(), started=time.time())) == []
    assert known_runs(mirror) == {str(mirror / name) for name in
                                  ("ds_a_20250102_120000", "ds_a_20250104_120000", "ds_b_20250109_120000")}
    assert len(known.under(str(mirror))) == 4 and "ds_a_20250101_120000" in known.under(str(mirror))  # as asked


@pytest.mark.slow
def test_every_retries_a_down_source_each_pass_until_it_is_back(ssh_home, tmp_path: Path) -> None:
    later = another_sshd(ssh_home, tmp_path / "sshd2")  # down at first: nothing listens on its port
    trust(later)
    far, here = runs_at(tmp_path / "far" / "runs", "far"), runs_at(tmp_path / "here" / "runs", "here")
    specs = [f"127.0.0.1:{later.port}:{far}", str(here)]
    mirror = parse_endpoint(str(tmp_path / "mirror"))
    passes: list = []
    stop = asyncio.Event()

    def on_pass(done) -> None:
        passes.append(done)
        down = [p for p in passes if p.source.spec == specs[0]]
        if len(down) == 2 and later.proc is None:
            later.start()  # the server comes back between two passes
        if down and not down[-1].failed:
            stop.set()

    async def main() -> None:
        many = ManySync(plan_sources([(s, "SRC") for s in specs], mirror), mirror, SyncOptions())
        try:
            await asyncio.wait_for(many.run(0.5, on_pass, stop=stop), 60)
        finally:
            await many.close()

    try:
        asyncio.run(main())
    finally:
        later.stop()
    down = [p for p in passes if p.source.spec == specs[0]]
    assert [p.failed for p in down] == [True, True, False]
    assert all(p.line().endswith("; retried next pass") and "cannot connect" in p.line() for p in down[:2])
    assert len([p for p in passes if p.source.spec == specs[1] and not p.failed]) >= 2  # not held up meanwhile
    for spec, root in zip(specs, (far, here), strict=True):
        assert tree(Path(mirror.path) / folder_of(spec)) == tree(root)


@pytest.mark.slow
def test_every_process_names_a_down_source_once_and_mirrors_the_rest(tmp_path: Path) -> None:
    """`lt sync --every` as a process: the others mirrored pass after pass, the down one one line (not one a pass),
    SIGTERM stops it with 0."""
    one, two = runs_at(tmp_path / "gpu1" / "runs", "a"), runs_at(tmp_path / "gpu2" / "runs", "b")
    down = f"127.0.0.1:{free_port()}:runs"
    mirror = tmp_path / "mirror"
    proc = subprocess.Popen([sys.executable, "-m", "lightning_track.cli.sync", "--every", "0.3", str(one), down,
                             str(two), str(mirror)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ))
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(tree(mirror / folder_of(str(r))) == tree(r) for r in (one, two)):
            time.sleep(0.2)
        append_steps(two / "ds_b_20250101_120000", 10, 2)  # the next passes carry it over
        while time.monotonic() < deadline and tree(mirror / folder_of(str(two))) != tree(two):
            time.sleep(0.2)
        time.sleep(1.5)  # a few more passes of the down source
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert tree(mirror / folder_of(str(two))) == tree(two) and tree(mirror / folder_of(str(one))) == tree(one)
    failures = [line for line in err.splitlines() if down in line]
    assert len(failures) == 1 and failures[0].endswith("; retried next pass"), err
    assert "1 appended" in out


def test_an_unusable_cache_is_one_line_and_never_the_sync_s_failure(tmp_path: Path, monkeypatch, capsys) -> None:
    one, two = runs_at(tmp_path / "gpu1" / "runs", "a"), runs_at(tmp_path / "gpu2" / "runs", "b")
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("LIGHTNING_TRACK_CACHE_DIR", str(tmp_path / "a-file" / "cache"))  # cannot be made
    assert lt_sync(["-q", str(one), str(two), str(tmp_path / "mirror")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "catalog not usable" in err[0] and "a-file" in err[0], err
    assert tree(tmp_path / "mirror" / folder_of(str(one))) == tree(one)


@pytest.mark.slow
def test_runs_below_the_top_of_the_mirror_are_kept_warm_too(tmp_path: Path) -> None:
    """One source whose runs sit two folders down (a mirror of mirrors): changed runs found as `lt ls` finds them."""
    source = tmp_path / "all"
    deep = [runs_at(source / "gpu1" / "runs", "a"), runs_at(source / "gpu2" / "runs", "b", count=1)]
    (source / ".hidden" / "ds_x_20250101_120000").mkdir(parents=True)
    (source / ".hidden" / "ds_x_20250101_120000" / "summary.json").write_text("{}")
    mirror = tmp_path / "mirror"
    assert lt_sync(["-q", str(source), str(mirror)]) == 0
    time.sleep(catalog.RACY_S + 0.1)
    runs = find_runs(mirror, [])
    assert catalog.last_look == {"runs": 3, "read": 0}
    assert sorted((r.source, r.name) for r in runs) == sorted(
        (root.relative_to(source).as_posix(), run) for root in deep for run in os.listdir(root))
