"""``--jobs N`` (runs in worker processes) writes exactly what the in-process ``--jobs 1`` path writes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lightning_track.cli.migrate import main
from lightning_track.folder.layout import RunLayout
from lightning_track.migrate import MigrateOptions, make_example, migrate


def _same_checkpoint(a: Path, b: Path) -> None:
    if a.read_bytes() == b.read_bytes():
        return
    left, right = torch.load(a, weights_only=False), torch.load(b, weights_only=False)
    assert left.keys() == right.keys(), a.name
    for key, value in left["state_dict"].items():
        assert torch.equal(value, right["state_dict"][key]), (a.name, key)
    assert {k: v for k, v in left.items() if k not in ("state_dict", "optimizer_states")} == \
        {k: v for k, v in right.items() if k not in ("state_dict", "optimizer_states")}, a.name


def test_jobs_2_writes_the_same_runs_as_jobs_1(migrated: dict, example_tree: Path, tmp_path: Path) -> None:
    """The session fixture migrated through the CLI with --jobs 2; here the same tree in-process."""
    serial = tmp_path / "runs"
    report = migrate(example_tree, serial, options=MigrateOptions(), jobs=1)
    assert report.exit_code == 0 and len(report.runs) == 3
    parallel_report = json.loads(migrated["report"].read_text())["runs"]
    assert [(Path(r["target"]).name, r["status"], r["steps"], r["checkpoints"], r["tracked_lines"], r["warnings"])
            for r in parallel_report] == \
        [(Path(r.target).name, r.status, r.steps, r.checkpoints, r.tracked_lines, r.warnings) for r in report.runs]
    for layout in RunLayout.list_runs(serial):
        other = RunLayout(migrated["out"] / layout.name)
        for name in ("metrics_jsonl", "batch_tracking_jsonl", "checkpoint_mapping_json",
                     "line_checkpoint_mapping_json", "config_yaml", "metrics_csv"):
            assert getattr(layout, name).read_bytes() == getattr(other, name).read_bytes(), (layout.name, name)
        ours, theirs = layout.step_checkpoints(), other.step_checkpoints()
        assert [s for s, _ in ours] == [s for s, _ in theirs] and ours
        for (_, a), (_, b) in zip(ours, theirs, strict=True):
            _same_checkpoint(a, b)
        assert sorted(p.name for p in layout.final_model_dir.iterdir()) == \
            sorted(p.name for p in other.final_model_dir.iterdir())
    assert not (migrated["out"] / ".lt-migrate-staging").exists()


@pytest.mark.slow
def test_bad_run_does_not_stop_the_others_in_workers(legacy_copy: Path, tmp_path: Path) -> None:
    broken = legacy_copy / "icoding" / "arc-challenge" / "icoding_20250720_143052_lora" / "models" / "broken.bin"
    # a dangling link inside the run (one out of the tree is skipped): an OS error in that run's worker, named
    broken.symlink_to(broken.parent / "nonexistent.bin")
    out = tmp_path / "runs"
    code = main([str(legacy_copy), "--out", str(out), "--jobs", "2", "--report", str(tmp_path / "r.json")])
    runs = json.loads((tmp_path / "r.json").read_text())["runs"]
    assert code == 1 and sorted(r["status"] for r in runs) == ["converted", "converted", "failed"]
    assert [r["reason"] for r in runs if r["status"] == "failed"] == [f"{broken}: No such file or directory"]
    assert len(RunLayout.list_runs(out)) == 2 and not (out / ".lt-migrate-staging").exists()


@pytest.mark.slow
def test_sigint_to_the_cli_interrupts_the_workers_and_leaves_no_half_run(tmp_path: Path) -> None:
    source = tmp_path / "experiments"
    # 20k tracking lines: the first checkpoint (written beside the lines) appears ~0.5 s before the end,
    # not ~50 ms as with a few hundred, so the interrupt reliably lands mid-run
    make_example(source, runs=2, steps=20_000, checkpoints=12, ckpt_mb=0.5)
    out = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "lightning_track.cli.migrate", str(source), "--out", str(out),
                             "--jobs", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    staging = out / ".lt-migrate-staging"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(staging.glob("*/checkpoints/*.ckpt")):
        time.sleep(0.01)
    assert proc.poll() is None, "migration finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)  # to the parent only: it must pass the interrupt on to its workers
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # hung: do not leave it (and its workers) running after the test
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not staging.exists()
    for layout in RunLayout.list_runs(out):
        assert json.loads(layout.summary_json.read_text())["migrated"] is True


def test_jobs_must_be_a_positive_number(example_tree: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([str(example_tree), "--out", str(tmp_path / "runs"), "--jobs", "0"])
    assert exit_info.value.code == 2
    assert "argument --jobs: expected a whole number >= 1, got '0'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
