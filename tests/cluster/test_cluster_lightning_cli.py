"""A real LightningCLI fit with RunLogger and the callbacks configured by class_path in YAML."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from lightning.pytorch.cli import LightningCLI
from omegaconf import OmegaConf

from lightning_track import RunLayout, read_metrics
from lightning_track.training.demo import DemoDataModule, DemoModule
from lightning_track.training.lightning_cli import RunConfigCallback


def write_cli_yaml(path: Path, root: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "seed_everything": 0,
        "trainer": {
            "max_steps": 6, "accelerator": "cpu", "devices": 1, "log_every_n_steps": 1,
            "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0,
            "limit_val_batches": 2, "val_check_interval": 3,
            "logger": {"class_path": "lightning_track.RunLogger",
                       "init_args": {"dataset": "blobs", "method": "cli", "root": str(root), "sinks": ["tensorboard"],
                                     "config": {"hf_token": "s3cret", "note": "from yaml"},
                                     "metric_modes": {"val/acc": "max"}}},
            "callbacks": [
                {"class_path": "lightning_track.StepCheckpoint", "init_args": {"every_n_steps": 2, "start_step": 2}},
                {"class_path": "lightning_track.HealthGuard", "init_args": {"warmup_steps": 3}},
                {"class_path": "lightning_track.PreemptionHandler"},
            ],
        },
        "model": {"hidden": 32, "max_steps": 6},
        "data": {"batch_size": 16, "n_train": 256, "n_val": 64},
    }))
    return path


def run_cli(*args: str) -> LightningCLI:
    return LightningCLI(DemoModule, DemoDataModule, args=list(args), save_config_callback=RunConfigCallback)


@pytest.mark.slow
def test_lightning_cli_fit_and_resume_with_class_path_yaml(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    config = write_cli_yaml(tmp_path / "cli.yaml", root)
    cli = run_cli("fit", "--config", str(config))
    (run,) = RunLayout.list_runs(root)
    assert cli.trainer.log_dir == str(run.run_dir)
    assert [s for s, _ in run.step_checkpoints()] == [2, 4, 6]
    assert [r.step for r in read_metrics(run.metrics_jsonl) if "train/loss" in r.metrics] == list(range(1, 7))
    summary = json.loads(run.summary_json.read_text())
    assert summary["status"] == "completed" and summary["best"]["val/acc"]["mode"] == "max"
    written = OmegaConf.load(run.config_yaml)
    # one config.yaml: the CLI's full config, the logger's own config and the hyperparameters, merged
    assert written.trainer.max_steps == 6 and written.data.batch_size == 16 and written.model.hidden == 32
    assert written.trainer.logger.class_path == "lightning_track.RunLogger"
    assert written.note == "from yaml" and written.hf_token == "***REDACTED***"
    assert "s3cret" not in run.config_yaml.read_text()
    assert "_instantiator" not in written  # Lightning's LightningCLI bookkeeping is not a setting
    assert (run.signals_dir / f"{run.name}.healthy").exists()

    # Resuming: Lightning's SaveConfigCallback would refuse (config.yaml exists); this one merges.
    run_cli("fit", "--config", str(config), "--trainer.max_steps", "8", "--model.max_steps", "8",
            "--trainer.logger.init_args.resume", "true", "--ckpt_path", "last")
    assert [r.name for r in RunLayout.list_runs(root)] == [run.name]
    summary = json.loads(run.summary_json.read_text())
    assert summary["status"] == "completed" and summary["attempts"][-1]["from_step"] == 6
    assert OmegaConf.load(run.config_yaml).trainer.max_steps == 8
    assert [r.step for r in read_metrics(run.metrics_jsonl) if "train/loss" in r.metrics] == list(range(1, 9))


def test_plain_save_config_callback_config_is_kept_and_redacted(tmp_path: Path) -> None:
    """With Lightning's default SaveConfigCallback (it writes config.yaml at setup, before the run
    starts), the run's config.yaml keeps the CLI's config, merged with the logger's, secrets redacted."""
    config = write_cli_yaml(tmp_path / "cli.yaml", tmp_path / "runs")
    LightningCLI(DemoModule, DemoDataModule, args=["fit", "--config", str(config), "--trainer.max_steps", "2"])
    (run,) = RunLayout.list_runs(tmp_path / "runs")
    saved = OmegaConf.to_container(OmegaConf.load(run.config_yaml))
    assert saved["model"]["hidden"] == 32 and saved["data"]["batch_size"] == 16  # the CLI's
    assert saved["note"] == "from yaml"  # the logger's config=
    assert "s3cret" not in run.config_yaml.read_text()
