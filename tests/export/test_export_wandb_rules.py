"""W&B export's pure rules: the target, one history row per step in step order, what a running run holds
back, the exit code, and the CLI's one-line refusals."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from lightning_track.cli.lt import main as lt_main
from lightning_track.export.target import parse_target
from lightning_track.export.wandb import exit_code, held_back, history_rows
from lightning_track.folder.records import MetricRecord


def test_wandb_targets_are_each_runs_folder_or_one_absolute_dir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    plain = parse_target("wandb", environ={})
    assert (plain.tracker, plain.uri, plain.dir) == ("wandb", "wandb", None)
    under = parse_target("wandb:out", environ={})
    assert (under.tracker, under.uri, under.dir) == ("wandb", f"wandb:{tmp_path / 'out'}", str(tmp_path / "out"))
    assert parse_target("WandB", environ={"MLFLOW_TRACKING_URI": "mlflow://h:1"}).tracker == "wandb"


def test_records_become_one_row_per_step_in_step_order_and_a_changed_repeat_is_counted() -> None:
    records = [MetricRecord(2, 10.0, {"loss": 0.5}), MetricRecord(1, 9.0, {"loss": 0.9}),
               MetricRecord(2, 11.0, {"val": 0.7, "epoch": 0.0}), MetricRecord(2, 12.0, {"epoch": 0.0}),
               MetricRecord(3, 13.0, {"loss": math.nan}), MetricRecord(3, 14.0, {"loss": math.nan}),
               MetricRecord(1, 15.0, {"loss": 0.8})]
    rows, replaced = history_rows(records)
    assert [(r.step, r.time) for r in rows] == [(1, 15.0), (2, 12.0), (3, 14.0)]
    assert rows[0].values == {"loss": 0.8} and rows[1].values == {"loss": 0.5, "val": 0.7, "epoch": 0.0}
    assert math.isnan(rows[2].values["loss"])
    assert replaced == 1  # 0.9 -> 0.8 at step 1; the same epoch and the same NaN again are no change


def test_a_running_run_holds_back_its_last_step_and_a_finished_one_nothing() -> None:
    records = [MetricRecord(s, 0.0, {"x": 1.0}) for s in (1, 2, 2, 3, 3)]
    assert held_back(records, running=True) == 3 and held_back(records, running=False) == 5
    assert held_back(records[:1], running=True) == 0 and held_back([], running=True) == 0


def test_exit_codes_say_completed_failed_interrupted_and_crashed() -> None:
    assert [exit_code(s) for s in ("completed", "running", "failed", "interrupted", "crashed", "unknown")] == \
        [0, 0, 1, 130, 137, 1]


@pytest.mark.parametrize(("args", "says"), [
    (["--to", "wandbx"], "use one of: mlflow://HOST:PORT, http(s)://HOST[:PORT][/PATH], sqlite:///PATH.db, "
                         "$MLFLOW_TRACKING_URI, wandb[:DIR]"),
    (["--to", "mlflow://127.0.0.1:1", "--dir", "out"], "--dir 'out': only for --to wandb (offline W&B runs); "
                                                       "drop it for http://127.0.0.1:1"),
])
def test_bad_export_arguments_are_one_line_exit_2_and_nothing_written(args, says, tmp_path: Path, capsys) -> None:
    run = tmp_path / "runs" / "a_b_20260101_000000"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text('{"step": 1, "time": 1.0, "metrics": {"x": 1.0}}\n')
    assert lt_main(["export", str(run), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.rstrip().endswith(says)
    assert sorted(os.listdir(run)) == ["metrics.jsonl"] and not (tmp_path / "out").exists()
