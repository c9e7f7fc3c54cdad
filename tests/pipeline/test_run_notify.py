"""``lt run --notify URL -- CMD``: a single command sends what a pipeline step sends (healthy, done, failed with
its check, value and step, interrupted, stale), to a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pipeline_support import HERE, TRAIN, Webhook, fields
from support.processes import script_env

from lightning_track.cli.run import main as lt_run_main
from lightning_track.folder.signals import write_run_note
from lightning_track.launch.notices import CommandNotices
from lightning_track.launch.notify import Notifier
from lightning_track.launch.runner import RunResult
from lightning_track.vocabulary import iso_time

# what a pipeline step's notifications carry beside pipeline and pipeline_step (test_notify.py, docs/pipelines.md)
STEP_FIELDS = {"healthy": ["event", "exp_id"], "done": ["event", "exp_id", "run_dir", "final", "best"],
               "failed": ["event", "exp_id", "run_dir", "check", "value", "step"],
               "interrupted": ["event", "exp_id", "run_dir"], "stale": ["event", "exp_id", "run_dir", "heartbeat"]}


def result(exit_code: int, run_dir: Path | None, **kw) -> RunResult:
    return RunResult(exit_code=exit_code, child_returncode=exit_code, exp_id="train_x", outcome="failed",
                     reason=kw.pop("reason", None), healthy=True, duration_s=1.25, run_dir=run_dir, **kw)


def test_the_events_and_fields_of_one_command(tmp_path: Path, webhook: Webhook) -> None:
    run = tmp_path / "runs" / "toy_lora_20260101_000000"
    run.mkdir(parents=True)
    summary = {"final": {"train/loss": {"value": 0.5, "step": 20}}, "best": {"train/loss": {"value": 0.25, "step": 9}}}
    notifier = Notifier([webhook.url])
    notices = CommandNotices(notifier, "train_x", tmp_path / "signals")
    notices.on_event("healthy", "healthy after 2.0 s")
    notices.on_event("start", "pid 1: python train.py")  # not an event anyone is told
    notices.finished(result(0, run, summary=summary))
    nan = {"check": "nonfinite_loss", "value": "NaN", "step": 4, "reason": "loss is nan at step 4"}
    notices.finished(result(86, run, reason="loss is nan at step 4", signals={"failed": nan}))
    notices.finished(result(130, run, reason="interrupted by SIGINT", interrupted=True))
    notifier.close()
    got = {item["title"]: item for item in webhook.received}
    assert list(got) == ["train_x: healthy", "train_x: done", "train_x: failed", "train_x: interrupted"]
    for title, item in got.items():
        event = title.split(": ")[1]
        assert list(fields(item)) == STEP_FIELDS[event], title
    done, failed = fields(got["train_x: done"]), fields(got["train_x: failed"])
    assert done["run_dir"] == str(run) and done["final"] == "train/loss=0.5" and done["best"] == "train/loss=0.25"
    assert (failed["check"], failed["value"], failed["step"]) == ("nonfinite_loss", "NaN", "4")
    assert got["train_x: failed"]["message"].splitlines()[0] == "train_x: loss is nan at step 4"
    assert got["train_x: failed"]["type"] == "failure" and got["train_x: interrupted"]["type"] == "warning"


def test_a_silent_run_is_told_stale_once(tmp_path: Path, webhook: Webhook) -> None:
    run = tmp_path / "runs" / "toy_lora_20260101_000000"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"status": "running", "heartbeat": iso_time(time.time() - 600),
                                                  "start_time": iso_time(time.time() - 900)}))
    write_run_note(tmp_path / "signals", "train_x", run)
    notifier = Notifier([webhook.url])
    lines: list[str] = []
    with CommandNotices(notifier, "train_x", tmp_path / "signals", stale_after=0.1, log=lines.append):
        stale = webhook.wait_for(lambda i: i["title"] == "train_x: stale", timeout=10)
        time.sleep(0.3)  # more watch turns: still told once
    notifier.close()
    assert list(fields(stale)) == STEP_FIELDS["stale"] and fields(stale)["run_dir"] == str(run)
    assert stale["message"].startswith("train_x: no heartbeat for 10m") and stale["type"] == "failure"
    assert len([i for i in webhook.received if i["title"] == "train_x: stale"]) == 1 and len(lines) == 1


def test_notify_arguments_are_checked_before_anything_starts(tmp_path: Path, capsys) -> None:
    marker = tmp_path / "ran"
    assert lt_run_main(["--notify", "nowhere://x", "--", "touch", str(marker)]) == 2
    assert ": not a URL apprise understands" in capsys.readouterr().err
    assert not marker.exists()
    assert lt_run_main(["--notify", "json://127.0.0.1/x", "--post-process", str(tmp_path)]) == 2
    assert "--notify goes with a command" in capsys.readouterr().err


def lt_run(tmp_path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "lightning_track.cli.lt", "run", "--signals-dir", str(tmp_path / "signals"), *args]


@pytest.mark.slow
def test_lt_run_notify_a_training_that_fails_its_health_check(tmp_path: Path, webhook: Webhook) -> None:
    root = str(tmp_path / "runs")
    bad = subprocess.run(lt_run(tmp_path, "--exp-id", "bad", "--notify", webhook.url, "--", sys.executable,
                                str(TRAIN), root, "--nan-at", "3"), capture_output=True, text=True, env=script_env(),
                         timeout=240)
    assert bad.returncode == 86, bad.stderr[-3000:]
    failed = webhook.wait_for(lambda i: i["title"] == "bad: failed")
    assert {k: fields(failed)[k] for k in ("check", "value", "step")} == {
        "check": "nonfinite_loss", "value": "nan", "step": "4"}
    assert fields(failed)["run_dir"].startswith(root) and failed["type"] == "failure"
    assert [i["title"] for i in webhook.received] == ["bad: failed"]


HEALTHY_THEN_EXIT = ("import os, sys, time; from lightning_track.folder.signals import write_signal; "
                     "write_signal(os.environ['LIGHTNING_TRACK_SIGNALS_DIR'], os.environ['LIGHTNING_TRACK_EXP_ID'], "
                     "'healthy', step=5); time.sleep(1); sys.exit(int(sys.argv[1]))")  # lt-run looks 4x a second


@pytest.mark.slow
def test_lt_run_notify_healthy_then_done_or_an_exit_code(tmp_path: Path, webhook: Webhook) -> None:
    for exp_id, code in (("ok", 0), ("three", 3)):
        done = subprocess.run(lt_run(tmp_path, "--exp-id", exp_id, "--notify", webhook.url, "--", sys.executable,
                                     "-c", HEALTHY_THEN_EXIT, str(code)),
                              capture_output=True, text=True, env=script_env(), timeout=60)
        assert done.returncode == code, done.stderr
    assert [i["title"] for i in webhook.received] == ["ok: healthy", "ok: done", "three: healthy", "three: failed"]
    assert webhook.received[0]["message"].startswith("ok: healthy after ")
    assert webhook.received[3]["message"].splitlines()[0] == "three: exit code 3"


@pytest.mark.slow
def test_lt_run_notify_stale_then_interrupted(tmp_path: Path, webhook: Webhook) -> None:
    run = tmp_path / "runs" / "x"
    proc = subprocess.Popen(lt_run(tmp_path, "--exp-id", "silent", "--notify", webhook.url, "--stale", "1",
                                   "--grace", "5", "--", sys.executable, str(HERE / "stale_step_script.py"), str(run),
                                   "60"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=script_env())
    stale = webhook.wait_for(lambda i: i["title"] == "silent: stale", timeout=30)
    assert "no heartbeat for" in stale["message"].splitlines()[0] and fields(stale)["run_dir"] == str(run)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    interrupted = webhook.wait_for(lambda i: i["title"] == "silent: interrupted")
    assert interrupted["type"] == "warning" and fields(interrupted)["run_dir"] == str(run)
    assert len([i for i in webhook.received if i["title"] == "silent: stale"]) == 1
