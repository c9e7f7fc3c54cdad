"""The live ``"mlflow"`` sink: real fits feeding a real MLflow server from the sink host, a server that is
down from the start or stopped and started again mid-run, read back with MLflow's own client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support.processes import script_env
from support.sync import free_port

from lightning_track import RunLogger
from lightning_track.errors import ConfigError
from lightning_track.export import export_run
from lightning_track.export.content import run_params
from lightning_track.query.runs import read_run

pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install 'lightning-track[mlflow]')")


def warnings_about_mlflow(text: str) -> list[str]:
    return [line for line in text.splitlines() if "MLflow" in line]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="nice is per thread on Linux only")
def test_the_sinks_background_threads_run_at_the_lowest_priority_and_the_caller_keeps_its_own() -> None:
    """MLflow's import and passes take only what training leaves of the cores; the thread that started them
    (the sink host's) is not lowered with them."""
    from lightning_track.sinks.base import lowest_priority

    def priority() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    mine, seen = priority(), []
    worker = threading.Thread(target=lambda: (lowest_priority(), seen.append(priority())))
    worker.start()
    worker.join()
    assert seen == [19] and priority() == mine


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="nice is per thread on Linux only")
def test_mlflow_is_imported_at_the_lowest_priority_while_training_and_at_the_closing_threads_once_it_ends(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A pass during training imports MLflow's client at nice 19; the sink's close lifts it to its own priority
    (where the OS allows raising one), so a busy machine cannot starve it past the last pass's budget."""
    from lightning_track.sinks import mlflow as sink_module

    def priority(native_id: int = 0) -> int:
        return os.getpriority(os.PRIO_PROCESS, native_id or threading.get_native_id())

    started, release = threading.Event(), threading.Event()

    def stand_in(lowest: bool) -> None:  # sink_module._import_client's priority, without importing MLflow
        if lowest:
            sink_module.lowest_priority()
        started.set()
        release.wait(30)

    monkeypatch.setattr(sink_module, "_import_client", stand_in)
    monkeypatch.setattr(sink_module, "_importing", None)
    try:
        sink_module.start_client_import(lowest=True)  # the first pass, during training
        assert started.wait(30)
        importing = sink_module._importing
        assert importing is not None and priority(importing.native_id) == 19
        sink_module.start_client_import(lowest=False)  # the sink closes
        if os.geteuid() == 0:  # raising a priority needs the right to (RLIMIT_NICE for others)
            assert priority(importing.native_id) == priority()
    finally:
        release.set()
    importing.join(30)
    started.clear()
    release.clear()
    monkeypatch.setattr(sink_module, "_importing", None)
    try:
        sink_module.start_client_import(lowest=False)  # a run shorter than a pass interval: close starts it
        assert started.wait(30) and priority(sink_module._importing.native_id) == priority()
    finally:
        release.set()
    sink_module._importing.join(30)


def test_a_client_import_still_running_skips_the_passes_and_bounds_the_last_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    """On a machine too busy for the nice-19 import, training's passes wait for the next one and the last
    pass gives up after its budget: export.json says what was not sent, one line says how to send it."""
    from lightning_track.folder.layout import RunLayout
    from lightning_track.sinks import mlflow as sink_module
    from lightning_track.sinks.base import SinkContext

    logger = RunLogger("toy", "slow", root=tmp_path / "runs", sinks=(), console=False, system_interval=0)
    for step in range(5):
        logger.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    logger.finalize("success")
    assert logger.wait(60)  # the plot too: the folder is final
    run = logger.run_dir
    release = threading.Event()
    slow = threading.Thread(target=release.wait, daemon=True)  # stands in for an import that has not finished
    slow.start()
    monkeypatch.setattr(sink_module, "_importing", slow)
    monkeypatch.setattr(sink_module, "FINAL_SECONDS", 0.3)
    uri = f"http://127.0.0.1:{free_port()}"
    sink = sink_module.MlflowSink()
    monkeypatch.setattr(sink, "_loop", lambda: None)  # the passes are called by hand below
    sink.open(SinkContext(layout=RunLayout(run), dataset="toy", method="slow", options={"mlflow": {"uri": uri}}))
    sink._pass(final=False)
    assert sink._new.is_set() and not (run / "export.json").exists()  # skipped, the next pass sends it
    sink.close("completed")
    release.set()
    entry = json.loads((run / "export.json").read_text())["targets"][uri]
    assert entry["not_sent"]["why"] == "MLflow's client was still being imported after 0.3 s"
    assert entry["not_sent"]["metrics.jsonl"]["records"] == 5
    assert warnings_about_mlflow(capfd.readouterr().err) == [
        f"lightning_track: MLflow's client was still being imported after 0.3 s; the run is in its folder: "
        f"lt export {run} --to {uri}"]


def test_a_run_shorter_than_the_pass_interval_imports_mlflow_at_close_and_ends_equal_to_the_folder(
        bare_mlflow_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing of MLflow's client runs while a run shorter than a pass interval trains: it is imported when
    the sink closes, and the last pass still sends the whole folder, once."""
    from mlflow.tracking import MlflowClient
    from support.mlflow_server import assert_metrics_equal

    from lightning_track.folder.layout import RunLayout
    from lightning_track.sinks import mlflow as sink_module
    from lightning_track.sinks.base import SinkContext

    logger = RunLogger("toy", "short", root=tmp_path / "runs", sinks=(), console=False, system_interval=0)
    sink = sink_module.MlflowSink()
    sink.interval = 600.0  # longer than this "training", however busy the machine
    monkeypatch.setattr(sink_module, "_importing", None)  # as in a fresh sink host
    sink_module.MlflowSink.warm_up()  # what the sink host calls as it starts
    sink.open(SinkContext(layout=RunLayout(logger.run_dir), dataset="toy", method="short",
                          options={"mlflow": {"uri": bare_mlflow_server.uri}}))
    for step in range(1, 6):
        logger.log_metrics({"train/loss": 1.0 / step}, step=step)
        sink.write([])
    logger.finalize("success")
    assert logger.wait(60)
    assert sink_module._importing is None  # "training" took less than a pass interval: no import, no pass
    sink.close("completed")
    run = logger.run_dir
    run_id = json.loads((run / "export.json").read_text())["targets"][bare_mlflow_server.uri]["run_id"]
    client = MlflowClient(bare_mlflow_server.uri)
    assert client.get_run(run_id).info.status == "FINISHED"
    assert assert_metrics_equal(client, run_id, run) == 5
    assert export_run(run, bare_mlflow_server.uri).nothing_new


def test_the_training_process_imports_only_the_target_parser_for_an_mlflow_sink(tmp_path: Path) -> None:
    """The exporting machinery (run reader, catalog rows) stays out of the training process: its long-lived objects
    had moved one full garbage collection (~0.2 s) into a 2,000-step fit (benchmarks/results/export.md)."""
    code = ("import sys\n"
            "from lightning_track import RunLogger\n"
            f"logger = RunLogger('d', 'm', root={str(tmp_path)!r}, sinks=('tensorboard', 'mlflow'),"
            " mlflow_uri='http://127.0.0.1:9', system_interval=0)\n"
            "logger.log_metrics({'loss': 1.0}, step=1)\n"
            "ours = ('lightning_track.query', 'lightning_track.export')\n"
            "print(sorted(m for m in sys.modules if m.startswith(ours)))\n"
            "logger.finalize('success')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120,
                         env=script_env())
    imported = out.stdout.strip().splitlines()[-1]
    assert imported == str(["lightning_track.export", "lightning_track.export.mlflow_client",
                            "lightning_track.export.target"])


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"sinks": ("mlflow",), "mlflow_uri": "ftp://host"}, "not a supported tracker"),
    ({"sinks": ("mlflow",)}, "pass mlflow_uri=URI or set $MLFLOW_TRACKING_URI"),
    ({"sinks": ("tensorboard",), "mlflow_uri": "http://127.0.0.1:1"}, "mlflow_uri is set but 'mlflow' is not in sinks"),
    ({"sinks": ("mlflow",), "mlflow_uri": "http://127.0.0.1:1", "sink_process": False}, "leave sink_process=True"),
])
def test_a_live_mlflow_sink_that_cannot_work_is_refused_before_the_folder_exists(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kwargs: dict, says: str) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ConfigError, match=says.replace("$", r"\$").replace("(", r"\(")):
        RunLogger("toy", "live", root=tmp_path / "runs", **kwargs)
    assert not (tmp_path / "runs").exists()


def test_a_server_down_from_the_start_costs_one_line_and_the_record_says_what_was_not_sent(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    import lightning as L

    from lightning_track.training.demo import DemoDataModule, DemoModule

    secret = "-".join(("pw", str(free_port())))  # spelled nowhere in a file (the run captures this test's source)
    uri = f"http://alice:{secret}@127.0.0.1:{free_port()}"  # nothing listens there; credentials never written
    logger = RunLogger("toy", "live", root=tmp_path / "runs", sinks=("mlflow",), mlflow_uri=uri, console=False,
                       system_interval=0, config={"lr": 0.01, "tracker": uri})
    trainer = L.Trainer(max_steps=30, logger=logger, log_every_n_steps=1, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, accelerator="cpu",
                        num_sanity_val_steps=0, val_check_interval=10)
    trainer.fit(DemoModule(max_steps=30), datamodule=DemoDataModule(n_train=512, n_val=64))
    assert logger.wait(120)
    run = logger.run_dir
    err = capfd.readouterr().err
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    lines = warnings_about_mlflow(err)
    assert len(lines) == 1, err  # one line, not one per pass
    bare = uri.replace(f"alice:{secret}@", "")
    assert lines[0].startswith(f"lightning_track: MLflow at {bare} failed") and f"--to {bare}" in lines[0]
    entry = json.loads((run / "export.json").read_text())["targets"][bare]
    assert "run_id" not in entry and "sent" not in entry  # nothing recorded as sent
    records = (run / "metrics.jsonl").read_bytes()
    assert entry["not_sent"]["metrics.jsonl"] == {"bytes": len(records), "records": records.count(b"\n")}
    assert entry["not_sent"]["why"]
    for path in [p for p in run.rglob("*") if p.is_file()]:
        assert secret.encode() not in path.read_bytes(), path
    assert secret not in err


TRAIN = """
import sys, time
from pathlib import Path
import lightning as L
from lightning_track import RunLogger
from lightning_track.training.demo import DemoDataModule, DemoModule

root, gates = sys.argv[1], Path(sys.argv[2])

class Gates(L.Callback):
    # at these steps, wait for the test to say go (the server stopped, started, caught up)
    def on_train_batch_end(self, trainer, *args):
        step = trainer.global_step
        (gates / f"at-{step}").touch()
        if step in (40, 80, 120):
            while not (gates / f"go-{step}").exists():
                time.sleep(0.05)

logger = RunLogger("toy", "live", root=root, sinks=("mlflow",), system_interval=1.0,  # $MLFLOW_TRACKING_URI
                   config={"model": {"lr": 0.01, "hidden": 64}, "seed": 0})
L.seed_everything(0, verbose=False)
trainer = L.Trainer(max_steps=140, logger=logger, callbacks=[Gates()], log_every_n_steps=1, val_check_interval=10,
                    enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                    accelerator="cpu", num_sanity_val_steps=0)
trainer.fit(DemoModule(max_steps=140), datamodule=DemoDataModule(n_train=512, n_val=64))
"""


def _wait_for(what: str, check, proc: subprocess.Popen, timeout: float = 180.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        assert proc.poll() is None, f"training ended while waiting for {what}: {proc.communicate()}"
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"timed out waiting for {what}: {proc.communicate()}")


@pytest.mark.slow
@pytest.mark.timeout(900)  # the server starts twice; on a busy 2-core machine each start takes up to minutes
def test_a_server_stopped_and_started_mid_run_ends_equal_to_the_folder_and_lt_export_then_sends_nothing(
        _mlflow_process, tmp_path: Path) -> None:
    """Steps 1-40 with the server up (the MLflow run is live), 41-80 with it stopped, then it is started
    again on the same database and port: the sink catches up while training goes on, and the finished
    MLflow run holds metrics.jsonl value for value, each once."""
    from mlflow.tracking import MlflowClient
    from support.mlflow_server import assert_metrics_equal, metric_history

    server = _mlflow_process
    server.wait()
    client = MlflowClient(server.uri)
    gates = tmp_path / "gates"
    gates.mkdir()
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    root = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, str(script), str(root), str(gates)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=script_env(MLFLOW_TRACKING_URI=server.uri))
    try:
        _wait_for("step 40", lambda: (gates / "at-40").exists(), proc)
        run = next(root.glob("toy_live_*"))

        def in_folder() -> int:  # train/loss values in metrics.jsonl (training waits at a gate: it stays)
            return (run / "metrics.jsonl").read_text().count('"train/loss"')

        def live_run_id() -> str | None:
            path = run / "export.json"
            entry = json.loads(path.read_text())["targets"].get(server.uri, {}) if path.exists() else {}
            run_id = entry.get("run_id")
            held = len(metric_history(client, run_id, "train/loss")) if run_id else 0
            return run_id if held >= 30 and held == in_folder() else None

        run_id = _wait_for("the live MLflow run to hold every step so far", live_run_id, proc)
        assert client.get_run(run_id).info.status == "RUNNING"
        server.stop()
        (gates / "go-40").touch()
        _wait_for("step 80 with the server down", lambda: (gates / "at-80").exists(), proc)
        time.sleep(3)  # a pass or two fails meanwhile
        server.start()
        server.wait()
        (gates / "go-80").touch()
        _wait_for("step 120", lambda: (gates / "at-120").exists(), proc)
        _wait_for("the sink to catch up while training goes on",
                  lambda: len(metric_history(client, run_id, "train/loss")) == in_folder() >= 110, proc)
        (gates / "go-120").touch()
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        if server.proc is None:
            server.start()
            server.wait()
    assert proc.returncode == 0, err
    assert len(warnings_about_mlflow(err)) == 1, err  # one line for the outage
    entry = json.loads((run / "export.json").read_text())["targets"][server.uri]
    assert entry["run_id"] == run_id and "not_sent" not in entry
    got = client.get_run(run_id)
    assert got.info.status == "FINISHED" and got.data.tags["status"] == "completed"
    assert got.data.params == run_params(read_run(run))
    assert assert_metrics_equal(client, run_id, run) == sum(
        len(json.loads(line)["metrics"]) for line in (run / "metrics.jsonl").read_text().splitlines())
    again = export_run(run, server.uri)
    assert again.nothing_new, again.line()  # the live sink left nothing for lt export, and it doubles nothing


def test_the_last_pass_waits_for_finalize_summary_and_plot(tmp_path: Path) -> None:
    """What the sink's close waits for: this attempt's final status in summary.json and the plot drawn after it."""
    from lightning_track.folder.layout import RunLayout
    from lightning_track.sinks.mlflow import folder_final

    logger = RunLogger("toy", "final", root=tmp_path, sinks=("tensorboard",), console=False, system_interval=0)
    for step in range(1, 4):
        logger.log_metrics({"train/loss": 1.0 / step}, step=step)
    logger.save()
    run = logger.run_dir
    assert not folder_final(run, 1)  # running
    logger.finalize("success")
    assert logger.wait(120)
    assert folder_final(run, 1) and not folder_final(run, 2)  # attempt 2 never ran
    (run / RunLayout.RUN_PLOT).unlink()
    assert not folder_final(run, 1)  # the plot not drawn yet
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "plots_error": "no plot"}))
    assert folder_final(run, 1)  # a plot that failed is not waited for
