"""Sweeps: the grammar and its errors (pure, fast), then real sweeps run by ``lt run --pipeline`` (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pipeline_support import HERE, Webhook, fields, lt_pipeline, py, state, write_pipeline
from support.processes import script_env

from lightning_track.errors import ConfigError
from lightning_track.launch.pipeline import check_slurm_references, expand_sweeps, parse_pipeline
from lightning_track.launch.slurm import SlurmOptions, sweep_array_script
from lightning_track.launch.sweep import (
    grid_trials,
    random_trials,
    trial_command,
    trial_env,
)
from lightning_track.query.sweeps import TrialRow, rank_trials, table_lines
from lightning_track.run.launched import launch_fields
from lightning_track.vocabulary import ENV_EXP_ID, ENV_SWEEP, ENV_TAGS

SWEEP = HERE / "pipeline_sweep_script.py"


def pipeline(**train: Any) -> Any:
    return parse_pipeline({"steps": {"train": {"cmd": "python train.py", **train},
                                     "eval": {"cmd": "python eval.py {train.exp_id}", "after": ["train"]}}},
                          source="exp.yaml", default_name="exp")


def test_a_grid_is_the_cartesian_product_first_key_slowest() -> None:
    trials = grid_trials("s", {"model.lr": [0.001, 0.01], "model.hidden": [8, 16, 32]})
    assert len(trials) == 6
    assert trials[0] == (("model.lr", 0.001), ("model.hidden", 8))
    assert trials[3] == (("model.lr", 0.01), ("model.hidden", 8))
    assert grid_trials("s", {"seed": 3}) == [(("seed", 3),)]  # a single value is a one-value axis


def test_random_trials_are_reproducible_and_inside_their_ranges() -> None:
    spec = {"count": 50, "seed": 7, "params": {"lr": {"loguniform": [1e-4, 1e-1]}, "drop": {"uniform": [0.0, 0.5]},
                                               "layers": {"randint": [1, 3]}, "act": {"choice": ["relu", "tanh"]},
                                               "width": [8, 16]}}
    trials = random_trials("s", spec)
    assert trials == random_trials("s", spec) and trials != random_trials("s", {**spec, "seed": 8})
    values = {key: [dict(t)[key] for t in trials] for key in spec["params"]}
    assert all(1e-4 <= v <= 1e-1 for v in values["lr"]) and all(0.0 <= v <= 0.5 for v in values["drop"])
    assert set(values["layers"]) == {1, 2, 3} and set(values["act"]) == {"relu", "tanh"}
    assert set(values["width"]) == {8, 16}
    assert sum(v < 1e-2 for v in values["lr"]) > 20  # log-uniform: most draws in the lower decades


@pytest.mark.parametrize(("train", "message"), [
    ({"grid": {}}, "exp.yaml: step 'train': grid is empty; give lists of values, e.g. grid: {model.lr: "),
    ({"grid": {"model.lr": []}}, "step 'train': grid key 'model.lr' has no values; give a list, e.g. model.lr: [1, 2]"),
    ({"grid": {"model lr": [1]}}, "step 'train': grid key 'model lr' is not a config key; write it dotted"),
    ({"random": {"count": 0, "params": {"a": [1]}}}, "step 'train': random count must be a whole number >= 1, got 0"),
    ({"random": {"count": 2}}, "step 'train': random has no params; add params: {model.lr: {loguniform: "),
    ({"random": {"count": 2, "params": {"model.lr": {"normal": [0, 1]}}}},
     "step 'train': random param 'model.lr': unknown distribution 'normal'; use one of uniform, loguniform, randint, "
     "choice"),
    ({"random": {"count": 2, "params": {"model.lr": {"loguniform": [0, 1]}}}},
     "random param 'model.lr': loguniform needs low > 0, got [0, 1]; use uniform"),
    ({"random": {"count": 2, "params": {"model.lr": {"uniform": [1, 0]}}}},
     "random param 'model.lr': uniform takes [low, high], two numbers with low < high, got [1, 0]"),
    ({"random": {"count": 2, "params": {"n": {"choice": []}}}}, "random param 'n': choice needs a non-empty list"),
    ({"random": {"count": 2, "sed": 1, "params": {"n": [1]}}}, "random has unknown key 'sed'; it takes count, seed"),
    ({"grid": {"a": [1]}, "random": {"count": 1, "params": {"a": [1]}}}, "give grid: or random:, not both"),
    ({"metric": "val/loss"}, "step 'train': metric and mode rank a sweep's trials; add grid: or random:"),
    ({"grid": {"a": [1]}, "mode": "lowest"}, "step 'train': mode must be min or max, got 'lowest'"),
])
def test_bad_sweeps_are_one_line_naming_the_step_and_key(train: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        pipeline(**train)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_overrides_are_appended_or_placed_and_quoted() -> None:
    overrides = (("model.lr", 0.001), ("data.name", "a b"), ("model.dims", [8, 16]), ("flag", True))
    assert trial_command("python t.py", overrides, 2) == \
        "python t.py model.lr=0.001 'data.name=a b' 'model.dims=[8, 16]' flag=true"
    assert trial_command("python t.py {overrides} --out o{trial} | tee x", (("lr", 1e-05),), 3) == \
        "python t.py lr=1e-05 --out o3 | tee x"


def test_a_sweep_expands_to_trial_steps_then_itself() -> None:
    expanded = expand_sweeps(pipeline(grid={"model.lr": [0.001, 0.01]}, metric="val/loss"))
    assert expanded.order == ("train.0", "train.1", "train", "eval")
    assert expanded.sweeps == {"train": ("train.0", "train.1")}
    assert expanded.steps["train"].after == ("train.0", "train.1")
    assert expanded.steps["train.1"].cmd == "python train.py model.lr=0.01"
    assert expanded.exp_id("train.1") == "exp_train.1" and expanded.upstream("eval") >= {"train.0", "train.1"}
    env = trial_env("exp_train", expanded.steps["train.1"].trial)
    assert env[ENV_TAGS] == "exp_train"
    assert json.loads(env[ENV_SWEEP]) == {"name": "exp_train", "trial": 1, "overrides": {"model.lr": 0.01},
                                          "metric": "val/loss"}
    plain = pipeline()
    assert expand_sweeps(plain) is plain


def test_the_run_records_the_launchers_tags_and_sweep() -> None:
    env = {ENV_EXP_ID: "exp_train.1", ENV_TAGS: "exp_train, nightly", ENV_SWEEP: '{"name": "exp_train", "trial": 1}'}
    assert launch_fields(["mine"], None, env) == {"exp_id": "exp_train.1", "tags": ["mine", "exp_train", "nightly"],
                                                  "sweep": {"name": "exp_train", "trial": 1}}
    assert launch_fields([], ["old"], env)["tags"] == ["old", "exp_train", "nightly"]  # a resume keeps its tags
    assert launch_fields([], ["old"], {}) == {}


def test_trials_are_ranked_by_best_metric_missing_values_last() -> None:
    rows = [TrialRow(i, {"lr": lr}, "done") for i, lr in enumerate([0.1, 0.01, 0.001])]
    summaries = [{"best": {"val/loss": {"value": 0.5, "step": 3, "mode": "min"}, "train/loss": {"value": 0.1}}},
                 {"best": {"val/loss": {"value": 0.2, "step": 4, "mode": "min"}}}, None]
    metric, mode, ordered = rank_trials(rows, summaries)
    assert (metric, mode, [r.trial for r in ordered]) == ("val/loss", "min", [1, 0, 2])
    lines = table_lines(metric, mode, ordered)
    assert lines[0] == "| rank | trial | lr | state | val/loss (min) | step | run |"
    assert lines[2] == "| 1 | 1 | 0.01 | done | 0.2 | 4 | - |" and lines[4].startswith("| - | 2 | 0.001 |")
    assert [r.trial for r in rank_trials(rows, summaries, metric="val/loss", mode="max")[2]] == [0, 1, 2]


def test_the_slurm_array_script_picks_the_trial_by_task_id(tmp_path: Path) -> None:
    spec = pipeline(grid={"model.lr": [0.001, 0.01, 0.1]}, health_time=60)
    text = sweep_array_script(spec, "train", SlurmOptions(), cwd=tmp_path)
    assert "#SBATCH --array=0-2" in text and "#SBATCH --job-name=exp_train" in text and "-%A_%a.out" in text
    assert "  2) exp_id=exp_train.2\n     cmd='python train.py model.lr=0.1'" in text
    assert "--health-time 60" in text and "export LIGHTNING_TRACK_TAGS=exp_train" in text
    script = tmp_path / "a.sbatch"
    script.write_text(text)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    outside = subprocess.run(["bash", str(script)], capture_output=True, text=True)  # no array task id
    assert outside.returncode == 2 and "no trial  in this sweep (run it as an array job)" in outside.stderr


def test_a_sweeps_run_dir_is_refused_on_slurm() -> None:
    spec = parse_pipeline({"steps": {"train": {"cmd": "t", "grid": {"a": [1, 2]}},
                                     "eval": {"cmd": "e {train.run_dir}", "after": ["train"]}}})
    with pytest.raises(ConfigError, match=r"step 'eval': \{train.run_dir\} names sweep 'train', which has one run "
                                          r"folder per trial"):
        check_slurm_references(spec)
    check_slurm_references(pipeline(grid={"a": [1]}))  # {train.exp_id} is fine


@pytest.mark.slow
def test_a_grid_sweep_runs_its_trials_tagged_ranks_them_and_resumes(tmp_path: Path, webhook: Webhook) -> None:
    root = tmp_path / "runs"
    path = write_pipeline(tmp_path, {
        "train": {"cmd": py(SWEEP, str(root)), "grid": {"model.lr": [0.001, 0.2], "model.hidden": [0, 4]}},
        "pick": {"cmd": "echo best {train.run_dir} of {train.exp_id} > best.txt", "after": ["train"]},
    })
    result = lt_pipeline(path, "--jobs", "2", "--notify", webhook.url)
    assert result.returncode == 0, result.stderr
    steps = state(path)
    assert [steps[f"train.{i}"]["state"] for i in range(4)] == ["done"] * 4
    runs = {i: Path(steps[f"train.{i}"]["run_dir"]) for i in range(4)}
    summaries = {i: json.loads((run / "summary.json").read_text()) for i, run in runs.items()}
    for i, summary in summaries.items():
        assert summary["tags"] == ["exp_train"] and summary["exp_id"] == f"exp_train.{i}"
        assert summary["sweep"]["trial"] == i
        config = (runs[i] / "config.yaml").read_text()
        assert f"lr: {summary['sweep']['overrides']['model.lr']}" in config  # the overrides reached the command
    losses = {i: s["best"]["train/loss"]["value"] for i, s in summaries.items()}
    best = min(losses, key=losses.__getitem__)
    assert steps["train"]["run_dir"] == str(runs[best]) and steps["train"]["best"]["trial"] == best
    assert (tmp_path / "best.txt").read_text().split() == ["best", str(runs[best]), "of", "exp_train"]
    table = (root / "exp_train.sweep.md").read_text().splitlines()
    assert table[0] == "sweep exp_train: 4 trials by train/loss (min), best first"
    ranked = [int(line.split(" | ")[1]) for line in table[3:]]
    assert ranked == sorted(losses, key=losses.__getitem__)
    assert "\n".join(table[1:]) in result.stderr  # printed at the end too
    told = fields(webhook.wait_for(lambda i: i["title"] == "exp train: done"))
    assert told["sweep"] == "exp_train" and told["run_dir"] == str(runs[best])
    assert told["best"] == f"train/loss={losses[best]:.6g}" and told["overrides"].startswith("model.lr=")

    again = lt_pipeline(path, "--jobs", "2")
    assert again.returncode == 0 and "already done, skipped: train.0, train.1, train.2, train.3, train, pick" in \
        again.stderr
    assert len([p for p in root.iterdir() if p.is_dir() and p.name.startswith("toy_sweep")]) == 4
    status = lt_pipeline(path, "--status")
    assert "train.3  done" in status.stdout and table[3] in status.stdout

    report = tmp_path / "report.html"
    made = subprocess.run([sys.executable, "-m", "lightning_track.cli.lt", "report", str(root), "-o", str(report),
                           "--filter", "tag=exp_train"], capture_output=True, text=True, env=script_env())
    assert made.returncode == 0, made.stderr
    html = report.read_text()
    assert "<h2>Sweep exp_train</h2>" in html and html.count('<tr class="trial">') == 4


@pytest.mark.slow
def test_a_sweep_on_slurm_is_one_job_array_its_dependant_after_every_task(tmp_path: Path, slurm: Any) -> None:
    root = tmp_path / "runs"
    collected = tmp_path / "collected.json"
    lt = f"{sys.executable} -m lightning_track.cli.lt"
    path = write_pipeline(tmp_path, {
        "train": {"cmd": py(SWEEP, str(root)), "grid": {"model.lr": [0.001, 0.05, 0.2]}, "health_time": 120},
        "collect": {"cmd": f"{lt} ls {root} --filter tag={{train.exp_id}} --json > {collected}", "after": ["train"]},
    })
    result = lt_pipeline(path, "--slurm", "--time", "10", **slurm.env)
    assert result.returncode == 0, result.stderr
    steps = state(path)
    array = steps["train"]["slurm_job_id"]
    tasks = [steps[f"train.{i}"]["slurm_job_id"] for i in range(3)]
    assert tasks == [f"{array}_{i}" for i in range(3)] and steps["train.2"]["state"] == "submitted"
    assert "#SBATCH --array=0-2" in (root / "slurm" / "exp_train.sbatch").read_text()
    jobs = slurm.wait_ended([*tasks, steps["collect"]["slurm_job_id"]])
    assert {j: (jobs[j]["JobState"], jobs[j]["ExitCode"]) for j in jobs} == {j: ("COMPLETED", "0:0") for j in jobs}
    lrs = []
    for i in range(3):
        run = Path((root / "signals" / f"exp_train.{i}.run").read_text().strip())
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "completed" and summary["tags"] == ["exp_train"]
        assert summary["sweep"]["trial"] == i and summary["exp_id"] == f"exp_train.{i}"
        lrs.append(summary["sweep"]["overrides"]["model.lr"])
        assert (root / "slurm" / f"exp_train-{array}_{i}.out").exists()
    assert lrs == [0.001, 0.05, 0.2]
    assert len(json.loads(collected.read_text())) == 3  # ran after every task of the array
    status = lt_pipeline(path, "--status", **slurm.env)
    table = status.stdout.split("sweep exp_train: trials by train/loss (min), best first\n")[1].splitlines()
    # the run's status, or the step's state where the state file knows the task ended (from sacct)
    assert len(table) == 5 and all("| completed |" in row or "| done |" in row for row in table[2:])
    assert [row.split(" | ")[0] for row in table[2:]] == ["| 1", "| 2", "| 3"]


@pytest.mark.slow
def test_a_failed_trial_blocks_the_rest_and_a_rerun_runs_only_it(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    path = write_pipeline(tmp_path, {
        "train": {"cmd": f"{{ test {{trial}} != 1 || test -e {tmp_path / 'fixed'}; }} && {py(SWEEP, str(root))} "
                         "{overrides}", "grid": {"model.lr": [0.01, 0.02, 0.03]}},
        "after_it": {"cmd": "true", "after": ["train"]},
    })
    first = lt_pipeline(path, "--jobs", "2")
    assert first.returncode == 1
    steps = state(path)
    assert [steps[n]["state"] for n in ("train.0", "train.1", "train.2", "train", "after_it")] == [
        "done", "failed", "done", "blocked", "blocked"]
    assert "lt run: failed: train.1; not started because of it: train, after_it" in first.stderr
    table = (root / "exp_train.sweep.md").read_text().splitlines()
    assert table[-1].startswith("| - | 1 | 0.02 | failed | - |")  # no value: last
    (tmp_path / "fixed").touch()
    second = lt_pipeline(path, "--jobs", "2")
    assert second.returncode == 0, second.stderr
    assert "already done, skipped: train.0, train.2" in second.stderr and "train.0: start" not in second.stderr
    assert len([p for p in root.iterdir() if p.is_dir() and p.name.startswith("toy_sweep")]) == 3
    assert state(path)["after_it"]["state"] == "done"


@pytest.mark.slow
def test_a_bad_sweep_is_one_line_and_nothing_starts(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path, {"train": {"cmd": "touch started", "random": {"count": 2, "params": {
        "model.lr": {"gauss": [0, 1]}}}}})
    result = lt_pipeline(path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"lt run: error: {path}: step 'train': random param 'model.lr': unknown distribution 'gauss'; use one of "
        "uniform, loguniform, randint, choice"]
    assert not (tmp_path / "started").exists() and not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_sweep_whose_trials_never_recorded_its_metric_says_so(tmp_path: Path) -> None:
    """The trials log train/loss only (no validation), the sweep ranks by val/loss: the step after it is
    told that no trial recorded val/loss, not that the sweep named no run folder."""
    root = tmp_path / "runs"
    path = write_pipeline(tmp_path, {
        "train": {"cmd": py(SWEEP, str(root)) + " trainer.max_steps=3 {overrides}", "grid": {"model.lr": [0.01]},
                  "metric": "val/loss"},
        "pick": {"cmd": "echo {train.run_dir} > best.txt", "after": ["train"]},
    })
    result = lt_pipeline(path)
    assert result.returncode == 1
    steps = state(path)
    assert Path(steps["train.0"]["run_dir"]).is_dir()  # the trial named its folder
    why = ("no trial of sweep 'exp_train' recorded the metric 'val/loss' that ranks them (1 run folder, none with"
           " 'val/loss' in summary.json): log it in every trial (a validation metric needs validation to run) or set"
           " the sweep's metric: to one the trials log")
    assert steps["pick"]["state"] == "failed"
    assert steps["pick"]["reason"] == f"step 'pick': {{train.run_dir}} is unknown: {why}"
    assert "named no run folder" not in result.stderr and f"train: 1 trials done; {why}" in result.stderr
    assert not (tmp_path / "best.txt").exists()
