"""lt-demo, the README's main command: a small real training run that writes a complete run folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from readers import swanlab_runs, tensorboard_scalars

from lightning_track import RunLayout, load_final_model, read_metrics
from lightning_track.cli.demo import main
from lightning_track.training.demo import DEMO_CONFIG, DemoModule

REPO = Path(__file__).resolve().parents[2]


def test_packaged_demo_config_is_the_repo_one() -> None:
    assert DEMO_CONFIG.read_text() == (REPO / "configs" / "demo.yaml").read_text()


def test_lt_demo_writes_a_complete_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "runs"
    code = main(["--quiet", f"logger.root={root}", "trainer.max_steps=30", "trainer.val_check_interval=15",
                 "callbacks.step_checkpoint.start_step=10", "callbacks.step_checkpoint.every_n_steps=10"])
    assert code == 0
    (run,) = RunLayout.list_runs(root)
    out = capsys.readouterr().out
    assert f"Run folder: {run.run_dir}" in out and f"tensorboard --logdir {root}" in out

    # every part of the run-folder contract is there
    assert [s for s, _ in run.step_checkpoints()] == [10, 20, 30]
    assert run.last_checkpoint.is_symlink() and run.last_checkpoint.resolve() == run.checkpoint_path(30)
    assert len(swanlab_runs(run.swanlab_dir)) == 1
    assert [s for s, _, _ in tensorboard_scalars(run.tensorboard_dir)["train/loss"]] == list(range(30))
    assert [r.step for r in read_metrics(run.metrics_jsonl) if "train/loss" in r.metrics] == list(range(30))
    summary = json.loads(run.summary_json.read_text())
    assert summary["status"] == "completed" and "val/acc" in summary["best"]
    assert OmegaConf.load(run.config_yaml).trainer.max_steps == 30
    assert json.loads(run.meta_json.read_text())["dataset"] == "synthetic-blobs"
    tracked = [json.loads(line) for line in run.batch_tracking_jsonl.read_text().splitlines()]
    assert [t["step"] for t in tracked] == list(range(1, 31)) and all(len(t["line_indices"]) == 32 for t in tracked)
    mapping = json.loads(run.checkpoint_mapping_json.read_text())
    assert sorted(mapping) == ["checkpoint-step-010", "checkpoint-step-020", "checkpoint-step-030"]
    assert json.loads(run.line_checkpoint_mapping_json.read_text())
    assert (run.signals_dir / f"{run.name}.healthy").exists() and (run.signals_dir / f"{run.name}.done").exists()
    model = load_final_model(run.final_model_dir, DemoModule)
    assert isinstance(model, DemoModule) and (run.final_model_dir / "README.md").exists()
    assert run.metrics_csv.exists() and run.report_md.exists()


def test_lt_demo_bad_override_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--quiet", f"logger.root={tmp_path}", "callbacks.step_checkpoint.evry_n_steps=3"])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("lt-demo: error:") and "evry_n_steps" in err and "\n" not in err
    assert RunLayout.list_runs(tmp_path) == []


def test_lt_demo_unknown_trainer_key_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--quiet", f"logger.root={tmp_path}", "trainer.max_stepz=3"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("lt-demo: error:") and "max_stepz" in err and "\n" not in err
    assert RunLayout.list_runs(tmp_path) == []
