"""``{train.last_ckpt}`` / ``{train.best_ckpt}`` on Slurm: the step's job resolves them when it starts. Here the
eval job's script runs under bash (no Slurm), in a folder with spaces, against a training run's checkpoints.json;
tests/pipeline/test_slurm_cluster.py runs the chain on a real Slurm."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support.processes import script_env

from lightning_track.launch.pipeline import parse_pipeline
from lightning_track.launch.pipeline_state import PipelineState
from lightning_track.launch.slurm import SlurmOptions, sbatch_scripts, sweep_array_script
from lightning_track.launch.slurm_status import refresh_from_slurm
from lightning_track.vocabulary import ENV_EVALUATES

# The eval command: its arguments and the checkpoints it was told of, into a JSON file (its first argument).
SHOW = ("import json, os, sys; json.dump({'argv': sys.argv[2:], 'evaluates': json.loads(os.environ['"
        + ENV_EVALUATES + "'])}, open(sys.argv[1], 'w'))")
WATCH = {"metric": "val/loss", "mode": "min"}


def _eval_job(tmp_path: Path, entries: list[dict], sweep: dict | None = None, **env: str
              ) -> tuple[subprocess.CompletedProcess[str], Path]:
    """A training run (``entries`` its checkpoints.json) named in train's run note, then eval's script run by bash
    (``sweep``: eval is a sweep, its job array's script run as task 0)."""
    root = tmp_path / "my runs"
    run = root / "toy_train_20260101_000000"
    (run / "checkpoints").mkdir(parents=True)
    for entry in entries:
        (run / entry["file"]).write_bytes(entry["file"].encode())
    (run / "checkpoints.json").write_text(json.dumps({"checkpoints": entries}))
    (root / "signals").mkdir()
    (root / "signals" / "exp_train.run").write_text(f"{run}\n")
    out = tmp_path / "shown by eval.json"
    cmd = f"{sys.executable} -c \"{SHOW}\" '{out}' {{train.last_ckpt}} --best={{train.best_ckpt}} {{train.last_ckpt}}"
    pipeline = parse_pipeline({"name": "exp", "root": str(root), "steps": {
        "train": {"cmd": "true"}, "eval": {"cmd": cmd, "after": ["train"], **(sweep or {})}}})
    options = SlurmOptions(python=sys.executable)
    script = tmp_path / "exp_eval.sbatch"
    script.write_text(sweep_array_script(pipeline, "eval", options, cwd=tmp_path) if sweep else
                      sbatch_scripts(pipeline, options, cwd=tmp_path)["eval"])
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=script_env(**env), timeout=120)
    return done, run


def test_the_job_gives_its_command_the_checkpoints_and_tells_its_run_which(tmp_path: Path) -> None:
    entries = [{"file": "checkpoints/best one.ckpt", "step": 5, "metrics": {"val/loss": 0.1}, "monitor": WATCH,
                "sha256": "a" * 64},
               {"file": "checkpoints/step 10.ckpt", "step": 10, "metrics": {"val/loss": 0.3}, "monitor": WATCH,
                "sha256": "b" * 64}]
    done, run = _eval_job(tmp_path, entries)
    assert done.returncode == 0, done.stderr
    shown = json.loads((tmp_path / "shown by eval.json").read_text())
    last, best = str(run / "checkpoints/step 10.ckpt"), str(run / "checkpoints/best one.ckpt")
    assert shown["argv"] == [last, f"--best={best}", last]
    assert [(e["template"], e["run_dir"], e["file"], e["step"], e["sha256"]) for e in shown["evaluates"]] == [
        ("{train.last_ckpt}", str(run), "checkpoints/step 10.ckpt", 10, "b" * 64),
        ("{train.best_ckpt}", str(run), "checkpoints/best one.ckpt", 5, "a" * 64)]


def test_a_sweeps_trials_are_given_the_checkpoint_too(tmp_path: Path) -> None:
    entries = [{"file": "checkpoints/s 5.ckpt", "step": 5, "metrics": {"val/loss": 0.1}, "monitor": WATCH,
                "sha256": "c" * 64}]
    done, run = _eval_job(tmp_path, entries, {"grid": {"lr": [1, 2]}, "metric": "loss"}, SLURM_ARRAY_TASK_ID="1")
    assert done.returncode == 0, done.stderr
    shown = json.loads((tmp_path / "shown by eval.json").read_text())
    path = str(run / "checkpoints/s 5.ckpt")
    assert shown["argv"] == [path, f"--best={path}", path, "lr=2"]
    assert [e["sha256"] for e in shown["evaluates"]] == ["c" * 64, "c" * 64]


def test_a_missing_checkpoint_fails_the_job_with_one_line_and_the_state_shows_it(tmp_path: Path) -> None:
    done, run = _eval_job(tmp_path, [], SLURM_JOB_ID="41")
    line = (f"step 'eval': {{train.last_ckpt}}: run {run} has no checkpoint on disk in its checkpoints.json; give "
            "step 'train' a StepCheckpoint or ModelCheckpoint")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"lt run: error: {line}"]
    assert not (tmp_path / "shown by eval.json").exists()  # the command never started
    signals = run.parent / "signals"
    failed = json.loads((signals / "exp_eval.failed.json").read_text())
    assert (failed["reason"], failed["slurm_job_id"]) == (line, "41")

    # what `lt run --pipeline --status` records once Slurm says the job failed
    pipeline = parse_pipeline({"name": "exp", "root": str(run.parent), "steps": {
        "train": {"cmd": "true"}, "eval": {"cmd": "e {train.last_ckpt}", "after": ["train"]}}})
    state = PipelineState(pipeline)
    state.update("train", state="done", slurm_job_id="40")
    state.update("eval", state="submitted", slurm_job_id="41")

    def scontrol(args: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(args, 0, "JobId=41 JobState=FAILED Reason=NonZeroExitCode ExitCode=2:0\n",
                                           "")

    assert refresh_from_slurm(state, run=scontrol) == ["eval"]
    assert (state.state("eval"), state.get("eval")["reason"]) == ("failed", line)
