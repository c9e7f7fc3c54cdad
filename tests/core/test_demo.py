"""lt-demo, the README's main command: a small real training run that writes a complete run folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from support.readers import tensorboard_scalars

from lightning_track import RunLayout, load_final_model, read_metrics
from lightning_track.cli.demo import main
from lightning_track.training.demo import DEMO_CONFIG, DemoModule
from lightning_track.vocabulary import EXIT_USAGE

REPO = Path(__file__).resolve().parents[2]


def test_packaged_demo_config_is_the_repo_one() -> None:
    assert DEMO_CONFIG.read_text() == (REPO / "configs" / "demo.yaml").read_text()


def test_lt_demo_writes_a_complete_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "runs"
    code = main(["--quiet", f"logger.root={root}", "trainer.max_steps=30", "trainer.val_check_interval=15",
                 "callbacks.step_checkpoint.start_step=10", "callbacks.step_checkpoint.every_n_steps=10"])
    assert code == 0
    (run,) = RunLayout.list_runs(root)
    out = capsys.readouterr().out
    assert f"Run folder: {run.run_dir}" in out and f"tensorboard --logdir {root}" in out
    assert f"lt show {run.run_dir}" in out

    # every part of the run-folder contract is there
    assert [s for s, _ in run.step_checkpoints()] == [10, 20, 30]
    assert run.last_checkpoint.is_symlink() and run.last_checkpoint.resolve() == run.checkpoint_path(30)
    assert not run.swanlab_dir.exists() and f"lt board {root}" in out  # SwanLab's board: fed from the folder
    assert [s for s, _, _ in tensorboard_scalars(run.tensorboard_dir)["train/loss"]] == list(range(1, 31))
    assert [r.step for r in read_metrics(run.metrics_jsonl) if "train/loss" in r.metrics] == list(range(1, 31))
    summary = json.loads(run.summary_json.read_text())
    assert summary["status"] == "completed" and "val/acc" in summary["best"]
    assert OmegaConf.load(run.config_yaml).trainer.max_steps == 30
    assert json.loads(run.meta_json.read_text())["dataset"] == "synthetic-blobs"
    tracked = [json.loads(line) for line in run.batch_tracking_jsonl.read_text().splitlines()]
    assert [t["step"] for t in tracked] == list(range(1, 31)) and all(len(t["line_indices"]) == 32 for t in tracked)
    mapping = json.loads(run.checkpoint_mapping_json.read_text())
    assert sorted(mapping) == ["checkpoint-step-010", "checkpoint-step-020", "checkpoint-step-030"]
    assert json.loads(run.line_checkpoint_mapping_json.read_text())
    assert (run.signals_dir / f"{run.name}.healthy").exists() and (run.signals_dir / f"{run.name}.done").exists()
    model = load_final_model(run.final_model_dir, DemoModule)
    assert isinstance(model, DemoModule) and (run.final_model_dir / "README.md").exists()
    assert run.metrics_csv.exists() and run.report_md.exists()

    # one step convention (trainer.global_step at logging time) in every file of the run
    from lightning_track.folder.signals import read_signal

    metric_steps = [r.step for r in read_metrics(run.metrics_jsonl) if "train/loss" in r.metrics]
    assert metric_steps == [t["step"] for t in tracked]  # a batch's values and its data lines
    val_steps = [r.step for r in read_metrics(run.metrics_jsonl) if "val/loss" in r.metrics]
    assert val_steps == [15, 30]  # validation after 15 and 30 optimizer steps
    assert {mapping[name]["step"] for name in mapping} == {10, 20, 30} <= set(metric_steps)
    assert summary["last_step"] == 30 == read_signal(run.signals_dir, run.name, "done")["step"]
    assert summary["last_checkpoint_step"] == 30
    assert [int(line.split(",")[0]) for line in run.metrics_csv.read_text().splitlines()[1:]] == list(range(1, 31))


def test_lt_demo_bad_override_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--quiet", f"logger.root={tmp_path}", "callbacks.step_checkpoint.evry_n_steps=3"])
    assert code == EXIT_USAGE  # bad input, nothing done
    err = capsys.readouterr().err.strip()
    assert err.startswith("lt-demo: error:") and "evry_n_steps" in err and "\n" not in err
    assert RunLayout.list_runs(tmp_path) == []


def test_lt_demo_unknown_trainer_key_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--quiet", f"logger.root={tmp_path}", "trainer.max_stepz=3"]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err.startswith("lt-demo: error:") and "max_stepz" in err and "\n" not in err
    assert RunLayout.list_runs(tmp_path) == []


@pytest.mark.slow
def test_lt_demo_cli_bad_value_type_is_one_line_exit_2_and_no_folder(tmp_path: Path) -> None:
    """The real console script: before, ``trainer.max_steps=abc`` printed a TypeError traceback and
    left an empty failed run folder."""
    root = tmp_path / "runs"
    lt_demo = shutil.which("lt-demo")
    cmd = [lt_demo] if lt_demo else [sys.executable, "-m", "lightning_track.cli.demo"]
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PYTHONPATH": path}
    proc = subprocess.run([*cmd, "--quiet", "trainer.max_steps=abc", f"logger.root={root}"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_USAGE, proc.stderr[-2000:]
    assert proc.stderr == "lt-demo: error: trainer.max_steps: 'abc' is not an int\n"
    assert not root.exists() or not any(root.iterdir())


@pytest.mark.parametrize(("override", "message"), [
    ("model.hidden=abc", "model.hidden: 'abc' is not an int"),
    ("data.batch_size=1.5", "data.batch_size: 1.5 is not an int"),
    ("callbacks.health_guard.warmup_steps=abc", "callbacks.health_guard.warmup_steps: 'abc' is not an int or null"),
    ("logger.flush_interval=soon", "logger.flush_interval: 'soon' is not a number"),
    ("trainer.precision=bf17", "trainer.precision: 'bf17' is not one of 64, 32, 16,"),
    ("trainer.enable_checkpointing=[1]", "trainer.enable_checkpointing: [1] is not true or false or null"),
])
def test_lt_demo_bad_value_types_name_key_value_and_type(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         override: str, message: str) -> None:
    root = tmp_path / "runs"
    assert main(["--quiet", f"logger.root={root}", override]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith(f"lt-demo: error: {message}") and err.count("\n") == 1
    assert not root.exists() or not any(root.iterdir())


@pytest.mark.slow
def test_lt_demo_first_screen_is_what_a_newcomer_needs(tmp_path: Path) -> None:
    """Before its summary lt-demo printed Lightning's srun hint (any machine with Slurm) and cloud tips, a
    torch deprecation from Lightning, a bar reading ``Epoch 2/-2`` and SwanLab's watch or sync note twice."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # Slurm installed here: Lightning's hint would show
    (bin_dir / "srun").chmod(0o755)
    lt_demo = shutil.which("lt-demo")
    cmd = [lt_demo] if lt_demo else [sys.executable, "-m", "lightning_track.cli.demo"]
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {**os.environ, "PYTHONPATH": path, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "SWANLAB_MODE": "offline", "COLUMNS": "200"}
    proc = subprocess.run([*cmd, "trainer.max_steps=70", "trainer.val_check_interval=35"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    screen = proc.stdout + proc.stderr
    first, summary = screen.split("Run folder:", 1)
    for noise in ("srun", "Tip:", "litlogger", "LeafSpec", "/-"):
        assert noise not in first, first
    assert "Epoch 1/1" in first  # 70 steps of 64 an epoch: the second and last epoch
    assert not any("swanlab sync" in line or "swanlab watch" in line for line in first.splitlines()), first
    (run,) = RunLayout.list_runs(tmp_path / "runs")
    assert f"lt show {run.run_dir.relative_to(tmp_path)}" in summary and "lt board runs" in summary
