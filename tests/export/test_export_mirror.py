"""lt-sync SRC MIRROR --export URI: what each pass mirrored goes on to a real MLflow server, from the mirror,
exactly once; the source is never touched and later passes never overwrite the mirror's export record."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.mlflow_server import assert_metrics_equal
from support.processes import script_env
from support.sync import append_steps, free_port, make_run, tree

from lightning_track.cli.sync import main as sync_main
from lightning_track.export.mirror import MirrorExport, runs_touched
from lightning_track.export.target import parse_target
from lightning_track.folder.fileio import atomic_write_json
from lightning_track.folder.records import read_metrics
from lightning_track.sync import SyncOptions, sync_once
from lightning_track.vocabulary import iso_time

RUN = "arc_lora_20250101_120000"
RECORD = "export.mirror.json"


def test_runs_touched_are_the_runs_holding_a_changed_path() -> None:
    runs = ["a_x_20250101_000000", "gpu1/b_y_20250101_000000", "gpu1/c_z_20250101_000000"]
    changed = ["a_x_20250101_000000/metrics.jsonl", "gpu1/b_y_20250101_000000/plots/metrics.png",
               "signals/exp.done", "gpu1/c_z_20250101_000000x/metrics.jsonl"]
    assert runs_touched(runs, changed) == {"a_x_20250101_000000", "gpu1/b_y_20250101_000000"}


def _sent(run: Path, uri: str) -> dict:
    path = run / RECORD
    if not path.exists():
        return {}
    return json.loads(path.read_text())["targets"].get(uri, {})


def _wait(check, what: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc.poll() is not None:
            raise AssertionError(f"lt-sync exited with {proc.returncode}: {proc.stderr.read()}")
        time.sleep(0.2)
    proc.terminate()
    raise AssertionError(f"timed out waiting for {what}: {proc.communicate(timeout=30)}")


@pytest.mark.slow
def test_every_pass_exports_the_growing_run_it_mirrored_exactly_once(bare_mlflow_server, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = bare_mlflow_server.uri
    client = MlflowClient(uri)
    src, mirror = tmp_path / "src", tmp_path / "mirror"
    run = make_run(src, RUN, steps=10)
    summary = json.loads((run / "summary.json").read_text())
    atomic_write_json(run / "summary.json", {**summary, "heartbeat": iso_time()})  # running, and alive
    proc = subprocess.Popen([sys.executable, "-m", "lightning_track.cli.sync", str(src), str(mirror), "--every",
                             "0.5", "--delete", "--state", "", "--export", uri.replace("http", "mlflow", 1),
                             "--export-experiment", "mirrored"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=script_env())
    copy = mirror / RUN
    try:
        _wait(lambda: _sent(copy, uri).get("sent", {}).get("metrics.jsonl", {}).get("records") == 10,
              "the first pass's export", proc)
        first = _sent(copy, uri)
        got = client.get_run(first["run_id"])
        assert got.info.status == "RUNNING" and got.info.run_name == RUN
        assert [m.step for m in client.get_metric_history(first["run_id"], "train/loss")] == list(range(10))

        append_steps(run, 10, 20)  # the run goes on and completes on the GPU server
        summary.update(status="completed", end_time="2025-01-01T12:05:00+00:00")
        atomic_write_json(run / "summary.json", summary)
        _wait(lambda: _sent(copy, uri).get("status") == "FINISHED"
              and _sent(copy, uri)["sent"]["metrics.jsonl"]["records"] == 30, "the second pass's export", proc)
        time.sleep(1.5)  # a few more passes with nothing new: they must neither send again nor touch the record
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in err, err
    entry = _sent(copy, uri)
    assert entry["run_id"] == first["run_id"] and entry["experiment"] == "mirrored"
    experiment = client.get_experiment_by_name("mirrored")
    assert [r.info.run_id for r in client.search_runs([experiment.experiment_id])] == [first["run_id"]]
    assert client.get_run(first["run_id"]).info.status == "FINISHED"
    assert assert_metrics_equal(client, first["run_id"], copy) == 60  # 30 steps x (train/loss, epoch), none twice
    assert (copy / "metrics.jsonl").read_bytes() == (run / "metrics.jsonl").read_bytes()
    sends = [line for line in err.splitlines() if line.startswith(f"lt-sync: export: {RUN}: sent ")]
    assert len(sends) == 2 and "status RUNNING" in sends[0] and "status FINISHED" in sends[1], err
    # the source is never modified; the mirror's record is the mirror's own, kept by every --delete pass
    assert not (run / RECORD).exists() and not (run / "export.json").exists()
    assert not (copy / "export.json").exists()
    assert {k: v for k, v in tree(mirror).items() if not k.endswith(RECORD)} == tree(src)


@pytest.mark.slow
def test_a_tracker_down_is_one_line_a_pass_the_mirror_goes_on_and_the_run_is_sent_when_it_is_back(
        bare_mlflow_server, tmp_path: Path, capsys) -> None:
    from mlflow.tracking import MlflowClient

    src, mirror = tmp_path / "src", tmp_path / "mirror"
    make_run(src, RUN, steps=12, status="completed")
    dead = f"http://127.0.0.1:{free_port()}"
    assert sync_main([str(src), str(mirror), "--state", "", "--export", dead]) == 1  # the sync itself went well
    out, err = capsys.readouterr()
    assert tree(mirror) == tree(src) and out.count(" new, ") == 1  # one pass, all mirrored
    assert err.splitlines() == [f"lt-sync: export: {dead}: the MLflow tracker cannot be reached (Connection "
                                "refused); nothing was sent; 1 run left for the next pass"]
    assert not (mirror / RUN / RECORD).exists()

    lines: list[str] = []
    exporter = MirrorExport(mirror, dead, say=lines.append)
    assert exporter.after_pass([]) == 0 and exporter.pending == {RUN}  # the first pass owes every run
    exporter.target = parse_target(bare_mlflow_server.uri)  # the tracker is back
    append_steps(src / RUN, 12, 3)
    plan = sync_once(src, mirror, SyncOptions(state_path="")).plan
    assert exporter.after_pass(a.rel for a in plan.actions) == 1 and not exporter.pending
    assert exporter.after_pass([]) == 0  # nothing changed, nothing owed
    entry = _sent(mirror / RUN, bare_mlflow_server.uri)
    client = MlflowClient(bare_mlflow_server.uri)
    assert assert_metrics_equal(client, entry["run_id"], mirror / RUN) == 2 * 15
    assert len(lines) == 2 and lines[1].startswith(f"export: {RUN}: sent 30 values")
    assert [r.step for r in read_metrics(mirror / RUN / "metrics.jsonl")] == list(range(15))
