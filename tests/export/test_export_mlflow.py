"""lt export into a real MLflow tracking server (SQLite, its own artifact store), read back with MLflow's
own client and compared with the run folder value by value."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.mlflow_server import assert_metrics_equal

from lightning_track.cli.lt import main as lt_main
from lightning_track.errors import ExportError
from lightning_track.export import export_run
from lightning_track.export.record import export_lock
from lightning_track.folder.fileio import atomic_write_json
from lightning_track.folder.records import flatten, read_metrics
from lightning_track.query.annotations import change_tags, set_notes
from lightning_track.vocabulary import iso_time, parse_iso_time

pytestmark = pytest.mark.slow


def entry_of(run: Path, server) -> dict:
    return json.loads((run / "export.json").read_text())["targets"][server.uri]


def test_a_completed_run_lands_in_mlflow_value_for_value_and_a_second_export_sends_nothing(
        runs_copy, client, mlflow_server, capsys) -> None:
    from support.mlflow_server import artifact_paths

    run = runs_copy["done"]
    port = mlflow_server.uri.rsplit(":", 1)[1]
    assert lt_main(["export", str(run), "--to", f"mlflow://127.0.0.1:{port}"]) == 0
    out = capsys.readouterr().out
    entry = entry_of(run, mlflow_server)
    assert out.startswith(f"{run.name}: sent ") and entry["run_id"] in out
    got = client.get_run(entry["run_id"])
    summary = json.loads((run / "summary.json").read_text())
    assert got.info.run_name == run.name and client.get_experiment(got.info.experiment_id).name == "arc"
    assert got.info.status == "FINISHED"
    assert got.info.start_time == int(parse_iso_time(summary["start_time"]) * 1000)
    assert got.info.end_time == int(parse_iso_time(summary["end_time"]) * 1000)
    config = flatten(yaml.safe_load((run / "config.yaml").read_text()))
    assert got.data.params == {k: json.dumps(v) if isinstance(v, list) else str(v) for k, v in config.items()}
    assert got.data.params["hf_token"] == "***REDACTED***" and got.data.params["layers"] == "[1, 2]"
    tags = got.data.tags
    assert {k: tags[k] for k in ("status", "dataset", "method", "folder", "attempts", "tag.baseline",
                                 "mlflow.note.content")} == {
        "status": "completed", "dataset": "arc", "method": "lora", "folder": run.name, "attempts": "1",
        "tag.baseline": "true", "mlflow.note.content": "first try"}
    assert tags["host"] == json.loads((run / "meta.json").read_text())["host"]
    assert "hf_abc123" not in json.dumps([got.data.params, tags])
    assert assert_metrics_equal(client, entry["run_id"], run) > 40
    assert any(key.startswith("system/") for key in got.data.metrics)  # system.jsonl's samples
    files = artifact_paths(client, entry["run_id"])
    assert {"config.yaml", "summary.json", "meta.json", "logs.txt", "report_draft.md", "plots/metrics.png"} <= files
    assert not any(f.startswith("checkpoints/") for f in files)  # only with --with-checkpoints

    assert lt_main(["export", str(run), "--to", mlflow_server.uri]) == 0
    assert capsys.readouterr().out == f"{run.name}: up to date in {mlflow_server.uri} run {entry['run_id']}\n"
    assert entry_of(run, mlflow_server)["run_id"] == entry["run_id"]


def test_a_failed_run_keeps_its_nan_and_says_why(runs_copy, client, mlflow_server) -> None:
    run = runs_copy["nan"]
    result = export_run(run, mlflow_server.uri)
    got = client.get_run(result.run_id)
    assert got.info.status == "FAILED" and got.data.tags["status"] == "failed"
    assert "loss" in got.data.tags["reason"].lower()
    history = {m.step: m.value for m in client.get_metric_history(result.run_id, "train/ratio")}
    assert history[4] == 1.0 and math.isnan(history[7])  # NaN stays NaN
    assert (history[5], history[6]) == (sys.float_info.max, -sys.float_info.max)  # MLflow's infinities
    folder = {r.step: r.metrics["train/ratio"] for r in read_metrics(run / "metrics.jsonl")
              if "train/ratio" in r.metrics}
    assert (folder[5], folder[6]) == (math.inf, -math.inf)
    assert assert_metrics_equal(client, result.run_id, run) == result.values


def test_a_resumed_run_that_moved_records_aside_is_created_again_with_exactly_the_folder(
        runs_copy, client, mlflow_server, resume) -> None:
    from support.mlflow_server import artifact_paths

    run = runs_copy["resumed"]
    first = export_run(run, mlflow_server.uri)
    assert client.get_run(first.run_id).info.status == "FAILED"
    assert max(r.step for r in read_metrics(run / "metrics.jsonl")) > 8  # past the last checkpoint (step 8)
    resume(run)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["attempts"][-1]["dropped_records"] > 0
    again = export_run(run, mlflow_server.uri, with_checkpoints=True)
    assert again.run_id != first.run_id
    assert client.get_run(first.run_id).info.lifecycle_stage == "deleted"
    assert [n for n in again.notes if "created again" in n] == [
        f"a resume moved records of metrics.jsonl aside and MLflow cannot delete metric values, so the MLflow run "
        f"{first.run_id} was deleted: created again as {again.run_id}"]
    got = client.get_run(again.run_id)
    assert got.info.status == "FINISHED" and got.data.tags["attempts"] == "2"
    assert assert_metrics_equal(client, again.run_id, run) == again.values  # no superseded value, none twice
    assert [r["old_run_id"] for r in entry_of(run, mlflow_server)["recreated"]] == [first.run_id]
    sent = {p for p in artifact_paths(client, again.run_id) if p.startswith("checkpoints/")}
    files = {f"checkpoints/{p.name}" for p in (run / "checkpoints").glob("*.ckpt") if not p.is_symlink()}
    assert sent == files and files  # --with-checkpoints


def test_a_running_run_exported_twice_sends_only_the_new_lines(runs_copy, client, mlflow_server) -> None:
    run = runs_copy["done"]
    whole = (run / "metrics.jsonl").read_bytes()
    summary = (run / "summary.json").read_bytes()
    lines = whole.splitlines(keepends=True)
    (run / "metrics.jsonl").write_bytes(b"".join(lines[:10]) + lines[10][:25])  # a line still being written
    running = json.loads(summary)
    running.update(status="running", heartbeat=iso_time())
    for key in ("end_time", "final", "best"):
        running.pop(key, None)
    atomic_write_json(run / "summary.json", running)
    first = export_run(run, mlflow_server.uri)
    assert client.get_run(first.run_id).info.status == "RUNNING"
    early = sum(len(r.metrics) for r in read_metrics(run / "metrics.jsonl", problems=[]))
    assert first.values == early

    (run / "metrics.jsonl").write_bytes(whole)  # the writer went on and the run completed
    (run / "summary.json").write_bytes(summary)
    change_tags(run, add=["keep"], remove=["baseline"])  # lt tag RUN +keep -baseline
    set_notes(run, "second look: fine")
    second = export_run(run, mlflow_server.uri)
    assert second.run_id == first.run_id
    tags = client.get_run(first.run_id).data.tags
    assert tags["tag.keep"] == "true" and "tag.baseline" not in tags
    assert tags["mlflow.note.content"] == "second look: fine" and tags["status"] == "completed"
    assert second.tags == 4  # status, tag.keep and the notes set; tag.baseline removed
    assert second.values == sum(len(r.metrics) for r in read_metrics(run / "metrics.jsonl")) - early
    assert second.status == "FINISHED" and client.get_run(first.run_id).info.status == "FINISHED"
    assert assert_metrics_equal(client, first.run_id, run) == first.values + second.values


def test_a_run_deleted_on_the_server_is_created_again_and_a_locked_run_is_refused(
        runs_copy, client, mlflow_server) -> None:
    run = runs_copy["nan"]
    first = export_run(run, mlflow_server.uri, experiment="team-board")
    client.delete_run(first.run_id)
    again = export_run(run, mlflow_server.uri, experiment="team-board")
    assert again.notes == [f"the MLflow run {first.run_id} was deleted on the server: created again as "
                           f"{again.run_id}"]
    assert client.get_experiment(client.get_run(again.run_id).info.experiment_id).name == "team-board"
    assert assert_metrics_equal(client, again.run_id, run) == again.values
    before = (run / "export.json").read_bytes()
    with export_lock(run):
        with pytest.raises(ExportError, match="another lt export of this run is in progress; nothing sent"):
            export_run(run, mlflow_server.uri)
    assert (run / "export.json").read_bytes() == before


def test_an_unreachable_tracker_is_one_line_exit_1_nothing_recorded_and_no_password(runs_copy) -> None:
    from support.processes import script_env
    from support.sync import free_port

    run = runs_copy["done"]
    port = free_port()
    done = subprocess.run([sys.executable, "-m", "lightning_track.cli.lt", "export", str(run), "--to",
                           f"http://bob:hunter2@127.0.0.1:{port}"], capture_output=True, text=True,
                          env=script_env(), timeout=120)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.splitlines() == [f"lt export: http://127.0.0.1:{port}: the MLflow tracker cannot be reached "
                                        "(Connection refused); nothing was sent"]
    assert "hunter2" not in done.stderr and "bob" not in done.stderr
    assert not (run / "export.json").exists()


def test_a_param_the_server_refuses_is_recorded_and_the_rest_is_sent(runs_copy, client, mlflow_server) -> None:
    run = runs_copy["done"]
    first = export_run(run, mlflow_server.uri)
    client.log_param(first.run_id, "extra.owner", "someone else")  # another writer got there first
    with open(run / "config.yaml", "a") as config:
        config.write("extra:\n  owner: me\n  added: 7\n")
    again = export_run(run, mlflow_server.uri)
    params = client.get_run(first.run_id).data.params
    assert params["extra.owner"] == "someone else" and params["extra.added"] == "7"
    (refused,) = entry_of(run, mlflow_server)["refused"]
    assert (refused["kind"], refused["name"]) == ("param", "extra.owner")
    assert "Changing param values is not allowed" in refused["why"]
    assert again.notes == [f"MLflow refused param 'extra.owner': {refused['why']}"] and again.params == 1
    assert export_run(run, mlflow_server.uri).nothing_new  # not asked again


def test_a_root_exports_each_run_with_progress_and_credentials_stay_out_of_files_and_output(
        runs_copy, client, mlflow_server, capsys) -> None:
    root = runs_copy["done"].parent
    with_password = mlflow_server.uri.replace("://", "://bob:hunter2@")
    assert lt_main(["export", str(root), "--to", with_password, "--experiment", "all-of-root"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert [line.split(" ", 1)[0] for line in lines] == ["[1/3]", "[2/3]", "[3/3]"]
    assert all(mlflow_server.uri in line for line in lines) and "hunter2" not in out + err
    for run in runs_copy.values():
        assert list(json.loads((run / "export.json").read_text())["targets"]) == [mlflow_server.uri]
        assert b"hunter2" not in (run / "export.json").read_bytes()
    experiment = client.get_experiment_by_name("all-of-root")
    names = {r.info.run_name for r in client.search_runs([experiment.experiment_id])}
    assert names == {path.name for path in runs_copy.values()}


def test_an_interrupted_export_continues_where_the_tracker_confirmed(runs_copy, client, mlflow_server,
                                                                     monkeypatch) -> None:
    from lightning_track.export import open_exporter
    from lightning_track.folder.fileio import JsonlAppender

    run = runs_copy["done"]
    with JsonlAppender(run / "metrics.jsonl") as out:  # more values than two batches of 1,000
        for step in range(21, 341):
            values = {f"extra/m{k}": step * 0.5 + k for k in range(10)}
            out.append({"step": step, "time": 1.8e9 + step, "metrics": values})
    total = sum(len(r.metrics) for r in read_metrics(run / "metrics.jsonl"))
    with open_exporter(mlflow_server.uri) as exporter:
        real = exporter.client.log_batch
        calls = []

        def log_batch(run_id, metrics=(), **kw):  # Ctrl+C arrives during the third batch of values
            if metrics:
                calls.append(len(metrics))
                if len(calls) == 3:
                    raise KeyboardInterrupt
            return real(run_id, metrics=metrics, **kw)

        monkeypatch.setattr(exporter.client, "log_batch", log_batch)
        with pytest.raises(KeyboardInterrupt):
            export_run(run, exporter=exporter)
    confirmed = sum(calls[:2])
    entry = entry_of(run, mlflow_server)
    assert confirmed >= 1000 and entry["sent"]["metrics.jsonl"]["bytes"] < (run / "metrics.jsonl").stat().st_size
    again = export_run(run, mlflow_server.uri)
    assert again.run_id == entry["run_id"] and again.values == total - confirmed  # nothing sent twice
    assert assert_metrics_equal(client, again.run_id, run) == total


def test_the_mlflow_run_carries_the_checkpoint_lineage(runs_copy, client, mlflow_server, resume, tmp_path) -> None:
    from lightning_track import FinalModelExport
    from lightning_track.folder.fileio import file_sha256

    run = runs_copy["resumed"]  # failed at step 11; the resume continues from checkpoint-step-008
    resume(run, 16, (FinalModelExport(),))
    result = export_run(run, mlflow_server.uri)
    tags = client.get_run(result.run_id).data.tags
    index = json.loads((run / "checkpoints.json").read_text())["checkpoints"]
    (model,) = [e for e in index if e.get("kind") == "model"]
    eight = run / "checkpoints" / "checkpoint-step-008.ckpt"
    sixteen = run / "checkpoints" / "checkpoint-step-016.ckpt"
    assert tags["lineage.attempt_2.resumed_from"] == "checkpoints/checkpoint-step-008.ckpt"
    assert tags["lineage.attempt_2.resumed_from_step"] == "8"
    assert tags["lineage.attempt_2.resumed_from_sha256"] == file_sha256(eight)
    assert tags["lineage.final_model.step"] == "16"
    assert tags["lineage.final_model.checkpoint"] == "checkpoints/checkpoint-step-016.ckpt"
    assert tags["lineage.final_model.checkpoint_sha256"] == file_sha256(sixteen)
    assert json.loads(tags["lineage.final_model.files"]) == {
        "model.safetensors": file_sha256(run / "final_model" / "model.safetensors")} == model["files"]
    assert tags["lineage.checkpoints"] == str(sum(1 for e in index if e.get("kind") != "model"))
    fetched = client.download_artifacts(result.run_id, "checkpoints.json", str(tmp_path))
    assert Path(fetched).read_bytes() == (run / "checkpoints.json").read_bytes()
    if importlib.util.find_spec("wandb") is not None:  # the W&B run carries the same lineage in its summary
        from support.wandb_log import read_run

        assert lt_main(["export", str(run), "--to", "wandb", "--dir", str(tmp_path / "wb")]) == 0
        (folder,) = (tmp_path / "wb" / "wandb").glob("offline-run-*")
        summary = read_run([folder]).summary
        lineage = {key: str(value) for key, value in summary.items() if key.startswith("lineage.")}
        assert lineage == {key: value for key, value in tags.items() if key.startswith("lineage.")}


def test_a_run_created_by_an_export_stopped_before_its_record_is_found_again_not_doubled(
        runs_copy, client, mlflow_server, monkeypatch) -> None:
    from lightning_track.export import open_exporter

    run = runs_copy["nan"]
    with open_exporter(mlflow_server.uri) as exporter:
        real = exporter.client.create_run

        def create_run(*args, **kw):  # the server creates the run; Ctrl+C arrives before the reply is used
            real(*args, **kw)
            raise KeyboardInterrupt

        monkeypatch.setattr(exporter.client, "create_run", create_run)
        with pytest.raises(KeyboardInterrupt):
            export_run(run, exporter=exporter, experiment="stopped-at-create")
    assert "run_id" not in entry_of(run, mlflow_server)
    again = export_run(run, mlflow_server.uri, experiment="stopped-at-create")
    experiment = client.get_experiment_by_name("stopped-at-create")
    assert [r.info.run_id for r in client.search_runs([experiment.experiment_id])] == [again.run_id]
    assert "creating" not in entry_of(run, mlflow_server)
    assert assert_metrics_equal(client, again.run_id, run) == again.values


def test_an_export_killed_mid_batch_leaves_a_record_the_server_holds_and_the_next_sends_exactly_the_rest(
        runs_copy, client, mlflow_server) -> None:
    import os
    import signal
    import time

    from support.mlflow_server import metric_history
    from support.processes import script_env

    from lightning_track.folder.fileio import JsonlAppender
    from lightning_track.folder.records import read_metrics_since

    run = runs_copy["done"]
    with JsonlAppender(run / "metrics.jsonl") as out:  # 30 batches of 1,000 values: the kill lands mid-export
        for step in range(21, 3021):
            values = {f"extra/m{k}": step * 0.5 + k for k in range(10)}
            out.append({"step": step, "time": 1.8e9 + step, "metrics": values})
    total = sum(len(r.metrics) for r in read_metrics(run / "metrics.jsonl"))
    export = subprocess.Popen([sys.executable, "-m", "lightning_track.cli.lt", "export", str(run), "--to",
                               mlflow_server.uri], env=script_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline, sent = time.monotonic() + 300, 0
    while time.monotonic() < deadline and export.poll() is None:  # SIGKILL once a few batches are recorded
        if (run / "export.json").exists():
            sent = entry_of(run, mlflow_server).get("sent", {}).get("metrics.jsonl", {}).get("records", 0)
            if sent >= 300:
                os.kill(export.pid, signal.SIGKILL)
                break
        time.sleep(0.01)
    assert export.wait(60) == -signal.SIGKILL, export.stderr.read()
    entry = entry_of(run, mlflow_server)
    recorded, _ = read_metrics_since(run / "metrics.jsonl", 0, [], limit=entry["sent"]["metrics.jsonl"]["bytes"])
    assert len(recorded) == entry["sent"]["metrics.jsonl"]["records"] >= 300
    assert entry["sent"]["metrics.jsonl"]["bytes"] < (run / "metrics.jsonl").stat().st_size
    held = {step for step, _, _ in metric_history(client, entry["run_id"], "extra/m9")}
    assert {r.step for r in recorded if "extra/m9" in r.metrics} <= held  # the record never runs ahead of the server

    again = export_run(run, mlflow_server.uri)
    assert again.run_id == entry["run_id"]
    assert again.values == total - sum(len(r.metrics) for r in recorded)  # from where the record says, no further back
    assert assert_metrics_equal(client, again.run_id, run) == total  # each value once, none missing
    assert export_run(run, mlflow_server.uri).nothing_new


def test_a_migrated_run_lands_in_mlflow_value_for_value_like_any_run(client, mlflow_server, tmp_path) -> None:
    """A legacy run made into a run folder by lt-migrate exports as one the RunLogger wrote."""
    from lightning_track.cli.migrate import main as migrate_main
    from lightning_track.migrate import make_example

    legacy = tmp_path / "experiments"
    make_example(legacy, runs=1, steps=40, checkpoints=2, ckpt_mb=0.01)
    out = tmp_path / "runs"
    assert migrate_main([str(legacy), "--out", str(out), "--jobs", "1"]) == 0
    (run,) = [path for path in out.iterdir() if (path / "summary.json").is_file()]
    summary = json.loads((run / "summary.json").read_text())
    first = export_run(run, mlflow_server.uri)
    got = client.get_run(first.run_id)
    assert got.info.run_name == run.name and got.data.tags["folder"] == run.name
    assert got.data.tags["status"] == summary["status"] and got.data.tags["dataset"] == summary["dataset"]
    assert first.values == sum(len(r.metrics) for r in read_metrics(run / "metrics.jsonl")) > 0
    assert assert_metrics_equal(client, first.run_id, run) == first.values
    config = flatten(yaml.safe_load((run / "config.yaml").read_text()) or {})
    assert set(config) <= set(got.data.params)
    again = export_run(run, mlflow_server.uri)  # nothing new
    assert again.run_id == first.run_id and again.values == 0
