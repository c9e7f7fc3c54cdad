"""lt-sync as a process: ``--every`` with a live writer, SIGKILL mid-sync, TensorBoard and Runicorn on the mirror."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from support.processes import ignore_sigint
from support.sync import append_steps, free_port, make_run, tree, wait_port

from lightning_track.sync import SyncOptions, sync_once

pytestmark = pytest.mark.slow  # sshd, lt-sync and viewer processes

RUN = "arc_lora_20250101_120000"


def lt_sync_proc(*args: str, **popen: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lightning_track.cli.sync", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ), **popen)


def test_every_mirrors_a_live_writer_and_stops_on_ctrl_c(ssh_home, tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    run = make_run(src, RUN, steps=5)
    proc = lt_sync_proc(str(src), f"lt-test:{dest}", "--every", "0.5")
    torn: list[str] = []
    done = threading.Event()

    def watch() -> None:  # the mirror must only ever hold whole lines
        mirror = dest / RUN / "metrics.jsonl"
        while not done.is_set():
            if mirror.exists():
                data = mirror.read_bytes()
                if data and not data.endswith(b"\n"):
                    torn.append(data[-40:].decode(errors="replace"))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        deadline = time.monotonic() + 60  # the first cycle (after interpreter start-up) mirrors the initial run
        while time.monotonic() < deadline and tree(dest) != tree(src):
            time.sleep(0.05)
        for step in range(5, 65, 3):
            append_steps(run, step, 3)
            time.sleep(0.1)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and tree(dest) != tree(src):
            time.sleep(0.1)
        assert tree(dest) == tree(src)
    finally:
        done.set()
        watcher.join()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    status_lines = [line for line in out.splitlines() if " lag " in line]
    assert len(status_lines) >= 2 and any(re.search(r"\b[1-9]\d* appended", line) for line in status_lines)
    assert not torn
    steps = [json.loads(line)["step"] for line in (dest / RUN / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(65))


def _bytes_under(root: Path) -> int:
    total = 0
    for dirpath, _, names in os.walk(root):
        for name in names:
            try:  # the sync renames part files while we look
                total += os.stat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:
                pass
    return total


def test_killed_sync_resumes_to_identical_mirror(ssh_home, tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    for i in range(12):
        make_run(src, f"arc_m{i}_20250101_12{i:02d}00", steps=200, events_bytes=3_000_000)
    proc = lt_sync_proc(str(src), f"lt-test:{dest}", "--parallel", "4", "-q")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if _bytes_under(dest) > 4_000_000:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "sync finished before it could be killed; make the tree bigger"
    assert tree(dest) != tree(src)  # killed half way

    result = sync_once(src, f"lt-test:{dest}")
    assert not result.errors
    assert tree(dest) == tree(src)
    assert not [p for p in dest.rglob("*lt-sync-part*")]
    assert sync_once(src, f"lt-test:{dest}").bytes_sent == 0


def test_tensorboard_reads_the_mirror_as_it_grows(ssh_home, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    src, dest = tmp_path / "src", tmp_path / "dest"
    logdir = src / RUN / "tensorboard_logs"
    writer = SummaryWriter(str(logdir))
    for step in range(5):
        writer.add_scalar("train/loss", 1.0 / (step + 1), step)
    writer.flush()
    sync_once(src, f"lt-test:{dest}")

    def steps() -> list[int]:
        acc = EventAccumulator(str(dest / RUN / "tensorboard_logs"))
        acc.Reload()
        return [e.step for e in acc.Scalars("train/loss")]

    assert steps() == list(range(5))
    for step in range(5, 12):
        writer.add_scalar("train/loss", 1.0 / (step + 1), step)
    writer.close()
    result = sync_once(src, f"lt-test:{dest}")
    assert result.appended == 1 and result.copied == 0
    assert steps() == list(range(12))


def _get(port: int, path: str) -> object:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
        return json.loads(resp.read())


def test_runicorn_viewer_shows_runs_and_new_steps(ssh_home, tmp_path: Path) -> None:
    src, dest, view = tmp_path / "src", tmp_path / "dest", tmp_path / "runicorn"
    run = make_run(src, RUN, steps=10)
    options = SyncOptions(runicorn_root=str(view))
    first = sync_once(f"lt-test:{src}", dest, options)  # pull from the "GPU server"
    assert first.runicorn_runs == 1

    port = free_port()
    viewer = subprocess.Popen([sys.executable, "-m", "runicorn", "viewer", "--storage", str(view), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ))
    try:
        wait_port(port, viewer, timeout=60)
        runs = _get(port, "/api/runs")
        assert [r["path"] for r in runs] == ["arc/lora"]
        run_id = runs[0]["id"]
        assert run_id.startswith("20250101_120000_") and runs[0]["status"] == "running"
        rows = _get(port, f"/api/runs/{run_id}/metrics_step")["rows"]
        assert [r["global_step"] for r in rows] == list(range(10))
        assert rows[3]["train/loss"] == 0.25

        append_steps(run, 10, 5)
        sync_once(f"lt-test:{src}", dest, options)
        rows = _get(port, f"/api/runs/{run_id}/metrics_step")["rows"]
        assert [r["global_step"] for r in rows] == list(range(15))
        assert rows[-1]["train/loss"] == 1.0 / 15
    finally:
        viewer.terminate()
        viewer.wait(20)


def test_dropped_connection_is_retried_with_backoff(tmp_path: Path, monkeypatch) -> None:
    import asyncio

    import psutil
    from support.sync import make_sshd, write_ssh_home

    from lightning_track.sync import SyncSession, run_loop

    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    server = make_sshd(tmp_path / "sshd")
    server.start()
    write_ssh_home(server)
    src, dest = tmp_path / "src", tmp_path / "dest"
    run = make_run(src, RUN, steps=5)
    cycles, retries = [], []
    holder: dict = {}

    def loop_thread() -> None:
        async def main() -> None:
            holder["loop"], holder["stop"] = asyncio.get_running_loop(), asyncio.Event()
            session = SyncSession(src, f"lt-test:{dest}", SyncOptions())
            try:
                await run_loop(session, 0.2, cycles.append, lambda exc, delay: retries.append((exc, delay)),
                               stop=holder["stop"], max_backoff=0.5)
            finally:
                await session.close()

        asyncio.run(main())

    thread = threading.Thread(target=loop_thread)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not cycles and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cycles and tree(dest) == tree(src)
        sshd_proc = psutil.Process(server.proc.pid)
        for child in sshd_proc.children(recursive=True):  # the live session: drop the connection for real
            with contextlib.suppress(psutil.NoSuchProcess):  # a command's shell may end on its own meanwhile
                child.kill()
        server.proc.kill()
        server.proc.wait()
        append_steps(run, 5, 5)
        while not retries and time.monotonic() < deadline:
            time.sleep(0.05)
        assert retries, "a dropped connection should be reported and retried"
        server.start()
        while tree(dest) != tree(src) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert tree(dest) == tree(src)
    finally:
        if "loop" in holder:
            holder["loop"].call_soon_threadsafe(holder["stop"].set)
        thread.join(30)
        server.stop()
    assert not thread.is_alive()
    assert all(delay <= 0.5 * 1.2 for _, delay in retries)


def test_every_into_a_local_mirror_keeps_its_histories_parsed(tmp_path: Path, monkeypatch) -> None:
    """After each pass the mirrored metrics.jsonl is parsed into the history cache (only its new lines),
    so load_history on the mirror parses nothing: the cache covers the whole mirrored file."""
    from lightning_track.query import history_cache
    from lightning_track.query.history import read_history

    cache = tmp_path / "cache"
    monkeypatch.setenv("LIGHTNING_TRACK_CACHE_DIR", str(cache))
    src, dest = tmp_path / "src", tmp_path / "dest"
    run = make_run(src, RUN, steps=12_000)  # over the cache's 1 MB floor
    mirrored = dest / RUN / "metrics.jsonl"

    def covered() -> int:
        if not mirrored.exists():
            return -1
        found = history_cache.load_cached(mirrored, mirrored.stat())
        return found.covered if found is not None else -1

    proc = lt_sync_proc(str(src), str(dest), "--every", "0.5")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and covered() != (run / "metrics.jsonl").stat().st_size:
            time.sleep(0.1)
        assert covered() == mirrored.stat().st_size
        append_steps(run, 12_000, 500)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and covered() != (run / "metrics.jsonl").stat().st_size:
            time.sleep(0.1)
        assert covered() == mirrored.stat().st_size == (run / "metrics.jsonl").stat().st_size
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    history = read_history(dest / RUN)
    assert history.steps.tolist() == list(range(12_500))
    assert history.columns["train/loss"][-1] == pytest.approx(1 / 12_500)


def test_every_started_with_sigint_ignored_keeps_mirroring_and_stops_on_sigterm(tmp_path: Path) -> None:
    """A script's `lt sync --every ... &` ignores the terminal's Ctrl+C; `kill PID` stops it as Ctrl+C would."""
    src, dest = tmp_path / "src", tmp_path / "dest"
    run = make_run(src, RUN, steps=5)
    proc = lt_sync_proc(str(src), str(dest), "--every", "0.2", preexec_fn=ignore_sigint)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and tree(dest) != tree(src):
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        append_steps(run, 5, 3)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and tree(dest) != tree(src) and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None and tree(dest) == tree(src)  # still mirroring after the SIGINT
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert err.strip() == "interrupted; finished files are kept and a re-run resumes the rest"
