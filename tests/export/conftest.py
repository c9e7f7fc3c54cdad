"""One real MLflow tracking server per session, and runs made by real fits: a completed run (tags,
notes), a run failed by HealthGuard on a NaN loss, and a run that failed and was resumed. Tests that
change a run copy it first."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import lightning as L
import pytest

from lightning_track import HealthGuard, RunLogger, StepCheckpoint
from lightning_track.training.demo import DemoDataModule, DemoModule


@pytest.fixture(scope="session")
def _mlflow_process(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install 'lightning-track[mlflow]')")
    from support.mlflow_server import make_mlflow_server

    server = make_mlflow_server(tmp_path_factory.mktemp("mlflow"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlflow_server(_mlflow_process, made_runs):
    """The server, answering; the runs are made while it starts (both take tens of seconds)."""
    _mlflow_process.wait()
    return _mlflow_process


@pytest.fixture(scope="session")
def bare_mlflow_server(_mlflow_process):
    """The server, answering, for tests that make their own runs (without waiting for made_runs' fits)."""
    _mlflow_process.wait()
    return _mlflow_process


@pytest.fixture(scope="session")
def client(mlflow_server):
    from mlflow.tracking import MlflowClient

    return MlflowClient(mlflow_server.uri)


class RaiseAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("boom")


class NanAt(DemoModule):
    def __init__(self, nan_at: int, **kw) -> None:
        super().__init__(**kw)
        self.nan_at = nan_at

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        step = self.global_step + 1
        self.log("train/ratio", math.inf if step == 5 else -math.inf if step == 6 else math.nan if step > 6 else 1.0)
        return loss * math.nan if step >= self.nan_at else loss


def fit(logger: RunLogger, max_steps: int, callbacks=(), module=None, ckpt_path=None) -> Path:
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(max_steps=max_steps, logger=logger, callbacks=list(callbacks), log_every_n_steps=1,
                        val_check_interval=10, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", num_sanity_val_steps=0)
    try:
        trainer.fit(module or DemoModule(max_steps=max_steps), datamodule=DemoDataModule(n_train=512, n_val=64),
                    ckpt_path=ckpt_path)
    except (SystemExit, RuntimeError):  # HealthCheckFailed, RaiseAt: the run is recorded as failed
        pass
    logger.wait()  # plots/metrics.png is drawn after fit returns
    return logger.run_dir


@pytest.fixture(scope="session")
def made_runs(_mlflow_process, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("made") / "runs"
    config = {"model": {"lr": 0.01, "hidden": 64}, "seed": 0, "hf_token": "hf_abc123", "layers": [1, 2]}
    runs = {"done": fit(RunLogger("arc", "lora", root=root, sinks=(), config=config, tags=["baseline"],
                                  notes="first try", system_interval=0.5), 20)}  # samples at start, every 0.5 s
    runs["nan"] = fit(RunLogger("toy", "nan", root=root, sinks=(), config=config), 20,
                      [HealthGuard(warmup_steps=100, loss_threshold=None)], module=NanAt(12, max_steps=20))
    first = RunLogger("toy", "resumed", root=root, sinks=(), config=config)
    runs["resumed"] = fit(first, 20, [StepCheckpoint(every_n_steps=8, start_step=8), RaiseAt(11)])
    return runs


@pytest.fixture
def runs_copy(made_runs: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    dest = tmp_path / "runs"
    dest.mkdir()
    return {key: Path(shutil.copytree(path, dest / path.name, symlinks=True)) for key, path in made_runs.items()}


@pytest.fixture
def resume():
    """Continue a run from its last checkpoint: the records after it are moved aside."""
    return _resume


def _resume(run: Path, max_steps: int = 20, extra: tuple[L.Callback, ...] = ()) -> None:
    fit(RunLogger("toy", "resumed", root=run.parent, sinks=(), resume=run.name), max_steps,
        [StepCheckpoint(every_n_steps=8, start_step=8), *extra], ckpt_path="last")
