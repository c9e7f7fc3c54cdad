"""lt-run: launching, health timeout, child-reported failure, signal forwarding, post-processing."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest
from support.health import SCRIPT, fit, subprocess_env
from support.processes import sigint_ignored

from lightning_track import HealthGuard
from lightning_track.cli.run import main
from lightning_track.folder import signals
from lightning_track.folder.fileio import read_json
from lightning_track.folder.layout import RunLayout
from lightning_track.launch.runner import default_exp_id, run_command
from lightning_track.vocabulary import exit_status

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.mark.slow
def test_never_healthy_command_is_terminated(tmp_path):
    start = time.monotonic()
    result = run_command(SLEEPER, exp_id="sleepy", signals_dir=tmp_path, health_time=1, grace=5,
                         poll_interval=0.05)
    assert time.monotonic() - start < 20
    assert result.child_returncode == -signal.SIGTERM and result.exit_code == 143
    assert result.outcome == "failed" and result.reason == "not healthy within 1 s" and not result.healthy
    record = signals.read_signal(tmp_path, "sleepy", "failed")
    assert record["check"] == "health_timeout" and record["threshold"] == 1 and record["writer"] == "lt-run"
    assert (tmp_path / "sleepy.failed").read_text().splitlines()[0] == "status: failed"


@pytest.mark.slow
def test_sigterm_ignored_means_sigkill_after_grace(tmp_path):
    # SIG_IGN survives exec, so the sleep really ignores SIGTERM (and sh starts in milliseconds).
    start = time.monotonic()
    result = run_command(["sh", "-c", 'trap "" TERM; exec sleep 60'], exp_id="stubborn", signals_dir=tmp_path,
                         health_time=1, grace=1, poll_interval=0.05)
    assert result.child_returncode == -signal.SIGKILL and result.exit_code == 137
    assert 2 <= time.monotonic() - start < 20
    assert signals.read_signal(tmp_path, "stubborn", "failed")["reason"] == "not healthy within 1 s"
    assert signals.read_signal(tmp_path, "stubborn", "failed")["killed_by"] == "SIGKILL"


@pytest.mark.slow
def test_failed_signal_from_the_child_stops_it(tmp_path):
    # A non-Python child writes the plain-text signal with the names lt-run exported to it.
    script = ('printf "status: failed\\nreason: boom\\n" '
              '> "$LIGHTNING_TRACK_SIGNALS_DIR/$LIGHTNING_TRACK_EXP_ID.failed"; exec sleep 60')
    result = run_command(["sh", "-c", script], exp_id="selfreport", signals_dir=tmp_path, grace=1, poll_interval=0.05)
    assert result.outcome == "failed" and result.reason == "boom"
    assert result.exit_code == 143  # killed by the SIGTERM lt-run sent after the grace period
    assert signals.read_signal(tmp_path, "selfreport", "failed") == {"status": "failed", "reason": "boom"}


@pytest.mark.slow
def test_sigterm_to_lt_run_is_forwarded_and_exit_code_is_the_childs(tmp_path):
    marker, ready = tmp_path / "got", tmp_path / "ready"
    code = ("import signal, sys, time, pathlib\n"
            "def h(n, f):\n"
            f"    pathlib.Path({str(marker)!r}).write_text(str(n)); sys.exit(7)\n"
            "signal.signal(signal.SIGTERM, h)\n"
            f"pathlib.Path({str(ready)!r}).touch()\n"
            "time.sleep(60)\n")

    def send_when_ready() -> None:  # like `kill <lt-run pid>` from another shell
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=send_when_ready, daemon=True)
    sender.start()
    result = run_command([sys.executable, "-c", code], exp_id="fwd", signals_dir=tmp_path, poll_interval=0.05)
    sender.join()
    assert marker.read_text() == str(int(signal.SIGTERM))
    assert result.exit_code == 7 and result.outcome == "failed"
    assert result.reason == "stopped: lt-run received SIGTERM (exit code 7)"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # lt-run's handler was removed again


@pytest.mark.slow
def test_lt_run_started_with_sigint_ignored_keeps_ignoring_it_and_stops_on_sigterm(tmp_path):
    """A script's `lt-run ... &`: the command inherits SIGINT ignored, so lt-run does not forward a SIGINT
    it could not act on (it would wait forever); SIGTERM stops both."""
    seen, ready = tmp_path / "sigint", tmp_path / "ready"
    code = ("import signal, sys, time, pathlib\n"
            "signal.signal(signal.SIGTERM, lambda n, f: sys.exit(7))\n"
            f"pathlib.Path({str(seen)!r}).write_text(str(signal.getsignal(signal.SIGINT)))\n"
            f"pathlib.Path({str(ready)!r}).touch()\n"
            "time.sleep(60)\n")

    def send_when_ready() -> None:  # a terminal's Ctrl+C, then `kill <lt-run pid>`
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=send_when_ready, daemon=True)
    with sigint_ignored():
        sender.start()
        result = run_command([sys.executable, "-c", code], exp_id="bg", signals_dir=tmp_path, poll_interval=0.05)
        sender.join()
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # lt-run left it as it found it
    assert seen.read_text() == str(signal.SIG_IGN)
    assert result.exit_code == 7 and result.reason == "stopped: lt-run received SIGTERM (exit code 7)"


@pytest.mark.slow
def test_plain_success_gets_done_and_a_failure_gets_failed(tmp_path):
    ok = run_command([sys.executable, "-c", "pass"], exp_id="ok", signals_dir=tmp_path)
    assert (ok.exit_code, ok.outcome) == (0, "done")
    assert signals.read_signal(tmp_path, "ok", "done")["exit_code"] == 0
    bad = run_command([sys.executable, "-c", "raise SystemExit(3)"], exp_id="bad", signals_dir=tmp_path)
    assert (bad.exit_code, bad.outcome, bad.reason) == (3, "failed", "exit code 3")
    assert signals.read_signal(tmp_path, "bad", "failed")["exit_code"] == 3


@pytest.mark.slow
def test_stale_signals_of_the_same_exp_id_are_ignored(tmp_path):
    signals.write_signal(tmp_path, "again", "failed", reason="last week's run")
    result = run_command([sys.executable, "-c", "pass"], exp_id="again", signals_dir=tmp_path)
    assert result.outcome == "done" and not (tmp_path / "again.failed").exists()


@pytest.mark.slow
def test_lt_run_cli_healthy_training_run_is_post_processed(tmp_path, monkeypatch, capsys):
    """lt-run -- python train.py: env tells the guard the exp id; run_dir comes back in the signal."""
    for key, value in subprocess_env().items():
        monkeypatch.setenv(key, value)
    code = main(["--exp-id", "cli-job", "--signals-dir", str(tmp_path / "sig"), "--health-time", "120", "--",
                 sys.executable, str(SCRIPT), "--root", str(tmp_path), "--max-steps", "20", "--warmup", "5"])
    err = capsys.readouterr().err
    assert code == 0, err[-2000:]
    assert "lt-run: healthy after" in err and "post-processed" in err
    healthy = signals.read_signal(tmp_path / "sig", "cli-job", "healthy")
    done = signals.read_signal(tmp_path / "sig", "cli-job", "done")
    (run,) = RunLayout.list_runs(tmp_path)
    assert healthy["step"] == 5 and done["step"] == 20 and done["run_dir"] == str(run.run_dir.resolve())
    assert done["pid"] != os.getpid()  # written by the child, not by lt-run
    summary = read_json(run.summary_json)
    assert summary["status"] == "completed" and summary["lt_run"] == {
        "exp_id": "cli-job", "exit_code": 0, "duration_s": summary["lt_run"]["duration_s"], "outcome": "done"}
    assert run.metrics_csv.read_text().splitlines()[0].startswith("step")
    assert "## Key results" in run.report_md.read_text() and "train/loss" in run.report_md.read_text()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pp")
    fit(root, HealthGuard(warmup_steps=5), max_steps=8)
    (run,) = RunLayout.list_runs(root)
    return run


@pytest.mark.slow
def test_post_process_cli_rebuilds_derived_files(finished_run, capsys):
    finished_run.metrics_csv.unlink()
    finished_run.report_md.unlink()
    jsonl_before = finished_run.metrics_jsonl.read_bytes()
    assert main(["--post-process", str(finished_run.run_dir)]) == 0
    rows = finished_run.metrics_csv.read_text().splitlines()
    assert rows[0].split(",")[0] == "step" and len(rows) == 1 + 8
    assert finished_run.report_md.read_text().startswith(f"# {finished_run.name}")
    assert finished_run.metrics_jsonl.read_bytes() == jsonl_before  # the source is never modified
    assert "status completed, 8 steps" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_errors_are_one_line_with_exit_2(tmp_path, capsys):
    assert main(["--post-process", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"lt-run: error: {tmp_path / 'nope'}: not a run folder (no such folder)"
    assert main(["--health-time", "5"]) == 2
    assert capsys.readouterr().err.strip() == "lt-run: error: no command given (usage: lt-run [options] -- CMD ...)"
    assert main(["--exp-id", "a/b", "--", "true"]) == 2
    assert "exp_id 'a/b' is not usable as a file name" in capsys.readouterr().err
    assert main(["--health-time", "-1", "--", "true"]) == 2
    assert main(["--", "/no/such/binary"]) == 2
    assert "cannot start /no/such/binary" in capsys.readouterr().err


def test_helpers():
    assert default_exp_id(["python", "scripts/train.py", "--lr", "1"]).startswith("train_")
    assert exit_status(-9) == 137 and exit_status(3) == 3
