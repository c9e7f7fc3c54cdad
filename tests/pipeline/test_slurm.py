"""Slurm scripts of a pipeline: their text, checked by bash, their bodies run for real without Slurm, and the
submission order against a recording stand-in for sbatch (no Slurm is started here)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pipeline_support import EVAL, TRAIN, lt_pipeline, py, write_pipeline
from support.processes import script_env

from lightning_track.errors import ConfigError
from lightning_track.launch import slurm
from lightning_track.launch.pipeline import parse_pipeline
from lightning_track.launch.slurm import SlurmOptions, sbatch_scripts, script_path, submit, submit_plan


def diamond(root: Path) -> object:
    return parse_pipeline({"name": "arc", "root": str(root), "steps": {
        "train": {"cmd": "python train.py --config cfg.yaml", "health_time": 600},
        "eval": {"cmd": "python eval.py --run {train.run_dir} --id {train.exp_id}", "after": ["train"]},
        "plots": {"cmd": "python plots.py {train.run_dir}", "after": ["train"]},
        "report": {"cmd": "lt report {train.run_dir} -o {train.run_dir}/r.html", "after": ["eval", "plots"]},
    }})


OPTIONS = SlurmOptions(partition="gpu", time="24:00:00", gres="gpu:1", extra=("--mem=32G",), grace=90,
                       python="/opt/py/bin/python")


def test_each_step_is_a_readable_script(tmp_path: Path) -> None:
    pipeline = diamond(tmp_path / "runs")
    scripts = sbatch_scripts(pipeline, OPTIONS, cwd=tmp_path)
    assert list(scripts) == ["train", "eval", "plots", "report"]
    train = scripts["train"].splitlines()
    assert train[0] == "#!/bin/bash"
    directives = [ln.removeprefix("#SBATCH ") for ln in train if ln.startswith("#SBATCH ")]
    out = tmp_path.resolve() / "runs" / "slurm" / "arc_train-%j.out"
    assert directives == ["--job-name=arc_train", f"--output={out}", "--open-mode=append", "--partition=gpu",
                          "--time=24:00:00", "--gres=gpu:1", "--signal=B:TERM@90", "--requeue",
                          "--kill-on-invalid-dep=yes", "--mem=32G"]
    signals = tmp_path.resolve() / "runs" / "signals"
    assert (f"exec /opt/py/bin/python -m lightning_track.cli.run --exp-id arc_train --signals-dir {signals} "
            "--grace 85 --slurm-requeue --health-time 600 -- \\") in train
    assert train[-1] == "    /bin/sh -c 'python train.py --config cfg.yaml'"
    assert f"cd {tmp_path.resolve()}" in train
    assert "--health-time" not in scripts["eval"] and "--dependency" not in "".join(scripts.values())
    assert scripts["eval"].splitlines()[-1] == (
        f"    /bin/sh -c 'python eval.py --run \"$(cat {signals}/arc_train.run)\" --id arc_train'")


def test_a_multi_task_step_runs_its_command_under_srun(tmp_path: Path) -> None:
    pipeline = parse_pipeline({"name": "ddp", "root": str(tmp_path), "steps": {
        "train": {"cmd": "python train.py --devices 2", "ntasks": 2}, "eval": {"cmd": "true", "after": "train"}}})
    scripts = sbatch_scripts(pipeline, OPTIONS, cwd=tmp_path)
    train = scripts["train"].splitlines()
    assert "#SBATCH --ntasks-per-node=2" in train
    assert train[-2:] == ["    srun --kill-on-bad-exit=1 \\", "    /bin/sh -c 'python train.py --devices 2'"]
    assert "srun" not in scripts["eval"] and "--ntasks" not in scripts["eval"]
    with pytest.raises(ConfigError, match=r"step 'train': ntasks must be a whole number >= 1 .*got 0"):
        parse_pipeline({"steps": {"train": {"cmd": "python train.py", "ntasks": 0}}})


def test_a_multi_node_step_asks_for_its_nodes_and_runs_under_srun(tmp_path: Path) -> None:
    pipeline = parse_pipeline({"name": "ddp", "root": str(tmp_path), "steps": {
        "train": {"cmd": "python train.py --nodes 2", "nodes": 2}}})
    train = sbatch_scripts(pipeline, OPTIONS, cwd=tmp_path)["train"].splitlines()
    assert "#SBATCH --nodes=2" in train and "#SBATCH --ntasks-per-node=1" in train
    assert train[-2:] == ["    srun --kill-on-bad-exit=1 \\", "    /bin/sh -c 'python train.py --nodes 2'"]
    with pytest.raises(ConfigError, match=r"step 'train': nodes must be a whole number >= 1 .*got 'two'"):
        parse_pipeline({"steps": {"train": {"cmd": "python train.py", "nodes": "two"}}})


@pytest.mark.slow
def test_a_requeued_job_script_names_the_run_folder_of_its_first_start(tmp_path: Path) -> None:
    """The restart block of a step's script, run by bash outside Slurm with Slurm's restart variable set."""
    root = tmp_path / "runs"
    seen = tmp_path / "seen.txt"
    pipeline = parse_pipeline({"name": "exp", "root": str(root), "steps": {
        "train": f'echo "$LIGHTNING_TRACK_RUN_DIR" > {seen}'}})
    path = tmp_path / "train.sbatch"
    path.write_text(sbatch_scripts(pipeline, SlurmOptions(python=sys.executable), cwd=tmp_path)["train"])
    (root / "signals").mkdir(parents=True)
    for restarts, expected in (("0", ""), ("1", str(root / "toy_run"))):
        (root / "signals" / "exp_train.run").write_text(f"{root / 'toy_run'}\n")
        done = subprocess.run(["bash", str(path)], capture_output=True, text=True, timeout=120,
                              env=script_env(SLURM_RESTART_COUNT=restarts))
        assert done.returncode == 0, done.stderr
        assert seen.read_text().strip() == expected


def test_scripts_parse_as_bash(tmp_path: Path) -> None:
    for name, text in sbatch_scripts(diamond(tmp_path / "my runs"), OPTIONS, cwd=tmp_path).items():
        path = tmp_path / f"{name}.sh"
        path.write_text(text)
        checked = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert checked.returncode == 0, (name, checked.stderr)


def test_the_submission_chains_with_afterok(tmp_path: Path) -> None:
    pipeline = diamond(tmp_path)
    plan = submit_plan(pipeline, list(pipeline.order))
    assert plan[0] == f"jid_train=$(sbatch --parsable {script_path(pipeline, 'train')})"
    assert plan[3] == ("jid_report=$(sbatch --parsable --dependency=afterok:$jid_eval:$jid_plots "
                       f"{script_path(pipeline, 'report')})")
    # steps already done are not submitted and not waited for
    assert submit_plan(pipeline, ["eval"]) == [f"jid_eval=$(sbatch --parsable {script_path(pipeline, 'eval')})"]


def test_a_slurm_arg_must_be_one_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="give one sbatch option"):
        sbatch_scripts(diamond(tmp_path), SlurmOptions(extra=("mem=32G",)))


class Sbatch:
    """Records sbatch calls; refuses --test-only of one script when told to."""

    def __init__(self, refuse: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.refuse = refuse

    def __call__(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(args)
        if "--test-only" in args:
            bad = self.refuse is not None and args[-1].endswith(f"_{self.refuse}.sbatch")
            return subprocess.CompletedProcess(args, 1 if bad else 0, "",
                                               "sbatch: error: invalid partition specified: gpux\n" if bad else "")
        return subprocess.CompletedProcess(args, 0, f"{100 + len(self.calls)};cluster\n", "")


def test_submit_in_order_with_dependencies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slurm.shutil, "which", lambda name: f"/usr/bin/{name}")
    pipeline = diamond(tmp_path)
    sbatch = Sbatch()
    ids = submit(pipeline, sbatch_scripts(pipeline, OPTIONS), run=sbatch)
    assert ids == {"train": "105", "eval": "106", "plots": "107", "report": "108"}
    assert sbatch.calls[5][:3] == ["sbatch", "--parsable", "--dependency=afterok:105"]
    assert sbatch.calls[7][:3] == ["sbatch", "--parsable", "--dependency=afterok:106:107"]
    assert script_path(pipeline, "report").read_text().startswith("#!/bin/bash")


def test_a_refused_script_submits_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slurm.shutil, "which", lambda name: f"/usr/bin/{name}")
    pipeline = diamond(tmp_path)
    sbatch = Sbatch(refuse="eval")
    with pytest.raises(ConfigError, match=r"^step 'eval': sbatch refused arc_eval.sbatch: sbatch: error: invalid "
                                          r"partition specified: gpux; fix --partition"):
        submit(pipeline, sbatch_scripts(pipeline, OPTIONS), run=sbatch)
    assert all("--test-only" in call for call in sbatch.calls)


@pytest.mark.skipif(shutil.which("sbatch") is not None, reason="this machine has sbatch")
def test_without_sbatch_the_cli_says_so(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path, {"a": "true"})
    result = lt_pipeline(path, "--slurm")
    assert result.returncode == 2
    assert result.stderr.strip() == ("lt run: error: --slurm: sbatch not found on PATH; run on a Slurm login node "
                                     "(or use --dry-run to see the scripts)")


def test_dry_run_prints_the_scripts_and_submits_nothing(tmp_path: Path) -> None:
    path = write_pipeline(tmp_path, {"a": "true"})
    dry = lt_pipeline(path, "--slurm", "--dry-run", "--partition", "cpu")
    assert dry.returncode == 0 and "#SBATCH --partition=cpu" in dry.stdout and "jid_a=$(sbatch" in dry.stdout
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_the_job_scripts_run_the_chain_outside_slurm(tmp_path: Path) -> None:
    """The scripts' bodies (the #SBATCH lines are comments to bash) run the steps through lt-run for real."""
    root = tmp_path / "runs"
    pipeline = parse_pipeline({"name": "exp", "root": str(root), "steps": {
        "train": {"cmd": py(TRAIN, str(root)), "health_time": 120},
        "eval": {"cmd": py(EVAL, "{train.run_dir}"), "after": ["train"]}}})
    scripts = sbatch_scripts(pipeline, SlurmOptions(python=sys.executable), cwd=tmp_path)
    for name in pipeline.order:
        path = tmp_path / f"{name}.sbatch"
        path.write_text(scripts[name])
        done = subprocess.run(["bash", str(path)], capture_output=True, text=True, env=script_env(), timeout=240)
        assert done.returncode == 0, done.stderr
    run = Path((root / "signals" / "exp_train.run").read_text().strip())
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert json.loads((run / "eval.json").read_text())["records"] > 0
    assert (root / "signals" / "exp_train.healthy").exists() and (root / "signals" / "exp_eval.done").exists()


def test_steps_submitted_before_are_waited_for_not_submitted_again(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slurm.shutil, "which", lambda name: f"/usr/bin/{name}")
    pipeline = diamond(tmp_path)
    sbatch = Sbatch()
    steps = ["eval", "report"]
    ids = submit(pipeline, sbatch_scripts(pipeline, OPTIONS, steps=steps), earlier={"train": "7", "plots": "9"},
                 run=sbatch)
    assert ids == {"eval": "103", "report": "104"}
    assert sbatch.calls[2][:3] == ["sbatch", "--parsable", "--dependency=afterok:7"]
    assert sbatch.calls[3][:3] == ["sbatch", "--parsable", "--dependency=afterok:103:9"]
    assert submit_plan(pipeline, steps, {"train": "7", "plots": "9"})[1].startswith(
        "jid_report=$(sbatch --parsable --dependency=afterok:$jid_eval:9 ")


def test_the_cli_records_job_ids_and_does_not_submit_twice(tmp_path: Path) -> None:
    """A stand-in ``sbatch`` on PATH (it records its arguments and answers like ``--parsable``)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "sbatch.log"
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\necho "$@" >> {log}\n'
                                    f'case "$1" in --test-only) exit 0;; esac\necho $(wc -l < {log})\n')
    (bin_dir / "sbatch").chmod(0o755)
    path = write_pipeline(tmp_path, {"train": "python train.py", "eval": {"cmd": "python eval.py {train.run_dir}",
                                                                          "after": ["train"]}})
    path_env = f"{bin_dir}:{script_env()['PATH']}"
    first = lt_pipeline(path, "--slurm", "--partition", "cpu", PATH=path_env)
    assert first.returncode == 0, first.stderr
    assert "train: submitted as job 3" in first.stderr and "eval: submitted as job 4" in first.stderr
    assert log.read_text().splitlines()[3].startswith("--parsable --dependency=afterok:3 ")
    status = lt_pipeline(path, "--status")
    assert [ln.split()[:4] for ln in status.stdout.splitlines()[1:]] == [["train", "submitted", "job", "3"],
                                                                          ["eval", "submitted", "job", "4"]]
    again = lt_pipeline(path, "--slurm", "--from", "eval", PATH=path_env)
    assert again.returncode == 0, again.stderr
    assert "already submitted, not again: train (job 3)" in again.stderr
    assert log.read_text().splitlines()[-1].startswith("--parsable --dependency=afterok:3 ")
