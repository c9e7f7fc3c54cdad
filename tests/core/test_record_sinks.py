"""What the TensorBoard and SwanLab sinks record about a run, read back with each format's own reader.

SwanLab: why a run failed, when each value was logged, and a ``swanlab sync`` hint a user can copy.
TensorBoard: the config and the metrics in the HParams plugin, so ``tensorboard --logdir runs`` compares
runs by config (read with tensorboard's plugin event accumulator and the HParams plugin's own handlers).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import lightning as L
import pytest
from support.readers import WITH_SWANLAB, swanlab_finish_state, swanlab_records, swanlab_runs, tensorboard_scalars
from support.trainers import wait_for_run_files

from lightning_track import RunLogger, read_metrics
from lightning_track.folder.layout import RunLayout
from lightning_track.folder.records import MetricRecord
from lightning_track.run.sinkhost import SinkHost, wait_for_hosts
from lightning_track.run.writer import BackgroundWriter
from lightning_track.sinks import SinkContext
from lightning_track.sinks.swanlab import board_missing
from lightning_track.sinks.tensorboard import TensorBoardSink
from lightning_track.training.demo import DemoDataModule, DemoModule
from lightning_track.vocabulary import COMPLETED, FAILED, INTERRUPTED


class Slow(L.Callback):
    """Steps a few ms apart, so a record stamped when it was written differs from one stamped when logged."""

    def on_train_batch_end(self, *args: Any) -> None:
        time.sleep(0.02)


def fit(logger: RunLogger, max_steps: int = 12, callbacks: list[L.Callback] | None = None) -> L.Trainer:
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(max_steps=max_steps, logger=logger, callbacks=callbacks or [], log_every_n_steps=1,
                        val_check_interval=6, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, accelerator="cpu")
    try:
        trainer.fit(DemoModule(max_steps=max_steps), datamodule=DemoDataModule(n_train=256, n_val=32))
    finally:
        wait_for_run_files(trainer)  # the viewers' files and the plot are finished after fit returns
    return trainer


def swanlab_finish(swanlab_file: Path) -> Any:
    (finish,) = [r.finish for r in swanlab_records(swanlab_file) if r.WhichOneof("record_type") == "finish"]
    return finish


def host_run(run_dir: Path, records: list[tuple[int, float, dict[str, float]]], status: str,
             reason: str | None, sinks: tuple[str, ...] = ("swanlab",), swanlab_mode: str = "auto") -> Path:
    """The writer thread and the sink host process, as a RunLogger drives them, closed with ``reason``."""
    layout = RunLayout(run_dir)
    layout.run_dir.mkdir(parents=True)
    context = SinkContext(layout=layout, dataset="d", method="m", options={"swanlab": {"mode": swanlab_mode}})
    writer = BackgroundWriter([SinkHost(list(sinks))], context, flush_interval=0.05)
    for step, when, metrics in records:
        writer.put(step, when, metrics)
    writer.close(status, reason)
    assert wait_for_hosts(layout.run_dir, 60)  # the host finishes SwanLab's run after close returns
    (swanlab_file,) = swanlab_runs(layout.swanlab_dir)
    return swanlab_file


# -- SwanLab: why it ended -------------------------------------------------------------------------
@pytest.mark.parametrize(("status", "state"), [(FAILED, "RUN_STATE_CRASHED"), (INTERRUPTED, "RUN_STATE_ABORTED")])
def test_swanlab_run_is_finished_with_the_reason(tmp_path: Path, status: str, state: str) -> None:
    reason = "RuntimeError: boom at step 3"
    swanlab_file = host_run(tmp_path / "run", [(0, time.time(), {"loss": 1.0})], status, reason)
    assert swanlab_finish_state(swanlab_file) == state
    assert swanlab_finish(swanlab_file).error == reason


def test_failed_fit_leaves_no_unknown_reason_in_swanlab(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    class Boom(L.Callback):
        def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
            if trainer.global_step == 3:
                raise RuntimeError("boom at step 3")

    logger = RunLogger("d", "m", root=tmp_path, sinks=WITH_SWANLAB)
    with pytest.raises(RuntimeError, match="boom at step 3"):
        fit(logger, callbacks=[Boom()])
    (swanlab_file,) = swanlab_runs(logger.run_dir / "swanlab_logs")
    finish = swanlab_finish(swanlab_file)
    assert swanlab_finish_state(swanlab_file) == "RUN_STATE_CRASHED"
    assert finish.error and finish.error != "unknown"
    assert "reason has been set to 'unknown'" not in capfd.readouterr().out


def test_completed_run_has_no_error(tmp_path: Path) -> None:
    swanlab_file = host_run(tmp_path / "run", [(0, time.time(), {"loss": 1.0})], COMPLETED, None)
    assert swanlab_finish_state(swanlab_file) == "RUN_STATE_FINISHED"
    assert swanlab_finish(swanlab_file).error == ""


# -- SwanLab: when each value was logged ------------------------------------------------------------
@pytest.mark.parametrize("sink_process", [True, False])
def test_swanlab_records_carry_the_time_they_were_logged(tmp_path: Path, sink_process: bool) -> None:
    logger = RunLogger("d", "m", root=tmp_path, sink_process=sink_process, sinks=WITH_SWANLAB)
    fit(logger, callbacks=[Slow()])
    logged: dict[tuple[int, str], list[float]] = {}  # a step can log a key twice (training, validation)
    for record in read_metrics(logger.run_dir / "metrics.jsonl"):
        for key in record.metrics:
            logged.setdefault((record.step, key), []).append(record.time)
    (swanlab_file,) = swanlab_runs(logger.run_dir / "swanlab_logs")
    stored: dict[tuple[int, str], list[float]] = {}
    for record in swanlab_records(swanlab_file):
        # system/* comes from system.jsonl (a sample at start and at close), not metrics.jsonl
        if record.WhichOneof("record_type") == "scalar" and not record.scalar.key.startswith("system/"):
            scalar = record.scalar
            stored.setdefault((scalar.step, scalar.key), []).append(scalar.timestamp.ToNanoseconds() / 1e9)
    assert set(stored) == set(logged)
    # SwanLab keeps the first value of a key at a step (the one metrics.jsonl has first)
    assert all(len(stored[key]) == 1 for key in stored), stored
    assert len({round(t, 2) for times in logged.values() for t in times}) > 5  # the run spans time
    off = {key: abs(stored[key][0] - times[0]) for key, times in logged.items()}
    assert max(off.values()) < 1e-3, sorted(off.items(), key=lambda kv: -kv[1])[:3]


def test_swanlab_times_survive_the_sink_host_exactly(tmp_path: Path) -> None:
    """Times far from now (a migrated run's) and with microseconds are kept to the microsecond."""
    records = [(step, 1_700_000_000.123456 + step * 0.5, {"loss": 1.0 / (step + 1)}) for step in range(5)]
    swanlab_file = host_run(tmp_path / "run", records, COMPLETED, None)
    got = {r.scalar.step: r.scalar.timestamp.ToNanoseconds() / 1e9 for r in swanlab_records(swanlab_file)
           if r.WhichOneof("record_type") == "scalar"}
    assert got == pytest.approx({step: when for step, when, _ in records}, abs=2e-6)


# -- SwanLab: the sync hint ------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["offline", "local"])
def test_swanlab_hint_is_one_copyable_line(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """Offline, SwanLab suggests ``swanlab sync <run>``; local (the board), ``swanlab watch <swanlab_logs>``."""
    if mode == "local" and board_missing():
        pytest.skip(board_missing())
    monkeypatch.delenv("COLUMNS", raising=False)  # a log file: no terminal, rich's default 80 columns
    deep = tmp_path / "a_rather_long_folder_name_for_the_experiments_of_this_project" / "run"
    swanlab_file = host_run(deep, [(0, time.time(), {"loss": 1.0})], COMPLETED, None, swanlab_mode=mode)
    out = capfd.readouterr().out
    run_dir = str(swanlab_file.parent)
    command = f"swanlab sync {run_dir}" if mode == "offline" else f"swanlab watch {swanlab_file.parent.parent}"
    assert len(command) > 80  # SwanLab's console would break it
    hints = [line for line in out.splitlines() if command.split(" /")[0] in line]
    assert hints, out
    for line in hints:
        assert re.search(rf"{re.escape(command)}\b", line), (line, out)
    assert any(line.rstrip().endswith(run_dir) for line in out.splitlines() if "Run data saved at" in line), out


# -- TensorBoard: HParams ----------------------------------------------------------------------------
def hparams_session_start(logdir: Path) -> Any:
    """The session start the HParams plugin reads for one run (its plugin data, via the accumulator)."""
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    assert metadata.EXPERIMENT_TAG not in content  # see TensorBoardSink: each run's own columns count
    end = content.get(metadata.SESSION_END_INFO_TAG)
    return (metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG]),
            None if end is None else metadata.parse_session_end_info_plugin_data(end))


def hparams_tab(root: Path) -> tuple[Any, Any]:
    """What the HPARAMS tab of ``tensorboard --logdir root`` shows: the plugin's experiment and session groups."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import api_pb2, backend_context, get_experiment, list_session_groups

    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(root))
    mux.Reload()
    tb = base_plugin.TBContext(logdir=str(root), multiplexer=mux,
                               data_provider=data_provider.MultiplexerDataProvider(mux, str(root)))
    backend = backend_context.Context(tb)
    request = context.RequestContext()
    experiment = get_experiment.Handler(request, backend, "", api_pb2.GetExperimentRequest()).run()
    cols = [api_pb2.ColParams(hparam=h.name) for h in experiment.hparam_infos]
    cols += [api_pb2.ColParams(metric=m.name) for m in experiment.metric_infos]
    groups = list_session_groups.Handler(request, backend, "", api_pb2.ListSessionGroupsRequest(
        start_index=0, slice_size=100, col_params=cols, aggregation_type=api_pb2.AGGREGATION_AVG,
        allowed_statuses=[api_pb2.STATUS_UNKNOWN, api_pb2.STATUS_SUCCESS, api_pb2.STATUS_FAILURE,
                          api_pb2.STATUS_RUNNING])).run()
    return experiment, groups


def _hparam(value: Any) -> Any:
    kind = value.WhichOneof("kind")
    return getattr(value, kind)


def test_tensorboard_hparams_compare_runs_by_config(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    configs = [
        {"optim": {"momentum": 0.01, "nesterov": True, "betas": [0.9, 0.99]}, "model": {"name": "mlp", "drop": None},
         "epochs": 3},
        {"optim": {"momentum": 0.1, "nesterov": False, "betas": [0.8, 0.9]}, "model": {"name": "mlp", "drop": 0.1},
         "epochs": 3, "only_here": "yes"},
    ]
    loggers = []
    for config in configs:
        logger = RunLogger("d", "m", root=root, config=config, sinks=("tensorboard",))
        fit(logger)
        loggers.append(logger)

    # each run: its flattened config (module/datamodule hparams merged in) in its session start, the
    # status at its end, read with tensorboard's plugin event accumulator
    start, end = hparams_session_start(loggers[0].run_dir / "tensorboard_logs")
    values = {name: _hparam(value) for name, value in start.hparams.items()}
    assert values["optim/momentum"] == 0.01 and values["optim/nesterov"] is True and values["epochs"] == 3
    assert values["optim/betas"] == "[0.9, 0.99]" and values["model/name"] == "mlp" and values["model/drop"] == "null"
    assert values["hidden"] == 64 and values["batch_size"] == 32  # Lightning's log_hyperparams, merged
    assert start.start_time_secs > 0 and end.status == 1  # STATUS_SUCCESS
    assert end.end_time_secs >= start.start_time_secs

    # the HPARAMS tab over the whole root: both runs, every config key as a column, the scalars as metrics
    experiment, groups = hparams_tab(root)
    columns = {h.name for h in experiment.hparam_infos}
    assert {"optim/momentum", "optim/nesterov", "optim/betas", "model/name", "model/drop", "epochs", "only_here",
            "hidden"} <= columns
    metric_tags = {m.name.tag for m in experiment.metric_infos}
    scalar_tags = set(tensorboard_scalars(loggers[0].run_dir / "tensorboard_logs"))
    assert {"train/loss", "val/loss", "val/acc"} <= scalar_tags <= metric_tags
    assert len(groups.session_groups) == 2
    for logger, config in zip(loggers, configs, strict=True):
        (group,) = [g for g in groups.session_groups if g.name == f"{logger.run_dir.name}/tensorboard_logs"]
        assert _hparam(group.hparams["optim/momentum"]) == config["optim"]["momentum"]
        final = [r.metrics["val/loss"] for r in read_metrics(logger.run_dir / "metrics.jsonl")
                 if "val/loss" in r.metrics][-1]
        (val_loss,) = [m.value for m in group.metric_values if m.name.tag == "val/loss"]
        assert val_loss == pytest.approx(final, rel=1e-6)  # the run's final value, read from its scalars
        assert {m.name.tag for m in group.metric_values} >= {"train/loss", "val/acc"}


def test_tensorboard_hparams_hold_the_final_config_and_status(tmp_path: Path) -> None:
    """``log_config`` may come several times; TensorBoard keeps the first session start of a run, so it
    is written once, at close, with the config then in force. A failed attempt writes no end: a
    resumed attempt that completes must be the one TensorBoard keeps."""
    layout = RunLayout(tmp_path / "run")
    sink = TensorBoardSink()
    sink.open(SinkContext(layout=layout, dataset="d", method="m", config={"lr": 0.1}))
    sink.log_config({"lr": 0.1, "hidden": 8})
    sink.write([MetricRecord(0, 1000.0, {"loss": 1.0})])
    sink.log_config({"lr": 0.2, "hidden": 8, "tag": "x"})
    sink.close(FAILED, "boom")
    start, end = hparams_session_start(layout.tensorboard_dir)
    assert {k: _hparam(v) for k, v in start.hparams.items()} == {"lr": 0.2, "hidden": 8, "tag": "x"}
    assert end is None
    assert start.start_time_secs == 1000.0


@pytest.mark.parametrize("first", [FAILED, INTERRUPTED])
def test_tensorboard_run_resumed_to_completion_reads_as_success(tmp_path: Path, first: str) -> None:
    layout = RunLayout(tmp_path / "run")
    for attempt, (status, steps) in enumerate([(first, range(0, 5)), (COMPLETED, range(3, 8))]):
        sink = TensorBoardSink()
        sink.open(SinkContext(layout=layout, dataset="d", method="m", config={"lr": 0.1},
                              resume_step=3 if attempt else None, resume_count=attempt))
        sink.write([MetricRecord(step, 1000.0 + step, {"loss": 1.0 / (step + 1)}) for step in steps])
        sink.close(status)
    start, end = hparams_session_start(layout.tensorboard_dir)
    assert end is not None and end.status == 1 and end.end_time_secs == 1007.0  # STATUS_SUCCESS
    assert [s for s, _, _ in tensorboard_scalars(layout.tensorboard_dir)["loss"]] == list(range(8))


@pytest.mark.parametrize(("config", "flat"), [
    ({"a": {"b": {"c": 1}}, "d": "x"}, {"a/b/c": 1, "d": "x"}),
    ({"t": True, "f": 1.5, "n": None, "l": [1, "a"], "e": {}, "s": {3}}, {"t": True, "f": 1.5, "n": "null",
                                                                        "l": "[1, 'a']", "e": "{}", "s": "{3}"}),
])
def test_flat_hparams(config: dict[str, Any], flat: dict[str, Any]) -> None:
    from lightning_track.sinks.tensorboard import flat_hparams

    assert flat_hparams(config) == flat
