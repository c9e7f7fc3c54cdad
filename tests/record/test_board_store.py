"""``lt board``'s store, read back with swanboard's own models and tag reader (what its API serves): a pass adds
only new whole lines, a status change reaches the board (a killed run's too), a torn last line waits, a
metrics.jsonl a resume made shorter is shown as it now is, a new process goes on where the last stopped, and one
store has one feeder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support.query import edit_summary

from lightning_track import RunLogger
from lightning_track.board import BoardStore, board_status, experiment_folder
from lightning_track.errors import ConfigError

pytest.importorskip("swanboard")


def board_points(store: Path, run: Path, key: str) -> list[tuple[int, float]]:
    """The points of ``key`` as swanboard's ``get_tag_data`` reads them from the store."""
    from swanboard.controller.utils import LOGS_CONFIGS, get_tag_files, read_tag_data
    from swanboard.db.models import Experiment, Tag

    experiment = Experiment.get(run_id=experiment_folder(run.resolve()))
    tag = Tag.filter(Tag.name == key, Tag.experiment_id == experiment.id).first()
    folder = store / experiment.run_id / "logs" / tag.folder
    data = [line for name in get_tag_files(str(folder), LOGS_CONFIGS) for line in read_tag_data(str(folder / name))]
    return [(line["index"], line["data"]) for line in sorted(data, key=lambda line: int(line["index"]))]


def status_of(run: Path) -> int:
    from swanboard.db.models import Experiment

    return Experiment.get(run_id=experiment_folder(run.resolve())).status


def file_points(run: Path, key: str) -> list[tuple[int, float]]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(line["step"], line["metrics"][key]) for line in lines if key in line["metrics"]]


def make_logger(root: Path) -> RunLogger:
    return RunLogger("store data", "m", root=root, sinks=(), console=False, system_interval=0, flush_interval=0.05,
                     config={"lr": 0.1})


def test_a_pass_adds_only_what_is_new_and_the_status_follows(tmp_path: Path) -> None:
    logger = make_logger(tmp_path / "runs")
    for step in range(5):
        logger.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    logger.flush()
    run = logger.run_dir
    with BoardStore(tmp_path / "store") as store:
        first = store.update([tmp_path / "runs"])
        assert (first.runs, first.new_runs, first.values) == (1, 1, 5)
        assert board_points(store.folder, run, "loss") == file_points(run, "loss") and status_of(run) == 0
        for step in range(5, 9):
            logger.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
        logger.finalize("success")
        second = store.update([tmp_path / "runs"])
        assert (second.new_runs, second.values) == (0, 4)
        assert board_points(store.folder, run, "loss") == file_points(run, "loss") and status_of(run) == 1
        assert store.update([tmp_path / "runs"]).values == 0
        config = (store.folder / experiment_folder(run.resolve()) / "files" / "config.yaml").read_text()
        assert "lr:" in config and "value: 0.1" in config
    with BoardStore(tmp_path / "store") as again:  # a new lt board on the same store: nothing read twice
        assert again.update([tmp_path / "runs"]).values == 0
        assert board_points(again.folder, run, "loss") == file_points(run, "loss")


def test_torn_lines_wait_and_a_shorter_file_rebuilds_the_run(tmp_path: Path) -> None:
    logger = make_logger(tmp_path / "made")
    for step in range(6):
        logger.log_metrics({"loss": float(step)}, step=step)
    logger.finalize("success")
    run = tmp_path / "runs" / logger.run_dir.name  # a copy we may change, as a mirror or a resume changes it
    shutil.copytree(logger.run_dir, run)
    # as a SIGKILL leaves it: "running", its heartbeat long ago
    edit_summary(run, status="running", heartbeat="2020-01-01T00:00:00+00:00", attempts=[])
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text("".join(lines) + '{"step": 6, "time": 1.0, "metr')  # a line still being written
    with BoardStore(tmp_path / "store") as store:
        assert store.update([run]).values == 6
        assert board_points(store.folder, run, "loss") == [(s, float(s)) for s in range(6)]
        assert status_of(run) == -1  # crashed, as lt ls judges it: the board's "stopped", not "running"
        with open(metrics, "a") as handle:
            handle.write('ics": {"loss": 6.0}}\n')
        assert store.update([run]).values == 1
        assert board_points(store.folder, run, "loss") == [(s, float(s)) for s in range(7)]

        metrics.write_text("".join(lines[:3]))  # a resume moved the later records aside
        result = store.update([run])
        assert result.rebuilt == 1 and result.values == 3
        assert board_points(store.folder, run, "loss") == [(0, 0.0), (1, 1.0), (2, 2.0)]
        from swanboard.db.models import Experiment

        assert Experiment.select().count() == 1


def test_one_feeder_per_store(tmp_path: Path) -> None:
    with BoardStore(tmp_path / "store"):
        with pytest.raises(ConfigError, match="another lt board is feeding this store; stop it, or give --dir"):
            BoardStore(tmp_path / "store")


def test_board_status_maps_our_words() -> None:
    assert [board_status(s) for s in ("running", "completed", "failed", "interrupted", "crashed", None)] == [
        0, 1, -1, -1, -1, 0]
    name = "x_y_20250101_000000"
    assert experiment_folder(Path("/a/runs", name)) != experiment_folder(Path("/b/runs", name))
    assert experiment_folder(Path("/a/runs", name)) == experiment_folder(Path("/a/runs", name))
    assert experiment_folder(Path("/a/runs", name)).startswith(name + "-")


def test_lt_board_on_a_busy_port_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from lightning_track.cli.board import main

    logger = make_logger(tmp_path / "runs")
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.finalize("success")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main([str(tmp_path / "runs"), "--dir", str(tmp_path / "store"), "--port", str(port)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == (f"lt board: --port {port}: cannot listen on 127.0.0.1:{port} (Address already in use);"
                                 " give another --port")
    assert main([str(tmp_path / "nothing"), "--dir", str(tmp_path / "store")]) == 1  # no run: one line, exit 1
    assert "no such folder" in capsys.readouterr().err
    inside = tmp_path / "runs" / "board"
    assert main([str(tmp_path / "runs"), "--dir", str(inside), "--once"]) == 2 and not inside.exists()
    assert capsys.readouterr().err.strip() == (f"lt board: --dir {inside}: the board's store would be in or over"
                                               f" {tmp_path / 'runs'}, which lt board only reads; give --dir a"
                                               " folder outside it")
