"""Real processes: the guard's exit code in a plain ``python train.py``, a stalled step, and DDP."""

from __future__ import annotations

import math
import subprocess
import sys
import time

import pytest
from support.health import SCRIPT, subprocess_env
from support.sync import free_port

from lightning_track import HEALTH_EXIT_CODE
from lightning_track.folder import signals
from lightning_track.folder.fileio import read_json
from lightning_track.folder.layout import RunLayout

pytestmark = pytest.mark.slow  # every test starts training processes


def run_script(root, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--root", str(root), *args], env=subprocess_env(),
                          capture_output=True, text=True, timeout=timeout)


def test_nan_in_plain_script_exits_with_the_guard_code(tmp_path):
    proc = run_script(tmp_path, "--nan-at", "5")
    assert proc.returncode == HEALTH_EXIT_CODE, proc.stderr[-2000:]
    assert "health check 'nonfinite_loss' failed at step 6: loss is nan (exit code 86)" in proc.stderr
    assert "Traceback" not in proc.stderr
    (run,) = RunLayout.list_runs(tmp_path)
    record = signals.read_signal(run.signals_dir, run.name, "failed")
    assert (record["check"], record["step"]) == ("nonfinite_loss", 6)
    summary = read_json(run.summary_json)
    assert summary["status"] == "failed" and summary["failure"]["check"] == "nonfinite_loss"


def test_stalled_step_is_reported_and_the_process_ends(tmp_path):
    start = time.monotonic()
    proc = run_script(tmp_path, "--sleep-at", "3", "--sleep-s", "120", "--stall-timeout", "1.5",
                      "--stall-grace", "1")
    assert proc.returncode == HEALTH_EXIT_CODE, proc.stderr[-2000:]
    assert time.monotonic() - start < 100  # did not wait for the 120 s step
    (run,) = RunLayout.list_runs(tmp_path)
    record = signals.read_signal(run.signals_dir, run.name, "failed")
    assert record["reason"].startswith("stalled: no step for ") and record["reason"].endswith(" s after step 3")
    assert record["check"] == "stall" and record["step"] == 3 and record["value"] >= 1.5
    summary = read_json(run.summary_json)
    assert summary["status"] == "failed" and summary["failure"]["check"] == "stall"
    assert "step still stuck after 1 s grace; exiting with code 86" in proc.stderr


def _lt(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "lightning_track.cli.lt", *args], env=subprocess_env(),
                          capture_output=True, text=True, timeout=60).stdout


def test_a_run_that_stops_stepping_is_judged_stalled_then_stopped_by_the_guard(tmp_path):
    """Step 5 blocks (as a rank waiting on a lost peer does) while the writer keeps beating: lt judges it
    ``stalled`` by the run's rule (floor 2 s), then HealthGuard's "auto" rule (floor 8 s) stops it."""
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--root", str(tmp_path), "--sleep-at", "5", "--sleep-s",
                             "120", "--step-sleep", "0.05", "--warmup", "3", "--heartbeat", "0.2",
                             "--run-stall-floor", "2", "--stall-timeout", "auto", "--stall-floor", "8",
                             "--stall-grace", "1"], env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline, shown = time.monotonic() + 90, ""
        while "status: stalled" not in shown and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            runs = RunLayout.list_runs(tmp_path)
            if runs and runs[0].summary_json.exists():
                shown = _lt("show", str(runs[0].run_dir))
        assert "status: stalled - no step for " in shown and " after step 5 (limit 2.0s)" in shown, shown
        (run,) = RunLayout.list_runs(tmp_path)
        assert read_json(run.summary_json)["progress"]["step"] == 5
        listed = _lt("ls", str(tmp_path))
        assert run.name in listed and " stalled " in listed  # alive, and still not training
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == HEALTH_EXIT_CODE, err[-2000:]
    summary = read_json(run.summary_json)
    assert summary["status"] == "failed" and summary["failure"]["check"] == "stall"
    reason = summary["failure"]["reason"]
    assert reason.startswith("stalled: no step for ") and reason.endswith(" s after step 5"), reason
    assert 8 <= summary["failure"]["value"] < 16  # judged within 2x the limit (floor 8 s: steps take 0.05 s)
    assert _lt("show", str(run.run_dir)).splitlines()[1].startswith("status: failed - stalled: no step for ")


@pytest.mark.timeout(240)
def test_ddp_nan_on_rank_1_only_stops_both_ranks(tmp_path):
    """Two real gloo ranks (started like torchrun does); NaN on rank 1 at step 5 -> both exit 86."""
    port = str(free_port())
    procs = []
    for rank in (0, 1):
        env = subprocess_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, WORLD_SIZE="2", RANK=str(rank),
                             LOCAL_RANK=str(rank), NODE_RANK="0", OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen(
            [sys.executable, str(SCRIPT), "--root", str(tmp_path), "--ddp", "--nan-at", "5", "--nan-rank", "1",
             "--max-steps", "30"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outputs = [p.communicate(timeout=200) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    codes = [p.returncode for p in procs]
    assert codes == [HEALTH_EXIT_CODE, HEALTH_EXIT_CODE], [err[-1500:] for _, err in outputs]
    for rank, (_, err) in enumerate(outputs):
        assert f"HealthGuard[rank {rank}]: health check 'nonfinite_loss' failed at step 6 on rank 1" in err
    (run,) = RunLayout.list_runs(tmp_path)  # both ranks agreed on one run folder
    record = signals.read_signal(run.signals_dir, run.name, "failed")
    assert (record["check"], record["step"], record["rank"]) == ("nonfinite_loss", 6, 1)
    assert math.isnan(record["loss"])  # rank 1's loss, not rank 0's finite one
    assert record["ranks"] == {"0": "nonfinite_grad_norm", "1": "nonfinite_loss"}  # NaN grads reached rank 0
    assert read_json(run.summary_json)["status"] == "failed"
