"""PreemptionHandler: real signals stop a real fit at a step boundary, checkpoint it, mark it, resume it."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from fit_script import build, fit
from support.cluster import finish, start, wait_for
from support.processes import sigint_ignored
from support.readers import tensorboard_scalars

from lightning_track import PreemptionHandler, RunLayout, RunLogger, read_metrics
from lightning_track.folder.signals import read_signal
from lightning_track.training.demo import DemoDataModule, DemoModule


def summary(run: RunLayout) -> dict:
    return json.loads(run.summary_json.read_text())


@pytest.mark.slow  # a training subprocess
def test_sigterm_saves_checkpoint_marks_interrupted_and_resume_continues(runs: Path) -> None:
    proc = start(str(runs), "40", "--ready-at", "4", "--sleep", "0.3", "--every", "10")
    wait_for(runs / "ready.txt", proc)
    proc.send_signal(signal.SIGTERM)
    code, out = finish(proc)
    assert code == 128 + signal.SIGTERM, out[-3000:]  # 143: a Slurm afterok chain does not fire

    (run,) = RunLayout.list_runs(runs)
    data = summary(run)
    assert data["status"] == "interrupted"
    info = data["interrupted"]
    step = info["step"]
    assert 4 <= step < 40 and info["signal"] == "SIGTERM" and info["exit_code"] == 143
    assert "failure" not in data  # HealthGuard's "terminated" report is not kept as a failure
    ckpt = run.checkpoint_path(step)
    assert info["checkpoint"] == "checkpoints/" + ckpt.name and info["resumable"] is True  # relative to the run
    assert torch.load(ckpt, weights_only=False)["global_step"] == step  # saved at the step boundary
    assert run.last_checkpoint.resolve() == ckpt.resolve()
    assert [r.step for r in read_metrics(run.metrics_jsonl)] == list(range(1, step + 1))
    sig = read_signal(run.signals_dir, run.name, "failed")
    assert sig["check"] == "interrupted" and sig["resumable"] is True and sig["step"] == step
    assert sig["run_dir"] == str(run.run_dir.resolve()) and "SIGTERM" in sig["reason"]

    # Resume in the same folder: RunLogger(resume=True) + ckpt_path="last".
    L.seed_everything(0, verbose=False)
    trainer, logger = build(runs, 12 if step < 12 else step + 3, resume=True)
    fit(trainer, trainer.max_steps, resume=True)
    assert logger.run_dir == run.run_dir and len(RunLayout.list_runs(runs)) == 1
    data = summary(run)
    assert data["status"] == "completed"
    assert data["attempts"][-2]["status"] == "interrupted"
    assert data["attempts"][-1]["from_step"] == step
    total = trainer.max_steps
    assert [r.step for r in read_metrics(run.metrics_jsonl)] == list(range(1, total + 1))  # no gap, no duplicate
    assert [s for s, _, _ in tensorboard_scalars(run.tensorboard_dir)["train/loss"]] == list(range(1, total + 1))
    assert read_signal(run.signals_dir, run.name, "done") is not None


class KillSelfAt(L.Callback):
    """Send a real signal to this very process after ``step`` optimizer steps."""

    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer, *args) -> None:  # noqa: ANN001, ANN002
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def _trainer(root: Path, callbacks: list, logger: object, max_steps: int = 30) -> L.Trainer:
    return L.Trainer(max_steps=max_steps, logger=logger, callbacks=callbacks, log_every_n_steps=1,
                     enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1,
                     num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=root)


def test_sigint_stops_at_step_boundary_with_exit_code_130(runs: Path) -> None:
    logger = RunLogger("blobs", "sigint", root=runs, sinks=())
    handler = PreemptionHandler()
    trainer = _trainer(runs, [KillSelfAt(5, signal.SIGINT), handler], logger)
    with pytest.raises(SystemExit) as stopped:
        trainer.fit(DemoModule(), datamodule=DemoDataModule(n_train=512, n_val=64))
    assert stopped.value.code == 130
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Lightning restored it
    run = logger.layout
    data = summary(run)
    assert data["status"] == "interrupted" and data["interrupted"]["signal"] == "SIGINT"
    # Lightning's default ModelCheckpoint saved it (its own naming), at the step where the signal came.
    ckpt = run.run_dir / data["interrupted"]["checkpoint"]  # paths inside a run's files are relative to it
    assert ckpt.parent == run.checkpoints_dir and ckpt.name == "epoch=0-step=5.ckpt"
    assert torch.load(ckpt, weights_only=False)["global_step"] == 5
    assert handler.received == signal.SIGINT
    assert read_signal(run.signals_dir, run.name, "failed")["signal"] == "SIGINT"


def test_sigint_ignored_at_start_stays_ignored(runs: Path) -> None:
    """`python train.py &` in a script: the terminal's Ctrl+C must spare it, as Python itself does."""
    logger = RunLogger("blobs", "background", root=runs, sinks=())
    handler = PreemptionHandler()
    trainer = _trainer(runs, [KillSelfAt(5, signal.SIGINT), handler], logger, max_steps=10)
    with sigint_ignored():
        trainer.fit(DemoModule(), datamodule=DemoDataModule(n_train=512, n_val=64))
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    assert handler.received is None and summary(logger.layout)["status"] == "completed"
    assert trainer.global_step == 10


def test_without_checkpoint_callback_saves_to_run_layout(runs: Path) -> None:
    logger = RunLogger("blobs", "nockpt", root=runs, sinks=())
    trainer = L.Trainer(max_steps=20, logger=logger, callbacks=[KillSelfAt(3, signal.SIGTERM), PreemptionHandler()],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", num_sanity_val_steps=0, limit_val_batches=0, log_every_n_steps=1)
    with pytest.raises(SystemExit) as stopped:
        trainer.fit(DemoModule(), datamodule=DemoDataModule(n_train=512, n_val=64))
    assert stopped.value.code == 143
    ckpt = logger.layout.checkpoint_path(3)
    assert torch.load(ckpt, weights_only=False)["global_step"] == 3
    assert logger.layout.run_dir / summary(logger.layout)["interrupted"]["checkpoint"] == ckpt


def test_other_exceptions_are_failures_not_interruptions(runs: Path) -> None:
    class Boom(L.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:  # noqa: ANN001, ANN002
            if trainer.global_step == 2:
                raise RuntimeError("boom")

    logger = RunLogger("blobs", "boom", root=runs, sinks=())
    trainer = _trainer(runs, [Boom(), PreemptionHandler()], logger)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(DemoModule(), datamodule=DemoDataModule(n_train=512, n_val=64))
    data = summary(logger.layout)
    assert data["status"] == "failed" and "interrupted" not in data
    assert not logger.layout.checkpoints_dir.exists() or not any(logger.layout.checkpoints_dir.iterdir())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"signals": ["SIGFOO"]}, "unknown signal 'SIGFOO'"), ({"signals": ["SIGKILL"]}, "SIGKILL and SIGSTOP"),
     ({"exit_code": 300}, "exit_code must be None or an integer 0..255"), ({"exp_id": "a/b"}, "exp_id")],
)
def test_bad_arguments_say_what_is_wrong(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PreemptionHandler(**kwargs)
