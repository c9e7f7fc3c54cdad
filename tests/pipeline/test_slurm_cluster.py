"""Pipelines submitted to a real single-node Slurm (the ``slurm`` fixture), jobs waited for with timeouts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pipeline_support import EVAL, HERE, REPORT, TRAIN, lt_pipeline, py, state, write_pipeline

pytestmark = pytest.mark.slow
CKPT_EVAL = HERE / "pipeline_ckpt_eval_script.py"


def chain(tmp_path: Path, *train_args: str) -> Path:
    root = str(tmp_path / "runs")
    return write_pipeline(tmp_path, {
        "train": {"cmd": py(TRAIN, root, *train_args), "health_time": 120},
        "eval": {"cmd": py(EVAL, "{train.run_dir}"), "after": ["train"]},
        "report": {"cmd": py(REPORT, "{train.run_dir}"), "after": ["eval"]},
    })


def test_train_eval_report_as_chained_jobs(tmp_path: Path, slurm: Any) -> None:
    tmp_path = tmp_path / "lab's runs #1"  # sbatch reads the job's --output from a quoted #SBATCH line
    tmp_path.mkdir()
    path = chain(tmp_path)
    result = lt_pipeline(path, "--slurm", "--time", "10", **slurm.env)
    assert result.returncode == 0, result.stderr
    ids = {name: entry["slurm_job_id"] for name, entry in state(path).items()}
    assert {entry["state"] for entry in state(path).values()} == {"submitted"}
    jobs = slurm.wait_ended(list(ids.values()))
    assert {n: (jobs[j]["JobState"], jobs[j]["ExitCode"]) for n, j in ids.items()} == {
        n: ("COMPLETED", "0:0") for n in ids}
    signals = tmp_path / "runs" / "signals"
    run = Path((signals / "exp_train.run").read_text().strip())
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert (run / "report.txt").read_text().startswith(run.name)
    assert (signals / "exp_train.healthy").exists() and (signals / "exp_report.done").exists()
    out = tmp_path / "runs" / "slurm" / f"exp_train-{ids['train']}.out"
    assert "lt-run" in out.read_text()
    status = lt_pipeline(path, "--status", **slurm.env)
    assert [ln.split()[:2] for ln in status.stdout.splitlines()[1:]] == [["train", "done"], ["eval", "done"],
                                                                         ["report", "done"]]
    assert state(path)["train"]["run_dir"] == str(run)


def test_a_health_failure_ends_the_job_86_and_its_dependants_never_run(tmp_path: Path, slurm: Any) -> None:
    path = chain(tmp_path, "--nan-at", "3")
    result = lt_pipeline(path, "--slurm", **slurm.env)
    assert result.returncode == 0, result.stderr
    ids = {name: entry["slurm_job_id"] for name, entry in state(path).items()}
    jobs = slurm.wait_ended(list(ids.values()))
    assert (jobs[ids["train"]]["JobState"], jobs[ids["train"]]["ExitCode"]) == ("FAILED", "86:0")
    assert jobs[ids["eval"]]["JobState"] == "CANCELLED" and jobs[ids["report"]]["JobState"] == "CANCELLED"
    failed = json.loads((tmp_path / "runs" / "signals" / "exp_train.failed.json").read_text())
    assert failed["check"] == "nonfinite_loss"
    assert not (tmp_path / "runs" / "signals" / "exp_eval.done").exists()
    # --status asks Slurm: the state file said "submitted" for all three until now
    status = lt_pipeline(path, "--status", **slurm.env)
    assert [ln.split()[:2] for ln in status.stdout.splitlines()[1:]] == [["train", "failed"], ["eval", "blocked"],
                                                                         ["report", "blocked"]]
    assert "Slurm job FAILED, exit 86:0" in status.stdout and "train failed (Slurm cancelled the job" in status.stdout
    assert {name: entry["state"] for name, entry in state(path).items()} == {
        "train": "failed", "eval": "blocked", "report": "blocked"}
    # fixed and submitted again: the steps Slurm saw fail (and the ones they blocked) are submitted anew
    chain(tmp_path)
    again = lt_pipeline(path, "--slurm", **slurm.env)
    assert again.returncode == 0, again.stderr
    new_ids = {name: entry["slurm_job_id"] for name, entry in state(path).items()}
    assert set(new_ids.values()).isdisjoint(ids.values())
    jobs = slurm.wait_ended(list(new_ids.values()))
    assert {n: jobs[j]["JobState"] for n, j in new_ids.items()} == dict.fromkeys(new_ids, "COMPLETED")


def test_a_refused_partition_submits_nothing(tmp_path: Path, slurm: Any) -> None:
    path = chain(tmp_path)
    before = slurm.run("squeue", "-h", "-o", "%i")
    result = lt_pipeline(path, "--slurm", "--partition", "nosuch", **slurm.env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "lt run: error: step 'train': sbatch refused exp_train.sbatch: sbatch: error: invalid partition specified: "
        "nosuch allocation failure: Invalid partition name specified; fix --partition/--time/--gres/--slurm-arg"]
    assert slurm.run("squeue", "-h", "-o", "%i") == before
    assert not (tmp_path / "runs" / "exp.pipeline.json").exists()


def test_eval_jobs_are_given_trains_checkpoints_when_they_start(tmp_path: Path, slurm: Any) -> None:
    """``{train.last_ckpt}`` / ``{train.best_ckpt}``: resolved in the eval jobs, recorded in their runs' meta.json."""
    root = str(tmp_path / "runs")
    path = write_pipeline(tmp_path, {
        "train": {"cmd": py(TRAIN, root, "--steps", "20", "--every", "5", "--checkpoints")},
        "last": {"cmd": py(CKPT_EVAL, root, "{train.last_ckpt}"), "after": ["train"]},
        "best": {"cmd": py(CKPT_EVAL, root, "{train.best_ckpt}"), "after": ["train"]},
    })
    result = lt_pipeline(path, "--slurm", **slurm.env)
    assert result.returncode == 0, result.stderr
    ids = {name: entry["slurm_job_id"] for name, entry in state(path).items()}
    jobs = slurm.wait_ended(list(ids.values()))
    assert {n: jobs[j]["JobState"] for n, j in ids.items()} == dict.fromkeys(ids, "COMPLETED")
    train = Path((tmp_path / "runs" / "signals" / "exp_train.run").read_text().strip())
    index = {e["file"]: e for e in json.loads((train / "checkpoints.json").read_text())["checkpoints"]
             if (train / e["file"]).is_file()}
    best = min((e for e in index.values() if e.get("monitor")), key=lambda e: e["metrics"]["train/loss"])
    for name, template in (("last", "{train.last_ckpt}"), ("best", "{train.best_ckpt}")):
        run = Path((tmp_path / "runs" / "signals" / f"exp_{name}.run").read_text().strip())
        (evaluated,) = json.loads((run / "meta.json").read_text())["evaluated"]
        assert (evaluated["template"], evaluated["run_dir"]) == (template, str(train))
        entry = index[evaluated["file"]]
        assert (evaluated["sha256"], evaluated["step"]) == (entry["sha256"], entry["step"])
        assert evaluated["file"] == best["file"] if name == "best" else evaluated["step"] == 20
        assert json.loads((run / "summary.json").read_text())["status"] == "completed"


def test_a_train_without_checkpoints_fails_the_eval_job_with_one_line(tmp_path: Path, slurm: Any) -> None:
    root = str(tmp_path / "runs")
    path = write_pipeline(tmp_path, {
        "train": {"cmd": py(TRAIN, root, "--steps", "5")},
        "eval": {"cmd": py(CKPT_EVAL, root, "{train.last_ckpt}"), "after": ["train"]},
    })
    assert lt_pipeline(path, "--slurm", **slurm.env).returncode == 0
    ids = {name: entry["slurm_job_id"] for name, entry in state(path).items()}
    jobs = slurm.wait_ended(list(ids.values()))
    assert {n: (jobs[j]["JobState"], jobs[j]["ExitCode"]) for n, j in ids.items()} == {
        "train": ("COMPLETED", "0:0"), "eval": ("FAILED", "2:0")}
    train = Path((tmp_path / "runs" / "signals" / "exp_train.run").read_text().strip())
    line = (f"step 'eval': {{train.last_ckpt}}: run {train} has no checkpoint on disk in its checkpoints.json; "
            "give step 'train' a StepCheckpoint or ModelCheckpoint")
    log = tmp_path / "runs" / "slurm" / f"exp_eval-{ids['eval']}.out"
    assert log.read_text().strip().splitlines() == [f"lt run: error: {line}"]
    status = lt_pipeline(path, "--status", **slurm.env)
    assert [ln.split()[:2] for ln in status.stdout.splitlines()[1:3]] == [["train", "done"], ["eval", "failed"]]
    assert line in status.stdout
    assert (state(path)["eval"]["state"], state(path)["eval"]["reason"]) == ("failed", line)
