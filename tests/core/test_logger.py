"""RunLogger in real (in-process) Lightning fits: files, values, steps, config, status."""

from __future__ import annotations

import json
import math
import warnings
from argparse import Namespace
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf
from support.readers import WITH_SWANLAB, swanlab_finish_state, swanlab_runs, swanlab_scalars, tensorboard_scalars
from support.trainers import wait_for_run_files

from lightning_track import RunLogger, read_metrics
from lightning_track.errors import WriterError
from lightning_track.sinks import Sink
from lightning_track.training.demo import DemoDataModule, DemoModule

SECRET = "hf_supersecret_token_value"


def fit(logger, max_steps: int = 30, callbacks=None, **trainer_kwargs) -> L.Trainer:
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(
        max_steps=max_steps,
        logger=logger,
        callbacks=callbacks or [],
        log_every_n_steps=1,
        val_check_interval=10,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        **trainer_kwargs,
    )
    try:
        trainer.fit(DemoModule(max_steps=max_steps), datamodule=DemoDataModule(n_train=512, n_val=64))
    finally:
        wait_for_run_files(trainer)  # the viewers' files and the plot are finished after fit returns
    return trainer


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("runs")
    config = {"training": {"lr": 0.01, "api_key": SECRET}, "hf_token": SECRET, "note": "demo"}
    logger = RunLogger("arc/challenge", "lo ra", root=root, config=config, sinks=WITH_SWANLAB)
    trainer = fit(logger, max_steps=30)
    return logger, trainer


def test_run_folder_is_complete_and_named_by_contract(finished_run) -> None:
    logger, trainer = finished_run
    run = logger.run_dir
    assert run.name.startswith("arc-challenge_lo-ra_")
    for name in ["config.yaml", "metrics.jsonl", "metrics.csv", "summary.json", "meta.json", "report_draft.md"]:
        assert (run / name).is_file(), name
    assert list((run / "tensorboard_logs").glob("events.out.tfevents.*"))
    assert len(swanlab_runs(run / "swanlab_logs")) == 1
    # Lightning's own ModelCheckpoint (no dirpath) and trainer.log_dir land in the run folder
    assert trainer.log_dir == str(run)
    ckpts = list((run / "checkpoints").glob("*.ckpt"))
    assert len(ckpts) == 1 and ckpts[0].name.startswith("epoch=1-step=")  # saved after the last validation
    assert (run.parent / "swanlab_workspace").is_dir()
    # files replaced atomically get the usual permissions, not the temp file's 0600
    modes = {p.name: p.stat().st_mode & 0o777 for p in run.iterdir() if p.is_file()}
    assert set(modes.values()) == {modes["metrics.jsonl"]}, modes


def test_metrics_jsonl_tensorboard_and_swanlab_agree_step_by_step(finished_run) -> None:
    logger, _ = finished_run
    run = logger.run_dir
    records = read_metrics(run / "metrics.jsonl")
    steps = [r.step for r in records if "train/loss" in r.metrics]
    assert steps == list(range(1, 31))  # trainer.global_step at logging time
    jsonl = {(r.step, k): v for r in records for k, v in r.metrics.items()}

    # system/* come from system.jsonl (a sample at the start and at the end of every run), not metrics.jsonl
    tb = {tag: events for tag, events in tensorboard_scalars(run / "tensorboard_logs").items()
          if not tag.startswith("system/")}
    assert [s for s, _, _ in tb["train/loss"]] == steps
    for tag, events in tb.items():
        for step, value, _ in events:
            assert value == pytest.approx(jsonl[(step, tag)], rel=1e-6), (tag, step)

    sw = {key: points for key, points in swanlab_scalars(swanlab_runs(run / "swanlab_logs")[0]).items()
          if not key.startswith("system/")}
    assert [s for s, _ in sw["train/loss"]] == steps
    assert set(sw) == {k for _, k in jsonl}
    for key, points in sw.items():
        for step, value in points:
            assert value == pytest.approx(jsonl[(step, key)], rel=1e-6), (key, step)
    assert swanlab_finish_state(swanlab_runs(run / "swanlab_logs")[0]) == "RUN_STATE_FINISHED"


def test_summary_final_best_and_csv(finished_run) -> None:
    logger, _ = finished_run
    run = logger.run_dir
    summary = json.loads((run / "summary.json").read_text())
    records = read_metrics(run / "metrics.jsonl")
    losses = [(r.step, r.metrics["train/loss"]) for r in records if "train/loss" in r.metrics]
    best_step, best_loss = min(losses, key=lambda sv: sv[1])
    assert summary["status"] == "completed"
    assert summary["final"]["train/loss"] == {"value": losses[-1][1], "step": losses[-1][0]}
    assert summary["best"]["train/loss"] == {"value": best_loss, "step": best_step, "mode": "min"}
    assert summary["best"]["val/acc"]["mode"] == "max"
    assert "epoch" not in summary["best"]
    assert 0 < summary["training_time_s"] <= summary["wall_span_s"]
    assert summary["end_time"] >= summary["start_time"]
    assert summary["dataset"] == "arc/challenge" and summary["method"] == "lo ra"
    rows = (run / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert header[0] == "step" and "train/loss" in header and "val/loss" in header
    assert len(rows) == 1 + len({r.step for r in records})
    row29 = dict(zip(header, rows[-1].split(","), strict=True))
    assert float(row29["train/loss"]) == pytest.approx(losses[-1][1])
    report = (run / "report_draft.md").read_text()
    assert "| train/loss |" in report and "tensorboard --logdir" in report


def test_config_and_hparams_recorded_with_secrets_redacted_everywhere(finished_run) -> None:
    logger, _ = finished_run
    run = logger.run_dir
    cfg = OmegaConf.load(run / "config.yaml")
    assert cfg.training.lr == 0.01 and cfg.note == "demo"
    assert cfg.training.api_key == "***REDACTED***" and cfg.hf_token == "***REDACTED***"
    assert cfg.hidden == 64 and cfg.batch_size == 32  # module and datamodule hparams merged in
    leaked = [p for p in run.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaked == []


def test_meta_json_says_where_the_run_came_from(finished_run) -> None:
    logger, _ = finished_run
    meta = json.loads((logger.run_dir / "meta.json").read_text())
    assert meta["dataset"] == "arc/challenge" and meta["method"] == "lo ra"
    assert meta["run_name"] == logger.run_dir.name
    for key in ("host", "pid", "user", "argv", "cwd", "versions", "devices"):
        assert key in meta
    assert meta["versions"]["torch"] == torch.__version__
    assert meta["versions"]["lightning"] == L.__version__
    assert meta["devices"]["cuda_available"] is torch.cuda.is_available()


@dataclass
class DataclassConfig:
    lr: float = 0.1
    layers: tuple = (1, 2)


@pytest.mark.parametrize(
    "config",
    [
        {"lr": 0.1, "layers": [1, 2]},
        OmegaConf.create({"lr": 0.1, "layers": [1, 2]}),
        Namespace(lr=0.1, layers=[1, 2]),
        DataclassConfig(),
    ],
    ids=["dict", "DictConfig", "Namespace", "dataclass"],
)
def test_config_kinds_accepted(tmp_path: Path, config) -> None:
    logger = RunLogger("d", "m", root=tmp_path, config=config, sinks=())
    logger.finalize("success")
    cfg = OmegaConf.load(logger.run_dir / "config.yaml")
    assert cfg.lr == 0.1 and list(cfg.layers) == [1, 2]


def test_config_object_becomes_string_with_warning_naming_key(tmp_path: Path) -> None:
    logger = RunLogger("d", "m", root=tmp_path, sinks=())
    with pytest.warns(UserWarning, match=r"model\.net of type Linear"):
        logger.log_hyperparams({"model": {"net": torch.nn.Linear(2, 2)}})
    logger.finalize("success")
    assert "Linear(in_features=2" in OmegaConf.load(logger.run_dir / "config.yaml").model.net


def test_nonfinite_values_recorded_and_non_numbers_warned(tmp_path: Path) -> None:
    logger = RunLogger("d", "m", root=tmp_path, sinks=("tensorboard",))
    logger.log_metrics({"loss": math.nan, "grad": math.inf, "neg": -math.inf}, step=0)
    with pytest.warns(UserWarning, match=r"metric 'name' has non-numeric value 'abc'"):
        logger.log_metrics({"loss": 1.0, "name": "abc", "t": torch.tensor(2.5)}, step=1)
    logger.finalize("success")
    logger.wait()  # TensorBoard's file is finished by the sink host after finalize returns
    lines = (logger.run_dir / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[0]) ["metrics"] == {"loss": "NaN", "grad": "Infinity", "neg": "-Infinity"}
    assert json.loads(lines[1])["metrics"] == {"loss": 1.0, "t": 2.5}
    records = read_metrics(logger.run_dir / "metrics.jsonl")
    assert math.isnan(records[0].metrics["loss"]) and records[0].metrics["grad"] == math.inf
    tb = tensorboard_scalars(logger.run_dir / "tensorboard_logs")
    assert math.isnan(tb["loss"][0][1]) and tb["grad"][0][1] == math.inf
    summary = json.loads((logger.run_dir / "summary.json").read_text())
    assert summary["best"]["loss"] == {"value": 1.0, "step": 1, "mode": "min"}  # NaN is never "best"


def test_metric_mode_override(tmp_path: Path) -> None:
    logger = RunLogger("d", "m", root=tmp_path, sinks=(), metric_modes={"custom": "max", "train/loss": None})
    for step, value in enumerate([1.0, 3.0, 2.0]):
        logger.log_metrics({"custom": value, "train/loss": value}, step=step)
    logger.finalize("success")
    summary = json.loads((logger.run_dir / "summary.json").read_text())
    assert summary["best"]["custom"] == {"value": 3.0, "step": 1, "mode": "max"}
    assert "train/loss" not in summary["best"]


def test_two_loggers_in_one_process_get_two_runs_and_two_swanlab_runs(tmp_path: Path) -> None:
    first = RunLogger("d", "m", root=tmp_path, sinks=WITH_SWANLAB)
    fit(first, max_steps=5)
    second = RunLogger("d", "m", root=tmp_path, sinks=WITH_SWANLAB)
    fit(second, max_steps=5)
    assert first.run_dir != second.run_dir
    for logger in (first, second):
        files = swanlab_runs(logger.run_dir / "swanlab_logs")
        assert len(files) == 1
        assert swanlab_finish_state(files[0]) == "RUN_STATE_FINISHED"
        assert [s for s, _ in swanlab_scalars(files[0])["train/loss"]] == list(range(1, 6))


def test_failed_fit_marks_run_failed_and_finishes_swanlab(tmp_path: Path) -> None:
    class Boom(L.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step == 3:
                raise RuntimeError("boom at step 3")

    logger = RunLogger("d", "m", root=tmp_path, sinks=WITH_SWANLAB)
    with pytest.raises(RuntimeError, match="boom at step 3"):
        fit(logger, max_steps=10, callbacks=[Boom()])
    summary = json.loads((logger.run_dir / "summary.json").read_text())
    assert summary["status"] == "failed"
    logged = read_metrics(logger.run_dir / "metrics.jsonl")
    assert summary["last_step"] == logged[-1].step < 3
    files = swanlab_runs(logger.run_dir / "swanlab_logs")
    assert swanlab_finish_state(files[0]) == "RUN_STATE_CRASHED"


def test_beside_csv_logger_run_folder_stays_whole(tmp_path: Path) -> None:
    run_logger = RunLogger("d", "m", root=tmp_path / "runs")
    csv = CSVLogger(tmp_path / "csv")
    trainer = fit([run_logger, csv], max_steps=6, callbacks=[ModelCheckpoint(every_n_train_steps=3)])
    run = run_logger.run_dir
    assert trainer.log_dir == str(run)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch=0-step=6.ckpt"]
    assert [r.step for r in read_metrics(run / "metrics.jsonl") if "train/loss" in r.metrics] == list(range(1, 7))
    assert (Path(csv.log_dir) / "metrics.csv").is_file()


def test_summary_running_with_heartbeat(tmp_path: Path) -> None:
    import time

    logger = RunLogger("d", "m", root=tmp_path, sinks=(), heartbeat_interval=0.2)
    logger.save()  # what the Trainer does first in fit: the run starts
    first = json.loads((logger.run_dir / "summary.json").read_text())
    assert first["status"] == "running" and first["heartbeat"]
    beats = set()
    deadline = time.time() + 5
    while time.time() < deadline and len(beats) < 2:
        beats.add(json.loads((logger.run_dir / "summary.json").read_text())["heartbeat"])
        time.sleep(0.3)
    logger.finalize("success")
    assert len(beats) >= 2  # refreshed while running
    assert json.loads((logger.run_dir / "summary.json").read_text())["status"] == "completed"


class ExplodingSink(Sink):
    name = "exploding"

    def write(self, records) -> None:
        raise OSError(28, "No space left on device")


def test_writer_error_surfaces_on_next_call(tmp_path: Path) -> None:
    logger = RunLogger("d", "m", root=tmp_path, sinks=(ExplodingSink(),), flush_interval=0.05)
    logger.log_metrics({"loss": 1.0}, step=0)
    with pytest.raises(WriterError, match="No space left on device"):
        logger.flush()  # the writer has now tried and failed, and says so on this thread
    with pytest.raises(WriterError, match=r"sink 'exploding' write.*No space left on device"):
        logger.log_metrics({"loss": 0.5}, step=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(WriterError):
            logger.finalize("success")
    summary = json.loads((logger.run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "No space left" in summary["error"]
    # the other sink (metrics.jsonl) still recorded what arrived
    assert [r.step for r in read_metrics(logger.run_dir / "metrics.jsonl")] == [0]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"dataset": "", "method": "m"}, ValueError, "dataset '' is empty"),
        ({"dataset": "d", "method": " / "}, ValueError, "method ' / ' is empty"),
        ({"dataset": "d", "method": "m", "sinks": ("nosuchsink",)}, ValueError, "unknown sink 'nosuchsink'"),
        ({"dataset": "d", "method": "m", "resume": "not_a_run"}, FileNotFoundError, "'not_a_run' is not a run folder"),
        ({"dataset": "d", "method": "m", "resume": True}, FileNotFoundError, "no run of dataset 'd'"),
    ],
)
def test_bad_input_is_a_clear_error_and_leaves_no_folder(tmp_path: Path, kwargs, error, message) -> None:
    root = tmp_path / "runs"
    with pytest.raises(error, match=message):
        RunLogger(root=root, **kwargs)
    assert not root.exists() or list(root.iterdir()) == []


def test_unwritable_root_names_the_root(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError, match=f"cannot create a run folder under {blocker}"):
        RunLogger("d", "m", root=blocker)


def test_runlogger_works_beside_the_users_own_swanlab_run(tmp_path: Path) -> None:
    import swanlab

    run = swanlab.init(project="other", mode="offline", log_dir=str(tmp_path / "other"))
    try:
        logger = RunLogger("d", "m", root=tmp_path / "runs", flush_interval=0.05, sinks=WITH_SWANLAB)
        for step in range(3):
            logger.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
            run.log({"user/acc": 0.5 + step / 10}, step=step)
        logger.finalize("success")  # SwanLab runs in the sink host process: no one-run-per-process clash
        assert swanlab.has_run()  # the user's run was left alone, still active
        run.log({"user/acc": 0.9}, step=3)
    finally:
        run.finish()
    assert logger.wait(60)
    summary = json.loads((logger.run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    (ours,) = swanlab_runs(logger.run_dir / "swanlab_logs")
    assert [s for s, _ in swanlab_scalars(ours)["loss"]] == [0, 1, 2]
    assert swanlab_finish_state(ours) == "RUN_STATE_FINISHED"
    (theirs,) = swanlab_runs(tmp_path / "other")
    assert [s for s, _ in swanlab_scalars(theirs)["user/acc"]] == [0, 1, 2, 3] and "loss" not in swanlab_scalars(theirs)
    assert swanlab_finish_state(theirs) == "RUN_STATE_FINISHED"


def test_in_process_sinks_refuse_to_touch_a_foreign_swanlab_run(tmp_path: Path) -> None:
    import swanlab

    run = swanlab.init(project="other", mode="offline", log_dir=str(tmp_path / "other"))
    try:
        logger = RunLogger("d", "m", root=tmp_path / "runs", flush_interval=0.05, sink_process=False,
                           sinks=WITH_SWANLAB)
        logger.log_metrics({"loss": 1.0}, step=0)
        with pytest.raises(WriterError, match="another SwanLab run is active in this process"):
            logger.flush()
        with pytest.raises(WriterError):
            logger.finalize("success")
        assert swanlab.has_run()  # the user's run was left alone
        assert [r.step for r in read_metrics(logger.run_dir / "metrics.jsonl")] == [0]
    finally:
        run.finish()


def test_sink_host_error_surfaces_on_next_call_naming_the_sink(tmp_path: Path) -> None:
    logger = RunLogger("d", "m", root=tmp_path, sinks=("tensorboard",), flush_interval=0.05)
    (logger.run_dir / "tensorboard_logs").write_text("a file where the folder should be")
    logger.log_metrics({"loss": 1.0}, step=0)
    with pytest.raises(WriterError, match=r"opening sink 'tensorboard'"):
        logger.flush()  # raised in the sink host process, reported here
    with pytest.raises(WriterError, match=r"opening sink 'tensorboard'"):
        logger.log_metrics({"loss": 0.5}, step=1)
    with pytest.raises(WriterError):
        logger.finalize("success")
    summary = json.loads((logger.run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "opening sink 'tensorboard'" in summary["error"]
    assert [r.step for r in read_metrics(logger.run_dir / "metrics.jsonl")] == [0]


def test_launcher_fixed_run_dir_is_used_and_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fixed = tmp_path / "shared" / "runs" / "job-1234"
    monkeypatch.setenv("LIGHTNING_TRACK_RUN_DIR", str(fixed))
    logger = RunLogger("d", "m", root=tmp_path / "elsewhere", sinks=())
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.finalize("success")
    assert logger.run_dir == fixed
    assert json.loads((fixed / "summary.json").read_text())["status"] == "completed"
    assert not (tmp_path / "elsewhere").exists()
