"""Converted checkpoints load in Lightning and resume training at the right global_step."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from safetensors.torch import load_file
from support.migrate import run_dir
from torch import nn

from lightning_track.folder.layout import RunLayout
from lightning_track.migrate.example import IN_DIM, TinyNet, hidden_for

HIDDEN = hidden_for(0.02)  # the size conftest's example tree was made with


class Module(L.LightningModule):
    """Keeps the legacy model under ``self.model``: hence --state-dict-prefix model. (the default)."""

    def __init__(self, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.model = TinyNet(hidden)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.model(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=1e-4)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        data = torch.utils.data.TensorDataset(torch.randn(64, IN_DIM), torch.randn(64, 1))
        return torch.utils.data.DataLoader(data, batch_size=4)


class FirstStep(L.Callback):
    def __init__(self) -> None:
        self.first: int | None = None
        self.optimizer_steps_before: int | None = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: object, i: int) -> None:
        if self.first is None:
            self.first = trainer.global_step
            opt = trainer.optimizers[0]
            states = [s.get("step") for s in opt.state.values()]
            self.optimizer_steps_before = int(states[0]) if states and states[0] is not None else 0


def _fit_from(ckpt: Path, max_steps: int) -> tuple[FirstStep, L.Trainer]:
    callback = FirstStep()
    trainer = L.Trainer(max_steps=max_steps, logger=False, enable_checkpointing=False, callbacks=[callback],
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Module(), ckpt_path=str(ckpt))
    return callback, trainer


def test_hf_checkpoint_loads_with_weights_and_optimizer(migrated: dict, example_tree: Path) -> None:
    layout = RunLayout(migrated["out"] / "arc-challenge_lora_20250720_143052")
    ckpt = layout.checkpoint_path(60)
    module = Module.load_from_checkpoint(ckpt)
    legacy = load_file(run_dir(example_tree, 0) / "checkpoints" / "checkpoint-60" / "model.safetensors")
    for key, value in legacy.items():
        assert torch.equal(module.model.state_dict()[key], value), key
    raw = torch.load(ckpt, weights_only=True)
    assert raw["global_step"] == 60 and raw["epoch"] == 1 and raw["pytorch-lightning_version"] == L.__version__
    assert len(raw["optimizer_states"]) == 1 and raw["lt_migrate"]["weights_only"] is False
    callback, trainer = _fit_from(ckpt, 64)
    assert callback.first == 60 and trainer.global_step == 64
    assert callback.optimizer_steps_before == 1  # AdamW state restored from the legacy optimizer.pt


def test_torch_save_checkpoint_resumes_at_its_step(migrated: dict, example_tree: Path) -> None:
    layout = RunLayout(migrated["out"] / "gsm8k_full_ft_20250720_144752")
    assert [s for s, _ in layout.step_checkpoints()] == [30, 60, 90, 120]
    legacy = torch.load(run_dir(example_tree, 1) / "checkpoints" / "step_90.pt", weights_only=True)
    module = Module.load_from_checkpoint(layout.checkpoint_path(90))
    assert torch.equal(module.model.layers[0].weight, legacy["model_state_dict"]["layers.0.weight"])
    callback, trainer = _fit_from(layout.checkpoint_path(90), 93)
    assert callback.first == 90 and trainer.global_step == 93


def test_weights_only_checkpoint_resumes_with_a_fresh_optimizer(migrated: dict) -> None:
    layout = RunLayout(migrated["out"] / "arc-challenge_qlora_20250720_150452")
    assert [s for s, _ in layout.step_checkpoints()] == [30, 40, 60, 80, 90, 120]
    ckpt = layout.checkpoint_path(40)  # from checkpoint_epoch_0.pth: a bare state_dict, step from tracking
    raw = torch.load(ckpt, weights_only=True)
    assert raw["optimizer_states"] == [] and raw["lt_migrate"]["weights_only"] is True and raw["epoch"] == 0
    Module.load_from_checkpoint(ckpt)
    callback, trainer = _fit_from(ckpt, 45)
    assert callback.first == 40 and trainer.global_step == 45
    assert callback.optimizer_steps_before == 0


def test_state_dict_prefix_matches_the_module_attribute(example_tree: Path, tmp_path: Path) -> None:
    from lightning_track.cli.migrate import main

    class Bare(Module):
        def __init__(self, hidden: int = HIDDEN) -> None:
            super().__init__(hidden)
            self.layers = self.model.layers
            del self.model

    out = tmp_path / "runs"
    assert main([str(run_dir(example_tree, 1)), "--out", str(out), "--state-dict-prefix", "",
                 "--no-tensorboard"]) == 0
    ckpt = RunLayout(out / "gsm8k_full_ft_20250720_144752").checkpoint_path(30)
    assert "layers.0.weight" in torch.load(ckpt, weights_only=True)["state_dict"]
    Bare.load_from_checkpoint(ckpt)
    with pytest.raises(RuntimeError, match="Missing key"):
        Module.load_from_checkpoint(ckpt)
