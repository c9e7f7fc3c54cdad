"""lt export --to wandb and the "wandb" sink, with W&B's real SDK in offline mode: the written runs read
back from their ``.wandb`` transaction logs (W&B's own record type) and compared with the run folder value
for value; exporting again sends only what is new, never twice."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lightning_track import HealthGuard, RunLogger
from lightning_track.cli.lt import main as lt_main
from lightning_track.folder.fileio import keep_jsonl_before
from lightning_track.folder.records import read_metrics
from lightning_track.query.runs import read_run as read_folder

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("wandb-export")]  # one worker builds the runs once
pytest.importorskip("wandb", reason="the wandb extra is not installed (pip install 'lightning-track[wandb]')")

CONFIG = {"model": {"lr": 0.01, "hidden": 64}, "seed": 0, "hf_token": "hf_abc123", "layers": [1, 2]}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from export.conftest import NanAt, fit

    root = tmp_path_factory.mktemp("wb") / "runs"
    runs = {"done": fit(RunLogger("arc", "lora", root=root, sinks=(), config=CONFIG, tags=["baseline", "b2"],
                                  notes="first try"), 20)}
    runs["nan"] = fit(RunLogger("toy", "nan", root=root, sinks=(), config=CONFIG), 20,
                      [HealthGuard(warmup_steps=100, loss_threshold=None)], module=NanAt(12, max_steps=20))
    return runs


@pytest.fixture
def copies(made: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    """Copies of the runs, each with console lines in logs.txt (pytest's capture keeps a fit's own)."""
    dest = tmp_path / "runs"
    dest.mkdir()
    copied = {key: Path(shutil.copytree(path, dest / path.name, symlinks=True)) for key, path in made.items()}
    for key, run in copied.items():
        with open(run / "logs.txt", "a") as logs:
            logs.write(f"2026-12-07T00:00:00+00:00 epoch 0: {key} ✓\n2026-12-07T00:00:01+00:00 \x1b[31mred\x1b[0m\n")
    return copied


def segments(wandb_dir: Path, run_id: str) -> list[Path]:
    """The run's segment folders in the order they were written (W&B's start times)."""
    return sorted(wandb_dir.glob(f"offline-run-*-{run_id}*"), key=lambda p: p.stat().st_mtime_ns)


def entry(run: Path, target: str) -> dict:
    return json.loads((run / "export.json").read_text())["targets"][target]


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def assert_history_is_the_folder(history: list[dict], run: Path) -> None:
    """One row per step, in step order, holding every value metrics.jsonl holds at that step (the later
    one where a metric was logged twice), at the time the last of them was logged."""
    want: dict[int, dict] = {}
    times: dict[int, float] = {}
    for record in read_metrics(run / "metrics.jsonl"):
        want.setdefault(record.step, {}).update(record.metrics)
        times[record.step] = max(times.get(record.step, 0.0), record.time)
    assert [row["_step"] for row in history] == sorted(want)
    for row in history:
        step = row["_step"]
        got = {k: v for k, v in row.items() if not k.startswith("_")}
        assert set(got) == set(want[step]), step
        assert all(same(float(got[k]), want[step][k]) for k in got), (step, got, want[step])
        assert row["_timestamp"] == pytest.approx(times[step], abs=1e-6)


def assert_run_is_the_folder(wb, run: Path, *, project: str) -> None:
    info = read_folder(run)
    assert (wb.name, wb.project, wb.group, wb.job_type) == (run.name, project, info.method, "train")
    assert wb.host == info.host and wb.git_commit == (info.meta.get("git") or {}).get("commit", "")
    assert sorted(wb.tags) == sorted(info.tags) and wb.notes == info.notes
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert wb.config == config and wb.config["hf_token"] == "***REDACTED***" and wb.config["model"]["lr"] == 0.01
    assert_history_is_the_folder(wb.history, run)
    summary = json.loads((run / "summary.json").read_text())
    for key in summary["final"]:
        assert same(float(wb.summary[key]), info.metric("final", key)), key
    for key, best in summary["best"].items():
        assert same(float(wb.summary[f"best/{key}"]), info.metric("best", key)), key
        assert wb.summary[f"best_step/{key}"] == best["step"]
    assert wb.summary["lt/status"] == info.status
    assert "".join(text for _, text in wb.console) == (run / "logs.txt").read_text()


def test_runs_are_written_as_offline_wandb_runs_that_read_back_value_for_value_and_again_nothing(
        copies, tmp_path: Path, capsys) -> None:
    from support.wandb_log import read_run

    out = tmp_path / "wb"
    assert lt_main(["export", str(copies["done"].parent), "--to", "wandb", "--dir", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and all(" values, 1 files, status exit code " in line for line in printed)
    target = f"wandb:{out}"
    for key, exit_code in (("done", 0), ("nan", 1)):
        run = copies[key]
        run_id = entry(run, target)["run_id"]
        folders = segments(out / "wandb", run_id)
        assert len(folders) == 1 and entry(run, target)["segments"] == [folders[0].name]
        wb = read_run(folders)
        assert wb.run_id == run_id and wb.exit_codes == [exit_code]
        assert_run_is_the_folder(wb, run, project=read_folder(run).dataset)
        assert (folders[0] / "files" / "output.log").read_text() == (run / "logs.txt").read_text()
    nan_values = [row["train/ratio"] for row in read_run(segments(out / "wandb", entry(copies["nan"], target)[
        "run_id"])).history if "train/ratio" in row]
    assert nan_values[4:7] == [math.inf, -math.inf, pytest.approx(math.nan, nan_ok=True)]  # steps 5, 6, 7

    before = sorted(p.name for p in (out / "wandb").iterdir())
    assert lt_main(["export", str(copies["done"]), "--to", "wandb", "--dir", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"{copies['done'].name}: up to date in {target} run " \
                                              f"{entry(copies['done'], target)['run_id']}"
    assert sorted(p.name for p in (out / "wandb").iterdir()) == before
    listed = subprocess.run([sys.executable, "-m", "wandb", "sync", "--dry-run", str(out / "wandb")],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "Would sync 2 run(s)" in listed.stdout + listed.stderr


def test_new_records_are_a_second_segment_and_a_late_record_writes_the_run_again_under_a_new_id(
        copies, capsys) -> None:
    from support.wandb_log import read_run

    run = copies["done"]
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text("".join(lines[:8]))
    assert lt_main(["export", str(run), "--to", "wandb"]) == 0
    first = entry(run, "wandb")
    metrics.write_text("".join(lines))
    assert lt_main(["export", str(run), "--to", "wandb"]) == 0
    second = entry(run, "wandb")
    assert second["run_id"] == first["run_id"] and len(second["segments"]) == 2
    wb = read_run(segments(run / "wandb", second["run_id"]))
    assert wb.segments == 2 and wb.run_id == first["run_id"]
    assert_run_is_the_folder(wb, run, project="arc")  # both segments together: every row once

    uploaded, not_synced = (run / "wandb" / name for name in second["segments"])
    (uploaded / f"run-{first['run_id']}.wandb.synced").touch()  # wandb sync's mark: the first went up
    with open(metrics, "a") as handle:  # a value at step 3, after step 20 was written
        handle.write(json.dumps({"step": 3, "time": 2e9, "metrics": {"late/x": 0.5}}) + "\n")
    capsys.readouterr()
    assert lt_main(["export", str(run), "--to", "wandb"]) == 0
    err = capsys.readouterr().err
    assert "a value at step 3 arrived after step 20 was written" in err and "under a new id" in err
    assert f"wandb sync already uploaded {first['run_id']}: delete it on the W&B server" in err
    third = entry(run, "wandb")
    assert third["run_id"] != first["run_id"] and third["recreated"][0]["old_run_id"] == first["run_id"]
    assert uploaded.is_dir() and not not_synced.exists()  # the one not synced is removed: never uploaded twice
    wb = read_run(segments(run / "wandb", third["run_id"]))
    assert wb.segments == 1 and {"_step": 3, "late/x": 0.5}.items() <= wb.history[2].items()
    assert_history_is_the_folder(wb.history, run)

    keep_jsonl_before(metrics, 15, moved_to=run / "metrics.dropped-at-attempt-2.jsonl")  # a resume from step 14
    assert lt_main(["export", str(run), "--to", "wandb"]) == 0
    assert "a resume rewrote metrics.jsonl (records moved aside)" in capsys.readouterr().err
    fourth = entry(run, "wandb")
    assert fourth["run_id"] != third["run_id"] and [r["old_run_id"] for r in fourth["recreated"]] == [
        first["run_id"], third["run_id"]]
    wb = read_run(segments(run / "wandb", fourth["run_id"]))
    assert [row["_step"] for row in wb.history] == list(range(1, 15))  # nothing the folder no longer has
    assert_history_is_the_folder(wb.history, run)


def test_an_interrupted_export_leaves_a_pending_segment_that_the_next_one_replaces(copies, monkeypatch) -> None:
    import wandb.sdk.wandb_run as wandb_run
    from support.wandb_log import read_run

    run = copies["done"]
    real_log, calls = wandb_run.Run.log, []

    def interrupted(self, data, *args, **kwargs):  # Ctrl+C after W&B took 5 rows
        calls.append(data)
        if len(calls) > 5:
            raise KeyboardInterrupt
        return real_log(self, data, *args, **kwargs)

    monkeypatch.setattr(wandb_run.Run, "log", interrupted)
    assert lt_main(["export", str(run), "--to", "wandb"]) == 130
    half = entry(run, "wandb")
    assert half["segments"] == [] and (run / "wandb" / half["pending"]).is_dir()
    monkeypatch.setattr(wandb_run.Run, "log", real_log)
    time.sleep(1.1)  # W&B names a folder by the second: the next segment's folder must not be the same one
    assert lt_main(["export", str(run), "--to", "wandb"]) == 0
    done = entry(run, "wandb")
    assert "pending" not in done and done["run_id"] == half["run_id"]
    assert segments(run / "wandb", done["run_id"]) == [run / "wandb" / done["segments"][0]]  # the half one gone
    wb = read_run(segments(run / "wandb", done["run_id"]))
    assert wb.segments == 1 and wb.exit_codes == [0]
    assert_run_is_the_folder(wb, run, project="arc")


def test_the_wandb_sink_writes_the_run_live_and_lt_export_adds_only_what_came_after(tmp_path: Path, capsys) -> None:
    from export.conftest import fit
    from support.wandb_log import read_run

    run = fit(RunLogger("arc", "live", root=tmp_path / "runs", sinks=("tensorboard", "wandb"), config=CONFIG,
                        tags=["live"], notes="watched"), 20)
    live = entry(run, "wandb")
    assert live["live"] and len(live["segments"]) == 1
    wb = read_run(segments(run / "wandb", live["run_id"]))
    assert wb.exit_codes == [0] and wb.summary["lt/status"] == "completed"
    assert wb.tags == ["live"] and wb.notes == "watched" and wb.config == yaml.safe_load((run / "config.yaml")
                                                                                           .read_text())
    assert_history_is_the_folder(wb.history, run)

    assert lt_main(["export", str(run), "--to", "wandb"]) == 0  # the best values, the console's last lines
    assert "sent 1 files" in capsys.readouterr().out  # a segment of no new rows
    done = entry(run, "wandb")
    assert done["run_id"] == live["run_id"] and len(done["segments"]) == 2
    assert_run_is_the_folder(read_run(segments(run / "wandb", live["run_id"])), run, project="arc")
    assert lt_main(["export", str(run), "--to", "wandb"]) == 0
    assert "up to date" in capsys.readouterr().out
