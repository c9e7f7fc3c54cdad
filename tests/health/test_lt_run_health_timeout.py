"""lt-run stops a command that is slow to become healthy, and the run folder still says so.

The real ``lt-run`` console script runs a real training script whose warmup cannot finish in time:
lt-run must know the run folder although no health signal ever named it, post-process it, and put
its own verdict (``health_timeout``) into the run's ``summary.json`` and report, over the record the
command made of the SIGTERM that stopped it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from support.health import SCRIPT, subprocess_env

from lightning_track import HEALTH_EXIT_CODE
from lightning_track.folder import signals
from lightning_track.folder.fileio import read_json
from lightning_track.folder.layout import RunLayout

pytestmark = pytest.mark.slow  # starts lt-run, which starts a training process


def lt_run_cmd() -> list[str]:
    found = shutil.which("lt-run")
    return [found] if found else [sys.executable, "-m", "lightning_track.cli.run"]



# Long enough for the command to import Lightning (~4-7 s on 2 busy cores; torchmetrics imports scipy when
# it is installed) and name its run folder before lt-run gives up on it.
HEALTH_TIME = 20

@pytest.mark.timeout(180)
def test_health_timeout_is_post_processed_into_the_run(tmp_path):
    sig = tmp_path / "sig"
    cmd = [*lt_run_cmd(), "--signals-dir", str(sig), "--health-time", str(HEALTH_TIME), "--grace", "20", "--",
           sys.executable, str(SCRIPT), "--root", str(tmp_path / "runs"), "--max-steps", "100000",
           "--warmup", "100000", "--step-sleep", "0.02"]
    proc = subprocess.run(cmd, env=subprocess_env(), cwd=tmp_path, capture_output=True, text=True, timeout=150)
    err = proc.stderr
    assert proc.returncode == HEALTH_EXIT_CODE, err[-3000:]  # Lightning exits 0 after SIGTERM; lt-run says 86
    assert f"not healthy within {HEALTH_TIME} s" in err
    assert "no run folder known" not in err and "post-processed" in err

    (run,) = RunLayout.list_runs(tmp_path / "runs")
    run_dir = str(run.run_dir.resolve())
    (failed_json,) = sig.glob("*.failed.json")
    exp_id = failed_json.name[: -len(".failed.json")]
    assert exp_id.startswith("health_train_script_")  # lt-run's default: <script>_<time>
    # the run folder was made known as soon as it existed, under the signals' name
    assert (sig / f"{exp_id}.run").read_text(encoding="utf-8") == run_dir + "\n"
    record = signals.read_signal(sig, exp_id, "failed")
    assert record["check"] == "health_timeout" and record["writer"] == "lt-run" and record["run_dir"] == run_dir

    summary = read_json(run.summary_json)
    assert summary["status"] == "failed"
    assert summary["failure"]["check"] == "health_timeout" and summary["failure"]["threshold"] == HEALTH_TIME
    assert summary["lt_run"]["exp_id"] == exp_id and summary["lt_run"]["outcome"] == "failed"
    assert summary["lt_run"]["child_failure"]["check"] == "terminated"  # what the command recorded, kept
    head = "\n".join(run.report_md.read_text().splitlines()[:6])
    assert f"**Failed: health_timeout**: not healthy within {HEALTH_TIME} s" in head
    assert f"threshold: {HEALTH_TIME}" in head
    assert run.metrics_csv.exists()


@pytest.mark.timeout(180)
def test_health_timeout_of_a_command_with_a_run_logger_and_no_guard(tmp_path):
    """No HealthGuard: the RunLogger itself names the run folder to lt-run as soon as it is decided."""
    sig = tmp_path / "sig"
    cmd = [*lt_run_cmd(), "--signals-dir", str(sig), "--exp-id", "noguard", "--health-time", str(HEALTH_TIME),
           "--grace", "20", "--", sys.executable, str(SCRIPT), "--root", str(tmp_path / "runs"),
           "--max-steps", "100000", "--step-sleep", "0.02", "--no-guard"]
    proc = subprocess.run(cmd, env=subprocess_env(), cwd=tmp_path, capture_output=True, text=True, timeout=150)
    err = proc.stderr
    assert proc.returncode == HEALTH_EXIT_CODE, err[-3000:]
    assert "no run folder known" not in err and "post-processed" in err
    (run,) = RunLayout.list_runs(tmp_path / "runs")
    assert signals.read_run_note(sig, "noguard") == run.run_dir.resolve()
    summary = read_json(run.summary_json)
    assert summary["status"] == "failed" and summary["failure"]["check"] == "health_timeout"
    assert summary["exp_id"] == "noguard"  # the run names its signal files
