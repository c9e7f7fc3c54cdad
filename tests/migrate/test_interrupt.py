"""A migration killed half-way leaves no half run; the re-run finishes it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lightning_track.folder.layout import RunLayout
from lightning_track.migrate import make_example


@pytest.mark.slow
def test_sigkill_mid_run_leaves_no_half_run_and_rerun_completes(tmp_path: Path) -> None:
    source = tmp_path / "experiments"
    make_example(source, runs=2, steps=400, checkpoints=6, ckpt_mb=0.5)
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "lightning_track.cli.migrate", str(source), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    staging = out / ".lt-migrate-staging"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(staging.glob("*/checkpoints/*.ckpt")):
        time.sleep(0.01)
    assert proc.poll() is None, "migration finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    # nothing visible in runs/ is half-written: every run listed there is complete
    for layout in RunLayout.list_runs(out):
        summary = json.loads(layout.summary_json.read_text())
        assert summary["migrated"] is True and layout.meta_json.exists()
    assert len(RunLayout.list_runs(out)) < 2
    rerun = subprocess.run([*cmd, "--report", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    runs = json.loads((tmp_path / "r.json").read_text())["runs"]
    statuses = sorted(r["status"] for r in runs)
    assert statuses in (["converted", "converted"], ["converted", "skipped"])
    assert len(RunLayout.list_runs(out)) == 2 and not staging.exists()
    for layout in RunLayout.list_runs(out):
        assert [s for s, _ in layout.step_checkpoints()] and layout.summary_json.exists()
