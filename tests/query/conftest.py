"""Runs made once per session by real fits: two completed runs (one tagged), one failed by HealthGuard on a
NaN loss. Tests that damage a run copy it first (``runs_copy``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


def _fit(root: Path, dataset: str, method: str, *, max_steps: int, lr: float, guard=None, nan_at=None, **kw):
    import lightning as L

    from lightning_track import RunLogger
    from lightning_track.training.demo import DemoDataModule, DemoModule

    class Module(DemoModule):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return loss * float("nan") if nan_at is not None and self.global_step + 1 >= nan_at else loss

    L.seed_everything(0, verbose=False)
    logger = RunLogger(dataset, method, root=root, sinks=(), config={"model": {"lr": lr, "hidden": 64},
                                                                     "seed": 0, "data": {"n_train": 512}}, **kw)
    trainer = L.Trainer(max_steps=max_steps, logger=logger, callbacks=[guard] if guard else [], log_every_n_steps=1,
                        val_check_interval=10, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu")
    try:
        trainer.fit(Module(max_steps=max_steps, lr=lr), datamodule=DemoDataModule(n_train=512, n_val=64))
    except SystemExit:  # HealthCheckFailed: the run is recorded as failed
        pass
    logger.wait()  # plots/metrics.png is drawn after fit returns
    return logger.run_dir


@pytest.fixture(scope="session")
def made_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from lightning_track import HealthGuard

    root = tmp_path_factory.mktemp("made") / "runs"
    runs = {
        "lora": _fit(root, "arc", "lora", max_steps=30, lr=0.01, tags=["baseline"], notes="first"),
        "full": _fit(root, "arc", "full", max_steps=20, lr=0.001),
        "nan": _fit(root, "toy", "nan", max_steps=30, lr=0.01, nan_at=15,
                    guard=HealthGuard(warmup_steps=100, loss_threshold=None)),
    }
    assert json.loads((runs["nan"] / "summary.json").read_text())["status"] == "failed"
    return runs


@pytest.fixture
def runs_copy(made_runs: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    """A private copy of the made runs (same names) under ``tmp_path/runs``, safe to damage."""
    dest = tmp_path / "runs"
    dest.mkdir()
    return {key: Path(shutil.copytree(path, dest / path.name)) for key, path in made_runs.items()}
