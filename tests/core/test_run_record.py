"""The run record tells the truth across resumes, failures and interrupts (in-process fits)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf
from support.trainers import wait_for_run_files

from lightning_track import RunLayout, RunLogger, StepCheckpoint, read_metrics
from lightning_track.errors import ResumeError
from lightning_track.folder.fileio import iter_jsonl
from lightning_track.run.config import config_changes, merge_hyperparams
from lightning_track.run.resume import check_rewind
from lightning_track.training.demo import DemoDataModule, DemoModule


def fit(logger: RunLogger, max_steps: int, callbacks=(), ckpt_path=None, module=None) -> L.Trainer:
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(max_steps=max_steps, logger=logger, callbacks=list(callbacks), log_every_n_steps=1,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                        num_sanity_val_steps=0, limit_val_batches=0)
    try:
        trainer.fit(module or DemoModule(max_steps=max_steps), datamodule=DemoDataModule(n_train=512, n_val=64),
                    ckpt_path=ckpt_path)
    finally:
        wait_for_run_files(trainer)  # the viewers' files and the plot are finished after fit returns
    return trainer


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def summary(run: RunLayout) -> dict:
    return json.loads(run.summary_json.read_text())


def raw_records(path: Path) -> list[dict]:
    return [obj for _, obj in iter_jsonl(path)] if path.exists() else []


class RaiseAt(L.Callback):
    def __init__(self, step: int, exc: BaseException) -> None:
        self.step, self.exc = step, exc

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise self.exc


# -- pure rules -------------------------------------------------------------------------------------
def test_check_rewind_names_run_steps_and_fix() -> None:
    check_rewind("r", 150, 150, False)  # continuing from the last checkpoint
    check_rewind("r", 0, None, False)  # nothing to lose yet
    check_rewind("r", 0, 150, True)  # on purpose
    with pytest.raises(ResumeError) as refused:
        check_rewind("d_m_20260101_000000", 0, 150, False)
    text = str(refused.value)
    assert "d_m_20260101_000000" in text and "step 0" in text and "step 150" in text
    assert 'ckpt_path="last"' in text and "allow_rewind=True" in text and "\n" not in text
    assert isinstance(refused.value, ValueError)
    # killed between a checkpoint and last.ckpt: last.ckpt is one behind, the fix names the newest
    with pytest.raises(ResumeError, match=r'ckpt_path="runs/r/checkpoints/epoch=0-step=10.ckpt"'):
        check_rewind("r", 5, 10, False, "runs/r/checkpoints/epoch=0-step=10.ckpt")


def test_hyperparameters_the_config_already_holds_are_not_repeated() -> None:
    config = {"model": {"hidden": 32, "lr": 0.1}, "optim": {"lr": 0.5}, "trainer": {"max_steps": 150}, "note": "x"}
    merged = merge_hyperparams(config, {"hidden": 32, "lr": 0.1, "max_steps": 300, "dropout": 0.5})
    # hidden and lr are said once (model.*); max_steps differs from every max_steps there: recorded, not
    # written over trainer.max_steps; optim.lr, another setting of the same name, untouched
    assert merged == {**config, "max_steps": 300, "dropout": 0.5}
    assert config_changes({"trainer": {"max_steps": 150}, "a": 1}, {"trainer": {"max_steps": 300}, "a": 1}) == {
        "trainer.max_steps": {"was": 150, "now": 300}}


# -- item 5: a logger that is never used leaves nothing ------------------------------------------------
def test_constructed_logger_writes_nothing_until_used(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    logger = RunLogger("d", "m", root=root)
    assert not root.exists()
    assert "not started" in repr(logger)
    run_dir = logger.run_dir  # an explicit access decides (and creates) the folder, nothing more
    assert run_dir.is_dir() and list(run_dir.iterdir()) == []


# -- item 1: a resume that is not a continuation --------------------------------------------------------
@pytest.fixture()
def finished(tmp_path: Path) -> tuple[Path, RunLayout]:
    root = tmp_path / "runs"
    logger = RunLogger("d", "m", root=root, sinks=("tensorboard",))
    fit(logger, 30, [StepCheckpoint(every_n_steps=10, start_step=10)])
    return root, logger.layout


def test_resume_that_restarts_at_zero_is_refused_and_writes_nothing(finished) -> None:
    root, run = finished
    before = snapshot(root)
    logger = RunLogger("d", "m", root=root, sinks=("tensorboard",), resume=True)
    with pytest.raises(ResumeError, match=rf"run {run.name} refused: training restarts at step 0 .* step 30"):
        fit(logger, 30, [StepCheckpoint(every_n_steps=10, start_step=10)])  # no ckpt_path
    assert snapshot(root) == before  # not a byte changed, nothing added
    assert [r.name for r in RunLayout.list_runs(root)] == [run.name]


def test_refused_without_lightning_track_callbacks_too(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    fit(RunLogger("d", "m", root=root, sinks=()), 20, [ModelCheckpoint(every_n_train_steps=10, save_top_k=-1)])
    before = snapshot(root)
    with pytest.raises(ResumeError, match="restarts at step 0"):
        fit(RunLogger("d", "m", root=root, sinks=(), resume=True), 20,
            [ModelCheckpoint(every_n_train_steps=10, save_top_k=-1)])
    assert snapshot(root) == before


def test_older_checkpoint_is_refused_and_allow_rewind_moves_the_rest_aside(finished) -> None:
    root, run = finished
    all_before = raw_records(run.metrics_jsonl)
    older = run.checkpoint_path(10)
    with pytest.raises(ResumeError, match="restarts at step 10"):
        fit(RunLogger("d", "m", root=root, sinks=("tensorboard",), resume=True), 30,
            [StepCheckpoint(every_n_steps=10, start_step=10)], ckpt_path=str(older))
    fit(RunLogger("d", "m", root=root, sinks=("tensorboard",), resume=True, allow_rewind=True), 30,
        [StepCheckpoint(every_n_steps=10, start_step=10)], ckpt_path=str(older))
    data = summary(run)
    attempt = data["attempts"][-1]
    assert data["status"] == "completed" and attempt["from_step"] == 10
    dropped = raw_records(run.run_dir / attempt["dropped_file"])
    assert attempt["dropped_file"] == "metrics.dropped-at-attempt-2.jsonl" and attempt["dropped_records"] == 20
    assert [r["step"] for r in dropped] == list(range(11, 31))  # the steps trained again
    assert dropped == all_before[10:]  # the first attempt's records, moved whole, not re-encoded
    assert [r.step for r in read_metrics(run.metrics_jsonl)] == list(range(1, 31))
    # the first attempt's checkpoints after step 10 are kept aside, not overwritten
    aside = run.superseded_checkpoints_dir(2)
    assert sorted(p.name for p in aside.iterdir()) == ["checkpoint-step-020.ckpt", "checkpoint-step-030.ckpt"]


# -- item 4: resuming by ckpt_path alone --------------------------------------------------------------
def test_fit_from_a_checkpoint_of_an_earlier_run_continues_that_run(finished) -> None:
    root, run = finished
    logger = RunLogger("d", "m", root=root, sinks=("tensorboard",))
    fit(logger, 40, [StepCheckpoint(every_n_steps=10, start_step=10)], ckpt_path=str(run.checkpoint_path(30)))
    assert [r.name for r in RunLayout.list_runs(root)] == [run.name]  # no second folder
    assert logger.run_dir == run.run_dir
    assert [r.step for r in read_metrics(run.metrics_jsonl)] == list(range(1, 41))
    data = summary(run)
    assert [a["status"] for a in data["attempts"]] == ["completed", "completed"]
    assert data["attempts"][-1]["from_step"] == 30 and data["last_checkpoint"] == "checkpoints/checkpoint-step-040.ckpt"


def test_fit_from_a_checkpoint_continues_that_run_with_plain_model_checkpoint_too(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    first = RunLogger("d", "m", root=root, sinks=())
    fit(first, 20, [ModelCheckpoint(every_n_train_steps=10, save_top_k=-1)])
    ckpt = next(first.layout.checkpoints_dir.glob("*step=20.ckpt"))
    second = RunLogger("d", "m", root=root, sinks=())
    fit(second, 30, [ModelCheckpoint(every_n_train_steps=10, save_top_k=-1)], ckpt_path=str(ckpt))
    assert [r.name for r in RunLayout.list_runs(root)] == [first.layout.name]
    assert [r.step for r in read_metrics(first.layout.metrics_jsonl)] == list(range(1, 31))
    assert any(p.name.endswith("step=30.ckpt") for p in first.layout.checkpoints_dir.iterdir())


def test_checkpoint_from_elsewhere_starts_a_new_run_and_says_how_to_continue(finished, tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture) -> None:
    root, run = finished
    other = tmp_path / "elsewhere.ckpt"
    other.write_bytes(run.checkpoint_path(30).read_bytes())
    logger = RunLogger("d", "m", root=root, sinks=())
    fit(logger, 35, [StepCheckpoint(every_n_steps=10, start_step=10)], ckpt_path=str(other))
    assert logger.run_dir != run.run_dir and len(RunLayout.list_runs(root)) == 2
    err = capsys.readouterr().err
    assert f"started the new run {logger.run_dir.name}" in err and "resume=" in err


# -- item 6: one history of attempts -----------------------------------------------------------------
def test_failed_then_resumed_run_keeps_each_attempt_and_no_stale_failure(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    first = RunLogger("d", "m", root=root, sinks=())
    with pytest.raises(RuntimeError, match="boom"):
        fit(first, 30, [StepCheckpoint(every_n_steps=5, start_step=5), RaiseAt(12, RuntimeError("boom"))])
    run = first.layout
    assert summary(run)["status"] == "failed" and summary(run)["reason"] == "RuntimeError: boom"
    fit(RunLogger("d", "m", root=root, sinks=(), resume=True), 30, [StepCheckpoint(every_n_steps=5, start_step=5)],
        ckpt_path="last")
    data = summary(run)
    assert data["status"] == "completed" and "reason" not in data and "failure" not in data
    one, two = data["attempts"]
    assert one["status"] == "failed" and one["reason"] == "RuntimeError: boom"
    assert two["status"] == "completed" and two["from_step"] == 10
    assert data["training_time_s"] == pytest.approx(one["training_time_s"] + two["training_time_s"], abs=0.01)
    assert data["wall_span_s"] >= data["training_time_s"]
    assert data["heartbeat"] == data["end_time"] == two["end_time"]
    assert [r.step for r in read_metrics(run.metrics_jsonl)] == list(range(1, 31))


# -- item 7: config.yaml says each thing once -------------------------------------------------------
def test_config_has_no_duplicates_and_a_resume_records_what_it_changed(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    config = {"model": {"hidden": 32, "lr": 0.01, "max_steps": 20}, "trainer": {"max_steps": 20}}
    first = RunLogger("d", "m", root=root, sinks=(), config=config)
    fit(first, 20, [StepCheckpoint(every_n_steps=10, start_step=10)], module=DemoModule(hidden=32, max_steps=20))
    saved = OmegaConf.to_container(OmegaConf.load(first.layout.config_yaml))
    assert "hidden" not in saved and "lr" not in saved and "max_steps" not in saved  # not repeated at the root
    assert saved["model"]["hidden"] == 32 and saved["trainer"]["max_steps"] == 20
    assert saved["batch_size"] == 32  # the datamodule's, named nowhere else: added once
    more = {"model": {"hidden": 32, "lr": 0.01, "max_steps": 30}, "trainer": {"max_steps": 30}}
    fit(RunLogger("d", "m", root=root, sinks=(), config=more, resume=True), 30,
        [StepCheckpoint(every_n_steps=10, start_step=10)], ckpt_path="last", module=DemoModule(hidden=32, max_steps=30))
    saved = OmegaConf.to_container(OmegaConf.load(first.layout.config_yaml))
    assert saved["model"]["max_steps"] == 30 and saved["trainer"]["max_steps"] == 30 and "max_steps" not in saved
    changes = summary(first.layout)["attempts"][-1]["config_changes"]
    assert changes == {"model.max_steps": {"was": 20, "now": 30}, "trainer.max_steps": {"was": 20, "now": 30}}


# -- item 8: an interrupt is not a failure ------------------------------------------------------------
def test_ctrl_c_without_preemption_handler_is_recorded_as_interrupted(tmp_path: Path) -> None:
    logger = RunLogger("d", "m", root=tmp_path, sinks=())
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit):  # Lightning turns a KeyboardInterrupt into exit(1)
            fit(logger, 30, [RaiseAt(5, KeyboardInterrupt())])
    finally:
        signal.signal(signal.SIGINT, handler)
    data = summary(logger.layout)
    assert data["status"] == "interrupted" and data["reason"] == "KeyboardInterrupt (SIGINT)"
    assert data["attempts"][-1]["status"] == "interrupted"


class SigtermAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler: stop at the next step boundary


def test_sigterm_without_preemption_handler_is_recorded_as_interrupted(tmp_path: Path) -> None:
    logger = RunLogger("d", "m", root=tmp_path, sinks=())
    handler = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit):
            fit(logger, 30, [SigtermAt(5)])
    finally:
        signal.signal(signal.SIGTERM, handler)
    data = summary(logger.layout)
    assert data["status"] == "interrupted" and data["reason"] == "SIGTERM"


# -- item 15: paths inside a run are relative ---------------------------------------------------------
def test_summary_paths_are_relative_to_the_run(finished) -> None:
    _, run = finished
    data = summary(run)
    assert data["last_checkpoint"] == "checkpoints/checkpoint-step-030.ckpt"
    assert data["last_checkpoint_step"] == 30
    assert (run.run_dir / data["last_checkpoint"]).is_file()
    assert str(run.run_dir.parent) not in run.summary_json.read_text()


def test_lt_demo_resume_without_checkpoint_is_refused_and_changes_no_file(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    """The issue's case: lt-demo to completion, then lt-demo logger.resume=true (training restarts at 0)."""
    from lightning_track.cli.demo import main

    root = tmp_path / "runs"
    args = ["--quiet", f"logger.root={root}", "trainer.max_steps=30", "callbacks.step_checkpoint.start_step=10",
            "callbacks.step_checkpoint.every_n_steps=10"]
    assert main(args) == 0
    (run,) = RunLayout.list_runs(root)
    before = snapshot(root)  # the run, its signals (.healthy, .done), SwanLab's workspace
    capsys.readouterr()
    assert main([*args, "logger.resume=true"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"lt-demo: error: resume of run {run.name} refused: training restarts at step 0")
    assert snapshot(root) == before  # not a byte changed, nothing added or removed


def test_resume_moves_the_interrupted_attempts_batch_tracking_aside(tmp_path: Path) -> None:
    from lightning_track import BatchTracker

    root = tmp_path / "runs"
    first = RunLogger("d", "m", root=root, sinks=())
    with pytest.raises(RuntimeError, match="boom"):
        fit(first, 30, [StepCheckpoint(every_n_steps=8, start_step=8), BatchTracker(),
                        RaiseAt(11, RuntimeError("boom"))])
    run = first.layout
    before = raw_records(run.batch_tracking_jsonl)
    assert [r["step"] for r in before][:11] == list(range(1, 12))
    fit(RunLogger("d", "m", root=root, sinks=(), resume=True), 20,
        [StepCheckpoint(every_n_steps=8, start_step=8), BatchTracker()], ckpt_path="last")
    tracked = raw_records(run.batch_tracking_jsonl)
    assert [r["step"] for r in tracked] == list(range(1, 21))  # each step once
    aside = raw_records(run.dropped_tracking_jsonl(2))
    assert [r["step"] for r in aside] == [r["step"] for r in before if r["step"] > 8]  # kept, not deleted
    assert aside == [r for r in before if r["step"] > 8]


def test_a_resume_names_the_checkpoints_own_record_when_a_kill_lost_it(tmp_path: Path) -> None:
    """Lightning logs a batch's values just after the checkpoint its end saved; killed in between, the
    record of the checkpoint's step is gone for good: the resume says so instead of hiding the gap."""
    from lightning_track.folder.fileio import JsonlAppender
    from lightning_track.sinks import SinkContext
    from lightning_track.sinks.jsonl import MetricsJsonlSink

    run = RunLayout(tmp_path / "d_m_20260101_000000")
    run.run_dir.mkdir()
    with JsonlAppender(run.metrics_jsonl) as out:
        for step in (1, 2, 3, 4, 6):  # 5 (the checkpoint's) never written; 6 from after it, replaced
            out.append({"step": step, "time": 1.0, "metrics": {"loss": 1.0}})
    sink = MetricsJsonlSink()
    sink.open(SinkContext(layout=run, dataset="d", method="m", resume_step=6,
                          moved_aside_to=run.dropped_metrics_jsonl(2)))
    sink.close("completed")
    assert sink.lost_steps == [5] and sink.moved_aside == 1
    assert [r["step"] for r in raw_records(run.metrics_jsonl)] == [1, 2, 3, 4]
    whole = MetricsJsonlSink()
    whole.open(SinkContext(layout=run, dataset="d", method="m", resume_step=5))  # restart at 4: 4 is there
    whole.close("completed")
    assert whole.lost_steps == []
