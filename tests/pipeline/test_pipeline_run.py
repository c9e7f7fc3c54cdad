"""lt run --pipeline with real processes: a real fit, then steps that read its run folder."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from pipeline_support import EVAL, REPORT, TRAIN, lt_pipeline, py, start_pipeline, state, write_pipeline

pytestmark = pytest.mark.slow


def chain(tmp_path: Path, *, train_args: str = "", prep: bool = False) -> Path:
    steps = {}
    if prep:
        steps["prep"] = {"cmd": f"echo once >> {tmp_path / 'prep.txt'}"}
    steps["train"] = {"cmd": py(TRAIN, str(tmp_path / "runs"), *train_args.split()), "health_time": 120,
                      **({"after": ["prep"]} if prep else {})}
    steps["eval"] = {"cmd": py(EVAL, "{train.run_dir}"), "after": ["train"]}
    steps["report"] = {"cmd": py(REPORT, "{train.run_dir}"), "after": ["eval"]}
    return write_pipeline(tmp_path, steps)


def run_folders(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "runs").glob("toy_pipeline_*"))


def test_train_eval_report_then_a_rerun_skips_everything(tmp_path: Path) -> None:
    path = chain(tmp_path)
    done = lt_pipeline(path)
    assert done.returncode == 0, done.stderr
    [run] = run_folders(tmp_path)
    steps = state(path)
    assert {s["state"] for s in steps.values()} == {"done"}
    assert steps["train"]["run_dir"] == str(run)
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert json.loads((run / "eval.json").read_text())["records"] > 0
    assert (run / "report.txt").read_text().startswith(run.name)
    assert "train: healthy" in done.stderr and "report: done" in done.stderr
    assert (tmp_path / "runs" / "signals" / "exp_train.done").exists()

    again = lt_pipeline(path)
    assert again.returncode == 0, again.stderr
    assert "already done, skipped: train, eval, report" in again.stderr
    assert ": start" not in again.stderr and run_folders(tmp_path) == [run]

    status = lt_pipeline(path, "--status", lt=True)
    assert status.returncode == 0 and [ln.split()[:2] for ln in status.stdout.splitlines()[1:]] == [
        ["train", "done"], ["eval", "done"], ["report", "done"]]

    rerun = lt_pipeline(path, "--from", "eval")
    assert rerun.returncode == 0, rerun.stderr
    assert "train: start" not in rerun.stderr and "eval: start" in rerun.stderr and "report: start" in rerun.stderr
    assert run_folders(tmp_path) == [run]


def test_ctrl_c_then_rerun_completes_without_rerunning_done_steps(tmp_path: Path) -> None:
    path = chain(tmp_path, train_args="--steps 200 --step-sleep 0.05", prep=True)
    driver = start_pipeline(path)
    healthy = tmp_path / "runs" / "signals" / "exp_train.healthy"
    deadline = time.monotonic() + 120
    while not healthy.exists():
        assert driver.poll() is None, driver.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    status = lt_pipeline(path, "--status")
    assert [ln.split()[:2] for ln in status.stdout.splitlines()[1:3]] == [["prep", "done"], ["train", "running"]]
    second = lt_pipeline(path)
    assert second.returncode == 2 and "pipeline 'exp' is already running" in second.stderr
    driver.send_signal(signal.SIGINT)
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == 130, err
    steps = state(path)
    assert steps["prep"]["state"] == "done"
    assert steps["train"]["state"] == "interrupted" and steps["eval"]["state"] == "pending"
    [first] = run_folders(tmp_path)
    assert json.loads((first / "summary.json").read_text())["status"] == "interrupted"

    path.write_text(path.read_text())  # the same file, run again
    finished = lt_pipeline(path, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert "already done, skipped: prep" in finished.stderr
    assert (tmp_path / "prep.txt").read_text() == "once\n"  # prep ran once
    steps = state(path)
    assert {s["state"] for s in steps.values()} == {"done"}
    assert (Path(steps["train"]["run_dir"]) / "report.txt").exists()


def test_independent_steps_run_in_parallel(tmp_path: Path) -> None:
    stamp = "python -c \"import time,sys; print(time.time()); time.sleep(2); print(time.time())\" > {out}"
    path = write_pipeline(tmp_path, {
        "a": {"cmd": stamp.format(out=tmp_path / "a.txt")},
        "b": {"cmd": stamp.format(out=tmp_path / "b.txt")},
        "c": {"cmd": f"cat {tmp_path / 'a.txt'} {tmp_path / 'b.txt'} > {tmp_path / 'c.txt'}", "after": ["a", "b"]},
    })
    result = lt_pipeline(path, "--jobs", "2")
    assert result.returncode == 0, result.stderr
    (a0, a1), (b0, b1) = ([float(x) for x in (tmp_path / f"{n}.txt").read_text().split()] for n in "ab")
    assert a0 < b1 and b0 < a1  # they overlapped
    assert len((tmp_path / "c.txt").read_text().split()) == 4


def test_a_failed_step_blocks_its_dependants_only(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path, {
        "train": {"cmd": py(TRAIN, str(tmp_path / "runs"), "--nan-at", "3")},
        "eval": {"cmd": py(EVAL, "{train.run_dir}"), "after": ["train"]},
        "report": {"cmd": py(REPORT, "{train.run_dir}"), "after": ["eval"]},
        "other": {"cmd": "echo independent"},
        "retried": {"cmd": "exit 4", "retries": 1},
    })
    result = lt_pipeline(path, "--jobs", "2")
    assert result.returncode == 1
    steps = state(path)
    assert steps["train"]["state"] == "failed" and steps["train"]["exit_code"] == 86
    assert steps["train"]["failure"]["check"] == "nonfinite_loss"
    assert steps["eval"]["state"] == "blocked" and steps["eval"]["reason"] == "step 'train' failed"
    assert steps["report"]["state"] == "blocked"
    assert steps["other"]["state"] == "done"
    assert steps["retried"]["state"] == "failed" and steps["retried"]["attempts"] == 2
    assert "failed: train, retried; not started because of it: eval, report" in result.stderr
    assert "eval: start" not in result.stderr


def test_a_step_that_names_no_run_folder_fails_its_reader(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path, {"a": "echo no folder", "b": {"cmd": "ls {a.run_dir}", "after": ["a"]}})
    result = lt_pipeline(path)
    assert result.returncode == 1
    assert "b: failed: step 'b': {a.run_dir} is unknown: step 'a' named no run folder" in result.stderr


@pytest.mark.parametrize(("steps", "expected"), [
    ({"a": {"cmd": "x", "after": ["b"]}, "b": {"cmd": "x", "after": ["a"]}}, "step 'a': the steps wait for each other"),
    ({"a": {"cmd": "x", "after": ["nope"]}}, "step 'a': after names unknown step 'nope'"),
    ({"a": "x", "b": "echo {a.run_dir}"}, "step 'b': {a.run_dir} names a step it does not run after"),
    ({"a": {"after": []}}, "step 'a': no command"),
])
def test_bad_pipelines_are_refused_before_anything_starts(tmp_path: Path, steps: dict, expected: str) -> None:
    path = write_pipeline(tmp_path, steps)
    result = lt_pipeline(path)
    assert result.returncode == 2
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_bad_arguments(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path, {"a": "true"})
    result = lt_pipeline(path, "--from", "b")
    assert result.returncode == 2 and "--from 'b': no such step; steps: a" in result.stderr
    result = lt_pipeline(path, "--notify", "nonsense-url")
    assert result.returncode == 2 and "not a URL apprise understands" in result.stderr
