"""The learning rate is a metric by default: from_config and lt-demo add Lightning's LearningRateMonitor."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import OmegaConf
from support.readers import tensorboard_scalars

import lightning_track
from lightning_track import RunLayout, read_metrics
from lightning_track.cli.demo import main as demo_main
from lightning_track.training.configure import build_callbacks, trainer_kwargs
from lightning_track.training.demo import DemoDataModule, DemoModule


def _cfg(root: Path, callbacks: dict) -> OmegaConf:
    return OmegaConf.create({
        "logger": {"dataset": "blobs", "method": "lr", "root": str(root), "sinks": ["tensorboard"]},
        "callbacks": callbacks,
        "trainer": {"max_steps": 12, "accelerator": "cpu", "log_every_n_steps": 1, "enable_progress_bar": False,
                    "enable_model_summary": False, "limit_val_batches": 0, "num_sanity_val_steps": 0},
    })


def _expected_lr(step: int, lr: float = 0.02, warmup: int = 4, total: int = 12) -> float:
    """DemoModule's schedule after ``step`` optimizer steps (LambdaLR has stepped ``step`` times)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def test_from_config_adds_the_lr_monitor_and_the_lr_is_a_metric(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, {"health_guard": {"enabled": False}, "final_model": False})
    logger, callbacks = lightning_track.from_config(cfg)
    assert [type(c) for c in callbacks] == [LearningRateMonitor]
    trainer = L.Trainer(logger=logger, callbacks=callbacks, **trainer_kwargs(cfg))
    trainer.fit(DemoModule(lr=0.02, warmup_steps=4, max_steps=12), datamodule=DemoDataModule(n_train=256, n_val=32))
    logger.wait()  # TensorBoard's file is finished by the sink host after fit returns
    (run,) = RunLayout.list_runs(tmp_path)
    lrs = [(r.step, r.metrics["lr-AdamW"]) for r in read_metrics(run.metrics_jsonl) if "lr-AdamW" in r.metrics]
    # logged at the start of each batch, named by the step that batch makes (the step convention): the
    # value at step S is the rate batch S trained with, after S - 1 scheduler steps
    assert [s for s, _ in lrs] == list(range(1, 13))
    for step, value in lrs:
        assert value == pytest.approx(_expected_lr(step - 1), rel=1e-6), step
    losses = {r.step for r in read_metrics(run.metrics_jsonl) if "train/loss" in r.metrics}
    assert losses == {s for s, _ in lrs}  # one CSV row per batch holds its loss and its rate
    tb = tensorboard_scalars(run.tensorboard_dir)["lr-AdamW"]
    assert [(s, pytest.approx(v, rel=1e-6)) for s, v, _ in tb] == lrs


def test_lr_monitor_can_be_switched_off_or_replaced() -> None:
    assert build_callbacks(None) and type(build_callbacks(None)[0]) is LearningRateMonitor
    assert build_callbacks({"lr_monitor": False}) == []
    assert build_callbacks({"lr_monitor": {"enabled": False}}) == []
    (monitor,) = build_callbacks({"lr_monitor": {"logging_interval": "epoch", "log_momentum": True}})
    assert monitor.logging_interval == "epoch" and monitor.log_momentum
    (own,) = build_callbacks({"lr": {"class_path": "lightning.pytorch.callbacks.LearningRateMonitor",
                                     "init_args": {"logging_interval": "step"}}})
    assert own.logging_interval == "step"  # the config's own monitor, not a second one


@pytest.mark.slow
def test_lt_demo_records_the_learning_rate_everywhere(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    assert demo_main(["--quiet", f"logger.root={root}", "trainer.max_steps=30", "trainer.val_check_interval=10",
                      "callbacks.step_checkpoint.start_step=10", "callbacks.step_checkpoint.every_n_steps=10"]) == 0
    (run,) = RunLayout.list_runs(root)
    steps = [r.step for r in read_metrics(run.metrics_jsonl) if "lr-AdamW" in r.metrics]
    assert steps == list(range(1, 31))
    assert [s for s, _, _ in tensorboard_scalars(run.tensorboard_dir)["lr-AdamW"]] == steps
