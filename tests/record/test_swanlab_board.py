"""SwanLab's own local board (``swanlab watch <run>/swanlab_logs``, the swanboard package) shows a RunLogger
run: the run listed, every metric with the steps and values of metrics.jsonl, images and text, the config, the console
(logs.txt) and the system samples, read through the board's HTTP API as its web page reads them. The same
SwanLab run keeps the record ``swanlab sync`` uploads."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

import lightning as L
import numpy as np
import pytest
from PIL import Image
from support.readers import WITH_SWANLAB, board_api, swanlab_records, swanlab_runs, swanlab_scalars
from support.sync import free_port
from support.trainers import make_trainer

from lightning_track import RunLayout, RunLogger
from lightning_track.errors import ConfigError
from lightning_track.training.demo import DemoDataModule, DemoModule

pytest.importorskip("swanboard")

MARKER = "lightning_track board test: a line printed while training"


class PrintAndPace(L.Callback):
    """Prints one known line and slows the steps a little, so the system sampler takes a few samples."""

    def on_train_start(self, trainer: L.Trainer, *args: Any) -> None:
        os.write(1, f"{MARKER}\n".encode())  # through the file descriptor (pytest replaces sys.stdout)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        time.sleep(0.03)
        if trainer.global_step == 3:
            trainer.logger.log_image("sample", np.arange(64, dtype=np.uint8).reshape(8, 8), caption="gray")
            trainer.logger.log_text("note", "hello board")


def start_board(folder: Path, port: int, log: Path) -> subprocess.Popen:
    """``swanlab watch FOLDER`` on 127.0.0.1:PORT, once it answers."""
    with open(log, "wb") as out:
        board = subprocess.Popen([sys.executable, "-m", "swanlab", "watch", str(folder), "--host", "127.0.0.1",
                                  "--port", str(port)], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if board.poll() is not None:
            pytest.fail(f"swanlab watch exited with {board.returncode}: {log.read_text()}")
        try:
            board_api(port, "/api/v1/project")
            return board
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.2)
    board.kill()
    pytest.fail(f"swanlab watch did not answer on port {port} in 60 s: {log.read_text()}")


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_swanlab_watch_shows_the_run_metrics_config_console_and_system(tmp_path: Path) -> None:
    logger = RunLogger("board data", "mlp", root=tmp_path / "runs", config={"model": {"lr": 0.01}, "seed": 3},
                       system_interval=0.25, sinks=WITH_SWANLAB)
    assert logger.swanlab_mode == "auto"  # the sink's default: the board's files where swanboard is installed
    trainer = make_trainer(tmp_path, max_steps=30, logger=logger, limit_val_batches=0, callbacks=[PrintAndPace()])
    trainer.fit(DemoModule(max_steps=30), datamodule=DemoDataModule(n_train=512, n_val=32))
    logger.wait()  # SwanLab's run is finished by the sink host after fit returns
    run = logger.layout
    expected: dict[str, list[tuple[int, float]]] = {}
    for line in jsonl(run.metrics_jsonl):
        for key, value in line["metrics"].items():
            expected.setdefault(key, []).append((line["step"], value))
    assert {"train/loss", "epoch"} <= set(expected) and len(expected["train/loss"]) == 30
    samples = jsonl(run.system_jsonl)
    assert samples, "the sampler took no sample"
    sampled = {(s["step"], s["metrics"]["system/proc_rss_gb"]) for s in samples}

    port = free_port()
    board = start_board(run.swanlab_dir, port, tmp_path / "board.log")  # the folder the README names
    try:
        project = board_api(port, "/api/v1/project")
        [experiment] = project["experiments"]
        assert experiment["name"] == run.name and experiment["status"] == 1  # finished, not crashed
        info = board_api(port, f"/api/v1/experiment/{experiment['id']}")
        assert info["config"]["model"]["value"] == {"lr": 0.01} and info["config"]["seed"]["value"] == 3
        assert info["system"]["runtime"]["hostname"] == socket.gethostname()

        charts = {chart["name"] for chart in board_api(port, f"/api/v1/experiment/{experiment['id']}/chart")["charts"]}
        assert set(expected) | {"system/proc_rss_gb", "sample", "note"} <= charts
        for key, points in expected.items():
            shown = board_api(port, f"/api/v1/experiment/{experiment['id']}/tag/{quote(key, safe='')}")
            assert [(p["index"], p["data"]) for p in shown["list"]] == points, key
        system = board_api(port, f"/api/v1/experiment/{experiment['id']}/tag/{quote('system/proc_rss_gb', safe='')}")
        assert system["list"] and {(p["index"], p["data"]) for p in system["list"]} <= sampled

        image = board_api(port, f"/api/v1/experiment/{experiment['id']}/tag/sample")["list"]
        assert [(p["index"], p["more"]) for p in image] == [(3, [{"caption": "gray"}])]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/media/{image[0]['data'][0]}?tag=sample"
                                    f"&experiment_id={experiment['id']}", timeout=10) as response:
            shown_pixels = np.asarray(Image.open(io.BytesIO(response.read())))
        ours = np.asarray(Image.open(run.run_dir / "media/sample/step-3-0.png"))
        assert np.array_equal(shown_pixels, ours)
        text = board_api(port, f"/api/v1/experiment/{experiment['id']}/tag/note")["list"]
        assert [(p["index"], p["data"]) for p in text] == [(3, ["hello board"])]

        console = board_api(port, f"/api/v1/experiment/{experiment['id']}/recent_log")["logs"]
        assert MARKER in console
        logs_txt = [line.split(" ", 1)[1] for line in run.logs_txt.read_text().splitlines()]
        assert [line for line in console if line] == logs_txt[:len([line for line in console if line])]

        # The board's server made no connection of its own: only its listening socket (and what we opened).
        import psutil

        remote = [c.raddr for c in psutil.Process(board.pid).net_connections() if c.raddr]
        assert all(address.ip == "127.0.0.1" for address in remote), remote
    finally:
        board.terminate()
        board.wait(10)

    # The same SwanLab run is what `swanlab sync` uploads: SwanLab's own reader finds it all in the record.
    [record_file] = swanlab_runs(run.swanlab_dir)
    scalars = swanlab_scalars(record_file)
    assert {key: scalars[key] for key in expected} == expected
    lines = [r.log.line for r in swanlab_records(record_file) if r.WhichOneof("record_type") == "log"]
    assert MARKER in lines


def test_an_unknown_swanlab_mode_is_refused_before_any_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="swanlab_mode='online'.*use one of 'auto', 'local', 'offline'"):
        RunLogger("d", "m", root=tmp_path / "runs", swanlab_mode="online")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_offline_mode_writes_the_record_and_swanlab_watch_says_lt_board(tmp_path: Path) -> None:
    """Offline: SwanLab's record, none of the board's files; ``swanlab watch`` on it, which SwanLab answers with
    "Cannot use uninitialized Proxy.", opens an empty board whose project names ``lt board <run>``."""
    logger = RunLogger("d", "m", root=tmp_path / "runs", swanlab_mode="offline", system_interval=0,
                       sinks=WITH_SWANLAB)
    trainer = make_trainer(tmp_path, max_steps=5, logger=logger, limit_val_batches=0)
    trainer.fit(DemoModule(max_steps=5), datamodule=DemoDataModule(n_train=64, n_val=8))
    logger.wait()  # SwanLab's run is finished by the sink host after fit returns
    swanlab_logs = logger.layout.swanlab_dir
    [record_file] = swanlab_runs(swanlab_logs)
    assert len(swanlab_scalars(record_file)["train/loss"]) == 5
    assert not (record_file.parent / "logs").exists()
    port = free_port()
    board = start_board(swanlab_logs, port, tmp_path / "board.log")  # fails on the error SwanLab gave
    try:
        project = board_api(port, "/api/v1/project")
    finally:
        board.terminate()
        board.wait(10)
    command = f"lt board {logger.layout.run_dir}"  # the project name, where it fits the board's 100 characters
    assert project["name"] == (command if len(command) <= 100 else "lt board <this run folder>")
    assert project["experiments"] == []
    assert f"lt board {logger.layout.run_dir} shows it on SwanLab's board" in project["description"]


AFTER_STOP = "lightning_track board test: printed after the board's stop"


class WatchMidRun(L.Callback):
    """At step 10: starts ``swanlab watch`` on the run being trained, reads it, presses the board's *stop*."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path, self.port = tmp_path, free_port()
        self.board: subprocess.Popen | None = None
        self.seen: dict[str, Any] = {}

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        time.sleep(0.03)
        if trainer.global_step == 15:  # a console line after the stop (the board checks its stop on those too)
            os.write(1, f"{AFTER_STOP}\n".encode())
            time.sleep(1.5)
        if trainer.global_step != 10:
            return
        database = trainer.logger.layout.swanlab_dir / RunLayout.SWANLAB_BOARD_DB
        deadline = time.monotonic() + 30
        while not database.exists() and time.monotonic() < deadline:  # the sink host opens SwanLab meanwhile
            time.sleep(0.1)
        time.sleep(1.5)  # a few flushes: the steps so far reach the board's files
        self.board = start_board(database.parent, self.port, self.tmp_path / "board.log")
        [experiment] = board_api(self.port, "/api/v1/project")["experiments"]
        self.seen["status"] = experiment["status"]
        self.seen["steps"] = board_api(self.port, f"/api/v1/experiment/{experiment['id']}/tag/train%2Floss")["sum"]
        self.seen["stopped"] = board_api(self.port, f"/api/v1/experiment/{experiment['id']}/stop")["status"]
        self.seen["id"] = experiment["id"]


@pytest.mark.slow
def test_the_board_is_live_and_its_stop_button_loses_nothing(tmp_path: Path) -> None:
    """Started while the run trains, the board shows it running with the steps so far; its *stop* button
    (which in SwanLab's own local mode ends SwanLab's writer thread) neither stops training nor loses a value:
    the same board, not restarted, shows every step once the run ends, and the record keeps them all."""
    watch = WatchMidRun(tmp_path)
    logger = RunLogger("board data", "live", root=tmp_path / "runs", system_interval=0, sinks=WITH_SWANLAB)
    trainer = make_trainer(tmp_path, max_steps=30, logger=logger, limit_val_batches=0, callbacks=[watch])
    try:
        trainer.fit(DemoModule(max_steps=30), datamodule=DemoDataModule(n_train=512, n_val=32))
        logger.wait()  # SwanLab's run is finished by the sink host after fit returns
        assert watch.board is not None, "the board was not started"
        assert watch.seen["status"] == 0 and 1 <= watch.seen["steps"] <= 10  # running, the steps so far
        assert watch.seen["stopped"] == -1  # the board took the stop
        losses = [(line["step"], line["metrics"]["train/loss"]) for line in jsonl(logger.layout.metrics_jsonl)]
        assert len(losses) == 30
        shown = board_api(watch.port, f"/api/v1/experiment/{watch.seen['id']}/tag/train%2Floss")["list"]
        assert [(p["index"], p["data"]) for p in shown] == losses
        [experiment] = board_api(watch.port, "/api/v1/project")["experiments"]
        assert experiment["status"] == 1  # finished: SwanLab's finish overrides the board's stop
    finally:
        if watch.board is not None:
            watch.board.terminate()
            watch.board.wait(10)
    [record_file] = swanlab_runs(logger.layout.swanlab_dir)
    assert swanlab_scalars(record_file)["train/loss"] == losses
    assert AFTER_STOP in [r.log.line for r in swanlab_records(record_file) if r.WhichOneof("record_type") == "log"]
