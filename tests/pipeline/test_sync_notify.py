"""``lt sync --every --notify``: the viewer's side tells a real HTTP server what happened to mirrored runs
(real trainings, a real SIGKILL, a real restart of the watcher); and the watcher's pure event rules."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pipeline_support import TRAIN, Webhook, fields
from support.processes import script_env
from test_notify import closed_port

from lightning_track.launch.notify import Notifier
from lightning_track.sync.watch import RunWatch, run_events
from lightning_track.vocabulary import iso_time


def test_run_events_follow_the_summary() -> None:
    now = time.time()
    running = {"status": "running", "heartbeat": iso_time(now - 5), "exp_id": "e"}
    assert run_events(running, healthy=False, now=now, stale_after=120) == []
    assert [e for e, _, _ in run_events(running, healthy=True, now=now, stale_after=120)] == ["healthy"]
    [(event, line, extra)] = run_events(running, healthy=False, now=now, stale_after=3)
    assert event == "stale" and line.startswith("no heartbeat for") and extra["exp_id"] == "e"
    failed = {"status": "failed", "failure": {"check": "nonfinite_loss", "value": "nan", "step": 3,
                                             "reason": "loss is nan"}}
    [(event, line, extra)] = run_events(failed, healthy=False, now=now, stale_after=3)
    assert (event, line, extra["check"], extra["step"]) == ("failed", "failed: loss is nan", "nonfinite_loss", 3)
    done = {"status": "completed", "last_step": 9, "final": {"loss": {"value": 0.5, "step": 9}},
            "best": {"loss": {"value": 0.25, "step": 4, "mode": "min"}}}
    [(event, line, extra)] = run_events(done, healthy=False, now=now, stale_after=3)
    assert (event, line, extra["final"], extra["best"]) == ("completed", "completed at step 9", {"loss": 0.5},
                                                             {"loss": 0.25})


def test_a_stalled_run_is_told_once(tmp_path: Path, webhook: Webhook) -> None:
    """Alive (fresh heartbeat) but no step for longer than the run's rule: one ``stalled`` notification."""
    now = time.time()
    run = tmp_path / "runs" / "toy_m_20261201_101010"
    run.mkdir(parents=True)
    summary = {"run_name": run.name, "status": "running", "start_time": iso_time(now - 100),
               "heartbeat": iso_time(now - 1), "attempts": [{"attempt": 1, "status": "running"}],
               "progress": {"step": 40, "time": iso_time(now - 30), "step_time_s": 0.1},
               "stall_rule": {"factor": 10, "floor_s": 5}}
    (run / "summary.json").write_text(json.dumps(summary))
    [(event, line, extra)] = run_events(summary, healthy=False, now=now, stale_after=120)
    assert event == "stalled" and line.startswith("stalled: no step for 30s after step 40") and extra["step"] == 40
    notifier = Notifier([webhook.url])
    watch = RunWatch(tmp_path / "runs", notifier, state_path=tmp_path / "sync.notified.json")
    assert watch.check(now) == [(run.name, "stalled")]
    assert watch.check(now + 5) == []  # told once per attempt
    notifier.close()
    item = webhook.wait_for(lambda i: i["title"] == f"{run.name}: stalled")
    assert item["type"] == "failure" and fields(item)["step"] == "40"
    assert [i["title"] for i in webhook.received] == [f"{run.name}: stalled"]


def _watcher(src: Path, dest: Path, state: Path, *urls: str) -> subprocess.Popen[str]:
    notify = [a for url in urls for a in ("--notify", url)]
    return subprocess.Popen([sys.executable, "-m", "lightning_track.cli.lt", "sync", str(src), str(dest), "--every",
                             "0.5", "--stale", "10", "--state", str(state), "-q", *notify],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=script_env())


def _stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    return proc.returncode, err


def _train(src: Path, exp_id: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lightning_track.cli.run", "--exp-id", exp_id, "--signals-dir",
                           str(src / "signals"), "--", sys.executable, str(TRAIN), str(src), *args],
                          capture_output=True, text=True, env=script_env(), timeout=120)


def _run_name(src: Path, exp_id: str) -> str:
    return Path((src / "signals" / f"{exp_id}.run").read_text().strip()).name


@pytest.mark.slow
def test_the_watcher_notifies_each_event_once_across_a_restart(tmp_path: Path, webhook: Webhook) -> None:
    src, dest, state = tmp_path / "runs", tmp_path / "mirror", tmp_path / "sync.jsonl"
    src.mkdir()
    down = f"json://127.0.0.1:{closed_port()}/down"
    watcher = _watcher(src, dest, state, webhook.url, down)
    assert _train(src, "good", "--steps", "8").returncode == 0
    good = _run_name(src, "good")
    healthy = webhook.wait_for(lambda i: i["title"] == f"{good}: healthy")
    assert fields(healthy)["exp_id"] == "good" and fields(healthy)["run"] == good
    done = webhook.wait_for(lambda i: i["title"] == f"{good}: completed")
    assert done["type"] == "success" and "train/loss=" in fields(done)["best"]

    killed = subprocess.Popen([sys.executable, str(TRAIN), str(src), "--steps", "100000", "--step-sleep", "0.05"],
                              env=script_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(src.glob("toy_pipeline_*/summary.json"))[1:] and time.monotonic() < deadline:
        time.sleep(0.2)
    killed.kill()  # as the OOM killer does: no word in the run folder
    killed.wait()
    silent = next(p.name for p in src.glob("toy_pipeline_*") if p.name != good)
    stale = webhook.wait_for(lambda i: i["title"] == f"{silent}: stale", timeout=40)
    assert stale["type"] == "failure" and "no heartbeat for" in stale["message"].splitlines()[0]
    code, err = _stop(watcher)
    assert code == 0
    undelivered = [ln for ln in err.splitlines() if "not delivered" in ln]
    assert len(undelivered) == 3 and all(ln.startswith("lt-sync: notification '") and "json://…#" in ln
                                         for ln in undelivered)
    notified = json.loads((tmp_path / "sync.notified.json").read_text())["sent"]
    assert f"{good}#1#completed" in notified and f"{silent}#1#stale" in notified

    before = len(webhook.received)
    watcher = _watcher(src, dest, state, webhook.url)
    assert _train(src, "bad", "--nan-at", "3").returncode == 86
    bad = _run_name(src, "bad")
    failed = webhook.wait_for(lambda i: i["title"] == f"{bad}: failed")
    failure = json.loads((dest / bad / "summary.json").read_text())["failure"]  # the mirror's copy
    assert fields(failed)["check"] == "nonfinite_loss" and fields(failed)["step"] == str(failure["step"])
    time.sleep(1.5)  # a few more passes
    assert _stop(watcher)[0] == 0
    titles: list[Any] = [i["title"] for i in webhook.received[before:]]
    assert titles == [f"{bad}: failed"]  # nothing sent twice after the restart
