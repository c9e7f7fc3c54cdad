"""``{train.last_ckpt}`` / ``{train.best_ckpt}``: a pipeline step given a checkpoint of an earlier step's run
records in its own run which one it evaluated, with the hash the training run's checkpoints.json holds."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from pipeline_support import HERE, TRAIN, lt_pipeline, py, state, write_pipeline
from support.processes import script_env

from lightning_track.errors import ConfigError
from lightning_track.launch.checkpoint_refs import resolve_checkpoint
from lightning_track.launch.pipeline import check_slurm_references, parse_pipeline

EVAL = HERE / "pipeline_ckpt_eval_script.py"


def test_checkpoint_references_parse_and_slurm_takes_them_except_of_a_sweep() -> None:
    spec = parse_pipeline({"steps": {"train": {"cmd": "t"},
                                     "eval": {"cmd": "e {train.best_ckpt} {train.last_ckpt}", "after": ["train"]}}})
    assert spec.steps["eval"].references == [("train", "best_ckpt"), ("train", "last_ckpt")]
    check_slurm_references(spec)  # resolved in the eval job when it starts
    sweep = parse_pipeline({"steps": {"train": {"cmd": "t", "grid": {"lr": [1, 2]}, "metric": "loss"},
                                      "eval": {"cmd": "e {train.best_ckpt}", "after": ["train"]}}})
    with pytest.raises(ConfigError, match=r"^step 'eval': \{train.best_ckpt\} names sweep 'train', which has one "):
        check_slurm_references(sweep)
    with pytest.raises(ConfigError, match=r"\{train.first_ckpt\} names no known field; use .*\{train.best_ckpt\}"):
        parse_pipeline({"steps": {"train": {"cmd": "t"}, "eval": {"cmd": "e {train.first_ckpt}", "after": ["train"]}}})


def _run_with(tmp_path: Path, entries: list[dict]) -> Path:
    run = tmp_path / "d_m_20260101_000000"
    (run / "checkpoints").mkdir(parents=True)
    for entry in entries:
        if not entry.pop("gone", False):
            (run / entry["file"]).write_bytes(entry["file"].encode())
    (run / "checkpoints.json").write_text(json.dumps({"checkpoints": entries}))
    return run


def test_a_run_without_the_checkpoint_named_is_one_line_naming_the_step_and_template(tmp_path: Path) -> None:
    empty = _run_with(tmp_path / "a", [])
    with pytest.raises(ConfigError) as caught:
        resolve_checkpoint("eval", "train", "last_ckpt", empty)
    assert str(caught.value) == (f"step 'eval': {{train.last_ckpt}}: run {empty} has no checkpoint on disk in its "
                                 "checkpoints.json; give step 'train' a StepCheckpoint or ModelCheckpoint")
    unmonitored = _run_with(tmp_path / "b", [{"file": "checkpoints/a.ckpt", "step": 5, "metrics": {"loss": 1.0}}])
    with pytest.raises(ConfigError) as caught:
        resolve_checkpoint("eval", "train", "best_ckpt", unmonitored)
    assert str(caught.value) == (f"step 'eval': {{train.best_ckpt}}: run {unmonitored} has no checkpoint with a "
                                 "monitored metric; give step 'train''s ModelCheckpoint monitor=..., or use "
                                 "{train.last_ckpt}")
    # the best is the best of those still on disk (save_top_k deleted the others); max mode; unhashed: hashed now
    watch = {"metric": "acc", "mode": "max"}
    run = _run_with(tmp_path / "c", [
        {"file": "checkpoints/s1.ckpt", "step": 1, "metrics": {"acc": 0.9}, "monitor": watch, "gone": True},
        {"file": "checkpoints/s2.ckpt", "step": 2, "metrics": {"acc": 0.7}, "monitor": watch, "sha256": "x" * 64},
        {"file": "checkpoints/s3.ckpt", "step": 3, "metrics": {"acc": 0.5}, "monitor": watch}])
    best = resolve_checkpoint("eval", "train", "best_ckpt", run)
    assert (best["file"], best["step"], best["sha256"], best["path"]) == (
        "checkpoints/s2.ckpt", 2, "x" * 64, str(run / "checkpoints/s2.ckpt"))
    last = resolve_checkpoint("eval", "train", "last_ckpt", run)
    assert (last["file"], last["sha256"]) == ("checkpoints/s3.ckpt", hashlib.sha256(b"checkpoints/s3.ckpt").hexdigest())


@pytest.mark.slow
def test_eval_steps_record_the_checkpoint_they_evaluated_and_its_hash(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    path = write_pipeline(tmp_path, {
        "train": {"cmd": py(TRAIN, str(root), "--steps", "20", "--every", "5", "--checkpoints")},
        "last": {"cmd": py(EVAL, str(root), "{train.last_ckpt}"), "after": ["train"]},
        "best": {"cmd": py(EVAL, str(root), "{train.best_ckpt}"), "after": ["train"]},
    })
    result = lt_pipeline(path)
    assert result.returncode == 0, result.stderr
    steps = state(path)
    assert {steps[s]["state"] for s in ("train", "last", "best")} == {"done"}

    train = Path(steps["train"]["run_dir"])
    index = json.loads((train / "checkpoints.json").read_text())["checkpoints"]
    on_disk = {e["file"]: e for e in index if (train / e["file"]).is_file()}
    monitored = [e for e in on_disk.values() if e.get("monitor")]
    best = min(monitored, key=lambda e: e["metrics"]["train/loss"])
    assert math.isfinite(best["metrics"]["train/loss"]) and len(monitored) == 2  # save_top_k=2 kept two
    evals = {json.loads((run / "meta.json").read_text())["evaluated"][0]["template"]: run
             for run in root.glob("toy_eval_*")}
    assert set(evals) == {"{train.last_ckpt}", "{train.best_ckpt}"}
    for template, expected in (("{train.best_ckpt}", best), ("{train.last_ckpt}", None)):
        (evaluated,) = json.loads((evals[template] / "meta.json").read_text())["evaluated"]
        assert evaluated["run"] == train.name and evaluated["run_dir"] == str(train)
        entry = on_disk[evaluated["file"]]
        assert evaluated["sha256"] == entry["sha256"] and evaluated["step"] == entry["step"]
        if expected is not None:
            assert evaluated["file"] == expected["file"]
        else:
            assert evaluated["step"] == 20
        assert json.loads((evals[template] / "summary.json").read_text())["status"] == "completed"
        step = steps["best" if template == "{train.best_ckpt}" else "last"]
        assert step["checkpoints"] == [{k: evaluated[k] for k in ("template", "run", "file", "step", "sha256")}]
    shown = subprocess.run([sys.executable, "-m", "lightning_track.cli.lt", "show", str(evals["{train.best_ckpt}"])],
                           capture_output=True, text=True, env=script_env(), timeout=60)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[lines.index("evaluated") + 1] == (
        f"  {{train.best_ckpt}}: {train.name}/{best['file']}  step {best['step']}  sha256 {best['sha256'][:12]}  "
        "(matches its run's index)")
