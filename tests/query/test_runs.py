"""Finding and reading runs: statuses (crashed), bad folders and files, mirrors, migrated runs, and the
DataFrames of load_runs / load_history checked value by value against the run's own files."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import pytest
from support.query import edit_summary

from lightning_track import load_history, load_runs, read_metrics
from lightning_track.errors import RunFolderError
from lightning_track.query import find_runs, read_history, resolve_run
from lightning_track.query.runs import judge_status
from lightning_track.vocabulary import UNKNOWN, iso_time

NOW = 1_800_000_000.0


def running(beat_age: float, **attempt) -> dict:
    return {"status": "running", "start_time": iso_time(NOW - 1000), "heartbeat": iso_time(NOW - beat_age),
            "attempts": [{"attempt": 1, "status": "running", **attempt}]}


def test_judge_status_crashed_when_the_heartbeat_is_stale_or_the_process_gone() -> None:
    assert judge_status(running(10), now=NOW) == ("running", "")
    status, why = judge_status(running(600), now=NOW)
    assert status == "crashed" and "no heartbeat for 10m00s" in why
    assert judge_status(running(600), now=NOW, stale_after=3600)[0] == "running"
    gone = running(3, host="here", pid=4242)
    assert judge_status(gone, now=NOW, this_host="here", pid_alive=lambda pid: False)[0] == "crashed"
    assert judge_status(gone, now=NOW, this_host="here", pid_alive=lambda pid: True)[0] == "running"
    assert judge_status(gone, now=NOW, this_host="elsewhere", pid_alive=lambda pid: False)[0] == "running"
    assert judge_status({"status": "failed", "reason": "loss is nan\n at step 3"}, now=NOW) == \
        ("failed", "loss is nan at step 3")
    assert judge_status({"status": "weird"}, now=NOW)[0] == UNKNOWN


def test_judge_status_stalled_when_alive_but_the_step_stopped() -> None:
    moving = running(2) | {"progress": {"step": 40, "time": iso_time(NOW - 20), "step_time_s": 0.5}}
    assert judge_status(moving, now=NOW) == ("running", "")  # 20 s < the default floor
    stuck = running(2) | {"progress": {"step": 40, "time": iso_time(NOW - 400), "step_time_s": 0.5}}
    status, why = judge_status(stuck, now=NOW)
    assert status == "stalled" and why.startswith("no step for 6m40s after step 40 (limit 5m00s)")
    slow = stuck | {"progress": {"step": 40, "time": iso_time(NOW - 400), "step_time_s": 60.0}}
    assert judge_status(slow, now=NOW)[0] == "running"  # 10 x 60 s per step: 400 s is within its pace
    ruled = moving | {"stall_rule": {"factor": 10, "floor_s": 2}}  # the run's own rule decides
    assert judge_status(ruled, now=NOW)[1].startswith("no step for 20s after step 40 (limit 5.0s)")
    before_first = running(2) | {"progress": {"step": None, "time": iso_time(NOW - 400), "step_time_s": None}}
    assert judge_status(before_first, now=NOW)[1].startswith("no step for 6m40s since the start")
    dead = stuck | {"heartbeat": iso_time(NOW - 600)}
    assert judge_status(dead, now=NOW)[0] == "crashed"  # no heartbeat outranks no progress
    assert judge_status(running(2), now=NOW)[0] == "running"  # a run written before progress was kept


def test_find_runs_reads_the_made_runs(made_runs: dict[str, Path]) -> None:
    problems: list[str] = []
    runs = find_runs(made_runs["lora"].parent, problems)
    assert problems == []
    by = {run.method: run for run in runs}
    assert set(by) == {"lora", "full", "nan"}
    assert [r.status for r in (by["lora"], by["full"], by["nan"])] == ["completed", "completed", "failed"]
    assert by["lora"].tags == ["baseline"] and by["lora"].notes == "first"
    assert by["nan"].failure["check"] and by["nan"].value("check") == by["nan"].failure["check"]
    assert by["lora"].value("model.lr") == 0.01 and by["full"].value("config.model.lr") == 0.001
    assert by["lora"].value("step") == 30 and by["lora"].host
    assert by["lora"].value("best.val/loss") == json.loads(
        (made_runs["lora"] / "summary.json").read_text())["best"]["val/loss"]["value"]
    assert runs == sorted(runs, key=lambda r: r.start)


def test_a_run_folder_itself_is_a_root(made_runs: dict[str, Path]) -> None:
    runs = find_runs(made_runs["full"])
    assert [r.name for r in runs] == [made_runs["full"].name]


def test_bad_folders_and_files_are_one_line_problems_and_the_rest_is_read(runs_copy: dict[str, Path]) -> None:
    root = runs_copy["lora"].parent
    (runs_copy["full"] / "summary.json").write_text('{"status": "comp')  # torn
    (root / "arc_x_20260101_000000").mkdir()  # named like a run, empty
    (root / "notes").mkdir()  # not a run: looked into, nothing found, no complaint
    (root / "stray.txt").write_text("x")
    problems: list[str] = []
    runs = find_runs(root, problems)
    assert {r.method: r.status for r in runs} == {"lora": "completed", "full": UNKNOWN, "nan": "failed"}
    assert len(problems) == 2 and all("\n" not in p for p in problems)
    assert any(runs_copy["full"].name in p and "summary.json" in p and "invalid JSON" in p for p in problems)
    assert any("arc_x_20260101_000000" in p and "holds no summary.json" in p for p in problems)
    missing: list[str] = []
    assert find_runs(root / "nope", missing) == [] and missing == [f"{root / 'nope'}: no such folder"]
    with pytest.raises(RunFolderError, match="no such folder"):
        find_runs(root / "nope")


def test_crashed_run_with_a_stale_heartbeat(runs_copy: dict[str, Path]) -> None:
    run = runs_copy["lora"]
    edit_summary(run, status="running", heartbeat=iso_time(time.time() - 3600),
                 attempts=[{"attempt": 1, "status": "running", "host": "another-host", "pid": 1}])
    (info,) = [r for r in find_runs(run.parent) if r.path == run]
    assert info.status == "crashed" and "no heartbeat for 1h00m" in info.why
    assert info.end is not None and info.wall_span is not None
    edit_summary(run, heartbeat=iso_time())
    (info,) = [r for r in find_runs(run.parent) if r.path == run]
    assert info.status == "running"


def test_resolve_run_by_path_name_and_unique_part(made_runs: dict[str, Path], tmp_path: Path) -> None:
    root = made_runs["lora"].parent
    assert resolve_run(made_runs["lora"]) == made_runs["lora"]
    assert resolve_run(made_runs["lora"].name, [root]) == made_runs["lora"]
    assert resolve_run("toy_nan", [root]) == made_runs["nan"]
    with pytest.raises(RunFolderError, match="2 runs under .* match"):
        resolve_run("arc_", [root])
    with pytest.raises(RunFolderError, match="no such run folder"):
        resolve_run("zzz", [root])
    with pytest.raises(RunFolderError, match="not a run folder"):
        resolve_run(tmp_path)


def test_load_runs_matches_each_summary_and_config(made_runs: dict[str, Path]) -> None:
    frame = load_runs(made_runs["lora"].parent)
    assert len(frame) == 3
    for _, row in frame.iterrows():
        summary = json.loads((Path(row["path"]) / "summary.json").read_text())
        assert row["status"] == summary["status"] and row["last_step"] == summary["last_step"]
        for which in ("best", "final"):
            for key, entry in summary[which].items():
                value = float(entry["value"])
                assert (math.isnan(row[f"{which}.{key}"]) if math.isnan(value) else row[f"{which}.{key}"] == value)
        assert row["config.model.lr"] in (0.01, 0.001) and row["config.seed"] == 0
        assert row["start"].timestamp() == pytest.approx(
            datetime_ts(summary["start_time"]), abs=1e-3)
    assert list(load_runs(made_runs["lora"].parent, filter="tag=baseline")["method"]) == ["lora"]
    assert load_runs(made_runs["lora"].parent, filter=["dataset=arc", "model.lr<0.005"])["method"].tolist() == ["full"]


def datetime_ts(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


def test_load_history_matches_metrics_jsonl_value_by_value(made_runs: dict[str, Path]) -> None:
    for run in made_runs.values():
        records = read_metrics(run / "metrics.jsonl")
        frame = load_history(run)
        expected: dict[int, dict[str, float]] = {}
        for record in records:
            expected.setdefault(record.step, {}).update(record.metrics)
        assert frame["step"].tolist() == sorted(expected)
        for _, row in frame.iterrows():
            want = expected[int(row["step"])]
            for key in frame.columns[2:]:
                if key in want:
                    assert (math.isnan(row[key]) and math.isnan(want[key])) or row[key] == want[key], (run, key)
                else:
                    assert math.isnan(row[key])
        history = read_history(run)
        for key in history.keys:  # per-key series: exactly the records holding the key, NaN kept
            steps, values = history.series(key)
            pairs = [(r.step, r.metrics[key]) for r in records if key in r.metrics]
            assert steps.tolist() == [s for s, _ in pairs]
            got = values.tolist()
            assert all((math.isnan(a) and math.isnan(b)) or a == b for a, (_, b) in zip(got, pairs, strict=True))
    nan_history = read_history(made_runs["nan"])
    steps, values = nan_history.series("health/loss")
    assert steps.tolist() == [15] and np_any_nan(values)  # the failing value, kept as NaN


def np_any_nan(values) -> bool:
    return bool((values != values).any())


def test_load_history_keys_and_several_runs(made_runs: dict[str, Path]) -> None:
    frame = load_history([made_runs["lora"], made_runs["full"]], keys=["val/loss", "nope"])
    assert list(frame.columns) == ["run", "step", "time", "val/loss", "nope"]
    assert set(frame["run"]) == {made_runs["lora"].name, made_runs["full"].name}
    assert frame["nope"].isna().all()


def test_history_of_a_run_being_written_and_of_a_corrupt_file(runs_copy: dict[str, Path]) -> None:
    path = runs_copy["lora"] / "metrics.jsonl"
    whole = len(read_metrics(path))
    with open(path, "ab") as handle:  # the writer is in the middle of a line
        handle.write(b'{"step": 31, "time": 1.0, "metr')
    history = read_history(runs_copy["lora"])
    assert len(history) == whole and history.partial_tail and history.problems == []
    lines = path.read_bytes().split(b"\n")
    lines[3] = b'{"step": 4, "time": oops}'
    path.write_bytes(b"\n".join(lines[:-1]) + b"\n")
    with pytest.warns(UserWarning, match=rf"{path}:4: invalid JSON"):
        frame = load_history(runs_copy["lora"])
    assert 4 not in frame["step"].tolist() and len(frame) > 20


def test_mirror_of_two_servers_shows_the_source(made_runs: dict[str, Path], tmp_path: Path) -> None:
    from lightning_track.cli.lt import main

    mirror = tmp_path / "mirror"
    for server in ("gpu1", "gpu2"):
        assert main(["sync", str(made_runs["lora"].parent), str(mirror / server), "-q",
                     "--state", str(tmp_path / f"{server}.state")]) == 0
    runs = find_runs(mirror)
    assert sorted((r.source, r.method) for r in runs) == sorted(
        (s, m) for s in ("gpu1", "gpu2") for m in ("lora", "full", "nan"))
    assert all(r.status in ("completed", "failed") for r in runs)
    frame = load_history(next(r for r in runs if r.method == "lora" and r.source == "gpu2"))
    assert frame.equals(load_history(made_runs["lora"]))


@pytest.mark.slow
def test_migrated_runs_are_listed(tmp_path: Path) -> None:
    from lightning_track.cli.lt import main
    from lightning_track.migrate import make_example

    make_example(tmp_path / "experiments", runs=2, steps=60, checkpoints=1, ckpt_mb=0.01)
    assert main(["migrate", str(tmp_path / "experiments"), "--out", str(tmp_path / "runs"), "--jobs", "1"]) == 0
    problems: list[str] = []
    runs = find_runs(tmp_path / "runs", problems)
    assert len(runs) == 2 and problems == []
    assert all(r.value("migrated") is True and r.status in ("completed", "interrupted") for r in runs)
    frame = load_runs(tmp_path / "runs")
    assert len(frame) == 2 and frame["last_step"].notna().all()
    history = load_history(runs[0])
    assert len(history) > 0


def test_folder_without_runs_and_copying_a_run_elsewhere(made_runs: dict[str, Path], tmp_path: Path) -> None:
    assert find_runs(tmp_path) == []
    moved = Path(shutil.copytree(made_runs["full"], tmp_path / "deep" / "a" / made_runs["full"].name))
    (info,) = find_runs(tmp_path)
    assert info.path == moved and info.source == "deep/a"


@pytest.mark.slow
def test_a_run_killed_mid_write_is_crashed(tmp_path: Path) -> None:
    """A real training process SIGKILLed while it writes: its summary still says running."""
    import os
    import signal
    import subprocess
    import sys

    script = Path(__file__).parents[1] / "core" / "train_script.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIGHTNING_TRACK_")}
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), "200", "--hang-at", "20"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (tmp_path / "hanging.txt").exists():
            assert proc.poll() is None and time.time() < deadline
            time.sleep(0.2)
        (live,) = find_runs(tmp_path)
        assert live.status == "running"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    (dead,) = find_runs(tmp_path)  # this host, its pid gone: crashed at once
    assert dead.status == "crashed" and f"process {proc.pid}" in dead.why
    (mirrored,) = [read_run_elsewhere(dead.path, stale_after=0.0)]  # another host sees only the heartbeat
    assert mirrored.status == "crashed" and "no heartbeat" in mirrored.why
    frame = load_history(dead.path)
    assert frame["step"].max() >= 19  # what it logged is readable


def read_run_elsewhere(path: Path, stale_after: float):
    from lightning_track.query.runs import read_run

    return read_run(path, stale_after=stale_after, this_host="a-viewer-machine", now=time.time() + 1)
