"""``lt board``: SwanLab's own board (swanboard) on run folders made without it, read through the board's HTTP
API as its web page reads it: every run side by side (a mirror's copy of a run beside the run), every metric
with the steps and values of metrics.jsonl, the config, the status; a run still training shows its new lines
while the board runs; the run folders are never written; a second build adds nothing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from support.processes import script_env
from support.readers import board_api
from support.sync import free_port
from support.system import require, which
from support.trainers import make_trainer

from lightning_track import RunLogger
from lightning_track.training.demo import DemoDataModule, DemoModule

pytest.importorskip("swanboard")

TRAIN = r"""
import sys, time
import lightning as L
from lightning_track import RunLogger
from lightning_track.training.demo import DemoDataModule, DemoModule

class Pace(L.Callback):
    def on_train_batch_end(self, trainer, *args):
        time.sleep(0.1)

logger = RunLogger("live data", "mlp", root=sys.argv[1], config={"lr": 0.05})
trainer = L.Trainer(max_steps=60, logger=logger, callbacks=[Pace()], enable_progress_bar=False,
                    enable_model_summary=False, enable_checkpointing=False, limit_val_batches=0, log_every_n_steps=1)
trainer.fit(DemoModule(max_steps=60), datamodule=DemoDataModule(n_train=512, n_val=32))
"""


def metric_points(run: Path) -> dict[str, list[tuple[int, float]]]:
    points: dict[str, list[tuple[int, float]]] = {}
    for line in run.joinpath("metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        for key, value in record["metrics"].items():
            points.setdefault(key, []).append((record["step"], value))
    return points


def shown(port: int, experiment: int, key: str) -> list[tuple[int, float]]:
    """The points of ``key`` as the board's chart fetches them."""
    tag = board_api(port, f"/api/v1/experiment/{experiment}/tag/{quote(key, safe='')}")
    return [(p["index"], p["data"]) for p in tag["list"]]


def charts(port: int, experiment: int) -> set[str]:
    return {c["name"] for c in board_api(port, f"/api/v1/experiment/{experiment}/chart")["charts"]}


def snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def wait_for(what: str, check, timeout: float = 90.0):  # noqa: ANN001
    """``check()``'s first true answer; a 404 meanwhile is a chart whose first lines are on their way."""
    import urllib.error

    deadline = time.monotonic() + timeout
    while True:
        try:
            got = check()
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
            got = None
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.3)


@pytest.mark.slow
def test_lt_board_shows_runs_made_without_the_board_side_by_side_and_live(tmp_path: Path) -> None:
    runs, mirror = tmp_path / "runs", tmp_path / "mirror"
    logger = RunLogger("board data", "mlp", root=runs, config={"model": {"lr": 0.01}, "seed": 3})
    trainer = make_trainer(tmp_path, max_steps=25, logger=logger, limit_val_batches=0)
    trainer.fit(DemoModule(max_steps=25), datamodule=DemoDataModule(n_train=512, n_val=32))
    logger.wait()  # plots/metrics.png is drawn after fit returns
    done = logger.layout.run_dir
    assert not logger.layout.swanlab_dir.exists()  # the default wrote no SwanLab run beside training
    shutil.copytree(done, mirror / "gpu1" / done.name)  # the same run as a mirror holds it: same name
    copy = mirror / "gpu1" / done.name
    before = {path: snapshot(path) for path in (done, copy)}
    expected = metric_points(done)
    assert {"train/loss", "epoch"} <= set(expected) and len(expected["train/loss"]) == 25

    port, store = free_port(), tmp_path / "store"
    env = script_env()
    with open(tmp_path / "board.out", "wb") as out:
        board = subprocess.Popen([sys.executable, "-m", "lightning_track.cli.lt", "board", str(runs), str(mirror),
                                  "--dir", str(store), "--port", str(port), "--every", "0.5"],
                                 stdout=out, stderr=subprocess.STDOUT, env=env)
    train = None
    try:
        wait_for("the board", lambda: board.poll() is not None or "SwanLab's board: http://127.0.0.1"
                 in (tmp_path / "board.out").read_text())
        assert board.poll() is None, (tmp_path / "board.out").read_text()
        project = board_api(port, "/api/v1/project")
        by_name = {e["name"]: e for e in project["experiments"]}
        assert len(by_name) == 2 and done.name in by_name, sorted(by_name)
        [mirrored] = [e for name, e in by_name.items() if name != done.name]
        assert mirrored["name"].startswith(done.name) and str(copy) in mirrored["description"]
        for experiment in by_name.values():
            assert experiment["status"] == 1  # completed: the board's "finished"
            assert experiment["config"]["model"]["value"] == {"lr": 0.01} and experiment["config"]["seed"]["value"] == 3
            assert set(expected) <= charts(port, experiment["id"])
            for key, points in expected.items():
                assert shown(port, experiment["id"], key) == points, key

        # The board's own page (its JavaScript, in headless Chromium) lists both runs.
        require("chromium")  # skipped by name where it is missing (a failure under CI, which installs it)
        page = subprocess.run([which("chromium|chromium-browser"), "--headless", "--no-sandbox", "--disable-gpu",
                               "--disable-background-networking", "--no-first-run",
                               f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=8000",
                               "--window-size=1280,2000", "--dump-dom", f"http://127.0.0.1:{port}/"],
                              capture_output=True, text=True, timeout=120)
        assert all(name in page.stdout for name in by_name), page.stderr[-2000:]

        # A run that trains while the board runs: it shows as running, then its lines arrive, then finished.
        train = subprocess.Popen([sys.executable, "-c", TRAIN, str(runs)], env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)

        def live() -> dict | None:
            found = [e for e in board_api(port, "/api/v1/project")["experiments"] if e["name"].startswith("live-data")]
            return found[0] if found and found[0]["status"] == 0 and found[0]["id"] else None

        experiment = wait_for("the live run on the board, running", live)
        partial = wait_for("the live run's first lines", lambda: "train/loss" in charts(port, experiment["id"])
                           and shown(port, experiment["id"], "train/loss"))
        assert 0 < len(partial) < 60  # shown before the run finished
        assert train.wait(120) == 0
        [live_dir] = [p for p in runs.iterdir() if p.name.startswith("live-data")]
        final = metric_points(live_dir)
        wait_for("the live run finished on the board", lambda: board_api(port, f"/api/v1/experiment/{experiment['id']}")
                 ["status"] == 1 and shown(port, experiment["id"], "train/loss") == final["train/loss"])
        for key, points in final.items():
            assert shown(port, experiment["id"], key) == points, key
    finally:
        if train is not None and train.poll() is None:
            train.kill()
        board.send_signal(signal.SIGTERM)
        code = board.wait(30)
    assert code == 0, (tmp_path / "board.out").read_text()
    with pytest.raises(ConnectionRefusedError):  # the board process went with it
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    after = {path: snapshot(path) for path in (done, copy)}
    for path in (done, copy):  # the run folders were only read
        assert after[path] == before[path], [n for n in after[path] if after[path][n] != before[path].board_api(n)]

    again = subprocess.run([sys.executable, "-m", "lightning_track.cli.lt", "board", str(runs), str(mirror),
                            "--dir", str(store), "--once"], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"board store {store}: 3 runs, 0 new values"
    # swanboard's own models read the store: still three experiments
    from swanboard.db import connect
    from swanboard.db.models import Experiment

    connect(path=str(store))
    assert Experiment.select().count() == 3
    assert os.path.exists(store / "runs.swanlab")
