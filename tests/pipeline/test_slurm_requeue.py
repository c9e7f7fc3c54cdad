"""Preemption with requeue and multi-task jobs on a real single-node Slurm (the ``slurm`` fixture).

A training step (RunLogger + PreemptionHandler + StepCheckpoint) gets SIGTERM mid-training, either as a job
warned of its end (``scancel --signal=TERM --batch``: only the batch shell, lt-run, is signalled; the job
requeues itself) or requeued by Slurm (``scontrol requeue``: Slurm signals every process of the job and puts
it back in the queue). Either way the job starts again under the same id and continues the same run folder
from its checkpoint; its ``afterok`` dependant runs once, after the second start completed.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pipeline_support import EVAL, TRAIN, lt_pipeline, py, state, write_pipeline
from support.processes import script_env

from lightning_track.run.meta import slurm_info
from lightning_track.vocabulary import BLOCKED, DONE, FAILED, INTERRUPTED, RUNNING, SUBMITTED, slurm_step_state

STEPS = 30


def wait_for(what: str, check: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s")


def steps_of(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    return [json.loads(line)["step"] for line in path.read_text().splitlines()] if path.exists() else []


def run_folder(root: Path, exp_id: str = "exp_train") -> Path | None:
    note = root / "signals" / f"{exp_id}.run"
    return Path(note.read_text().strip()) if note.exists() and note.read_text().strip() else None


@pytest.mark.slow
@pytest.mark.parametrize("stop", [["scancel", "--signal=TERM", "--batch"], ["scontrol", "requeue"]],
                         ids=["signal-then-self-requeue", "scontrol-requeue"])
def test_a_preempted_training_job_is_requeued_and_finishes_its_run(tmp_path: Path, slurm: Any,
                                                                    stop: list[str]) -> None:
    root = tmp_path / "runs"
    path = write_pipeline(tmp_path, {
        "train": {"cmd": py(TRAIN, str(root), "--preempt", "--steps", str(STEPS), "--step-sleep", "0.2"),
                  "health_time": 120},
        "eval": {"cmd": py(EVAL, "{train.run_dir}"), "after": ["train"]},
    })
    submitted = lt_pipeline(path, "--slurm", "--grace", "20", **slurm.env)
    assert submitted.returncode == 0, submitted.stderr
    ids = {name: entry["slurm_job_id"] for name, entry in state(path).items()}
    run = wait_for("the run folder", lambda: run_folder(root))
    wait_for("step 8 in metrics.jsonl", lambda: len(steps_of(run)) >= 8)
    slurm.run(*stop, ids["train"])

    jobs = slurm.wait_ended(list(ids.values()), timeout=180)
    assert {n: (jobs[j]["JobState"], jobs[j]["Restarts"]) for n, j in ids.items()} == {
        "train": ("COMPLETED", "1"), "eval": ("COMPLETED", "0")}
    assert run_folder(root) == run and sorted(p.name for p in root.iterdir() if p.name.startswith("toy_")) == [run.name]
    assert steps_of(run) == list(range(1, STEPS + 1))  # every step once: none lost, none twice
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"
    first, second = summary["attempts"]
    assert (first["status"], second["status"]) == ("interrupted", "completed")
    assert 8 <= second["from_step"] < STEPS
    meta = json.loads((run / "meta.json").read_text())["slurm"]
    again = json.loads((run / "meta.attempt-2.json").read_text())["slurm"]
    assert (meta["job_id"], meta["restart_count"], again["job_id"], again["restart_count"]) == (
        ids["train"], 0, ids["train"], 1)
    # eval ran once, after the second start had completed the run: it counted every step
    assert json.loads((run / "eval.json").read_text())["records"] == STEPS
    out = (root / "slurm" / f"exp_train-{ids['train']}.out").read_text()
    assert out.count("PreemptionHandler: SIGTERM at step") == 1
    if stop[0] == "scancel":
        assert f"requeued Slurm job {ids['train']} (restart 1)" in out

    status = lt_pipeline(path, "--status", **slurm.env)
    lines = status.stdout.splitlines()[1:]
    assert lines[0].split()[:2] == ["train", "done"] and f"job {ids['train']} (COMPLETED)" in lines[0]
    assert "requeued 1x" in lines[0] and str(run) in lines[0]
    assert lines[1].split()[:2] == ["eval", "done"]
    assert state(path)["train"]["slurm"]["restarts"] == 1


@pytest.mark.slow
def test_a_two_task_job_trains_ddp_under_srun_into_one_run_folder(tmp_path: Path, slurm: Any) -> None:
    root = tmp_path / "runs"
    path = write_pipeline(tmp_path, {
        "train": {"cmd": py(TRAIN, str(root), "--steps", "12", "--devices", "2"), "ntasks": 2, "health_time": 120},
        "eval": {"cmd": py(EVAL, "{train.run_dir}"), "after": ["train"]},
    })
    submitted = lt_pipeline(path, "--slurm", **slurm.env)
    assert submitted.returncode == 0, submitted.stderr
    ids = {name: entry["slurm_job_id"] for name, entry in state(path).items()}
    jobs = slurm.wait_ended(list(ids.values()), timeout=180)
    assert {n: jobs[j]["JobState"] for n, j in ids.items()} == {"train": "COMPLETED", "eval": "COMPLETED"}
    assert jobs[ids["train"]]["NumTasks"] == "2"
    runs = [p for p in root.iterdir() if p.name.startswith("toy_")]
    assert len(runs) == 1 and runs[0] == run_folder(root)
    run = runs[0]
    assert steps_of(run) == list(range(1, 13))
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    meta = json.loads((run / "meta.json").read_text())
    assert (meta["slurm"]["job_id"], meta["slurm"]["ntasks"], meta["launcher"]["SLURM_NTASKS"]) == (
        ids["train"], 2, "2")
    assert (run / "logs.rank1.txt").exists()  # rank 1 ran in the same folder, under srun
    out = (root / "slurm" / f"exp_train-{ids['train']}.out").read_text()
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in out


def test_slurm_job_states_read_as_step_states() -> None:
    assert [slurm_step_state(w) for w in ("PENDING", "REQUEUED", "RUNNING", "COMPLETING", "COMPLETED", "FAILED",
                                          "TIMEOUT", "OUT_OF_MEMORY", "CANCELLED by 0", "CANCELLED+", "PREEMPTED")] == [
        SUBMITTED, SUBMITTED, RUNNING, RUNNING, DONE, FAILED, FAILED, FAILED, INTERRUPTED, INTERRUPTED, INTERRUPTED]
    assert slurm_step_state("SOMETHING_NEW") is None and BLOCKED not in {slurm_step_state("CANCELLED")}


def test_meta_records_the_slurm_job_only_inside_one() -> None:
    assert slurm_info({"PATH": "/bin"}) is None
    assert slurm_info({"SLURM_JOB_ID": "42", "SLURM_ARRAY_JOB_ID": "40", "SLURM_ARRAY_TASK_ID": "2",
                       "SLURM_RESTART_COUNT": "3", "SLURM_JOB_NODELIST": "gpu[1-2]", "SLURM_NTASKS": "4"}) == {
        "job_id": "42", "array_job_id": "40", "array_task_id": 2, "restart_count": 3, "node_list": "gpu[1-2]",
        "nodes": ["gpu1", "gpu2"], "ntasks": 4}
    assert slurm_info({"SLURM_JOB_ID": "7"}) == {"job_id": "7", "restart_count": 0}



@pytest.mark.slow
def test_after_a_forwarded_sigterm_lt_run_waits_for_what_the_shell_started(tmp_path: Path) -> None:
    """A step's command runs under ``/bin/sh -c``, which dies at SIGTERM at once; the training it started is still
    checkpointing. lt-run's verdict (and a job's requeue) must wait for it, not for the shell."""
    ready, saved = tmp_path / "ready", tmp_path / "saved"
    script = tmp_path / "child.py"
    script.write_text("\n".join([
        "import signal, sys, time", "def stop(*_):", "    time.sleep(1.5)", f"    open({str(saved)!r}, 'w').close()",
        "    sys.exit(143)", "signal.signal(signal.SIGTERM, stop)", f"open({str(ready)!r}, 'w').close()",
        "time.sleep(60)", ""]))
    proc = subprocess.Popen([sys.executable, "-m", "lightning_track.cli.run", "--exp-id", "x", "--signals-dir",
                             str(tmp_path / "signals"), "--slurm-requeue", "--no-console", "--",
                             "/bin/sh", "-c", f"{sys.executable} {script}; echo after"],
                            env=script_env(), stderr=subprocess.PIPE, text=True)
    wait_for("the command's start", ready.exists, timeout=60)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert saved.exists(), err  # lt-run ended after the command had saved, not when the shell died
    assert proc.returncode == 143
    assert "requeue" not in err  # not in a Slurm job: --slurm-requeue does nothing
