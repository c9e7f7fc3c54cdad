"""StepCheckpoint: names and counts for the seed policy, keep_last, resume from "last", atomic files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import AsyncCheckpointIO
from support.processes import script_env
from support.trainers import make_trainer

from lightning_track import BatchTracker, RunLayout, StepCheckpoint, TrackedDataset
from lightning_track.callbacks.step_checkpoint import AtomicCheckpointIO
from lightning_track.folder.fileio import iter_jsonl, read_json
from lightning_track.training.toy import LineDataset, ToyRegression, line_loader

HERE = Path(__file__).parent


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def test_seed_policy_saves_steps_76_to_125(tmp_path, run_logger_factory):
    logger = run_logger_factory()
    trainer = make_trainer(tmp_path, max_steps=125, logger=logger, callbacks=[StepCheckpoint(start_step=76)])
    trainer.fit(ToyRegression(hidden=8, seed=None), line_loader(LineDataset(n=64)))
    layout = logger.layout
    names = sorted(p.name for p in layout.checkpoints_dir.iterdir())
    expected = [f"checkpoint-step-{s:03d}.ckpt" for s in range(76, 126)]
    assert names == sorted([*expected, "last.ckpt"])
    assert [s for s, _ in layout.step_checkpoints()] == list(range(76, 126))
    first = _load(layout.checkpoint_path(76))
    assert first["global_step"] == 76
    assert "optimizer_states" in first and first["state_dict"]
    # last.ckpt is a link to the newest file, not a second copy
    assert layout.last_checkpoint.is_symlink()
    assert os.readlink(layout.last_checkpoint) == "checkpoint-step-125.ckpt"
    assert _load(layout.last_checkpoint)["global_step"] == 125
    # nothing but checkpoints in the folder (no temp files left behind)
    assert not [p for p in layout.checkpoints_dir.iterdir() if p.name.endswith(".tmp")]


def test_every_n_and_keep_last_update_the_mappings(tmp_path, run_logger_factory):
    logger = run_logger_factory()
    callbacks = [StepCheckpoint(every_n_steps=3, start_step=2, keep_last=2), BatchTracker()]
    trainer = make_trainer(tmp_path, max_steps=15, logger=logger, callbacks=callbacks)
    trainer.fit(ToyRegression(hidden=8, seed=None), line_loader(TrackedDataset(LineDataset(n=32))))
    layout = logger.layout
    # due at 2, 5, 8, 11, 14; only the newest two remain
    assert [s for s, _ in layout.step_checkpoints()] == [11, 14]
    assert os.readlink(layout.last_checkpoint) == "checkpoint-step-014.ckpt"
    mapping = read_json(layout.checkpoint_mapping_json)
    assert sorted(mapping) == ["checkpoint-step-011", "checkpoint-step-014"]
    assert mapping["checkpoint-step-014"]["path"] == "checkpoints/checkpoint-step-014.ckpt"
    lines = read_json(layout.line_checkpoint_mapping_json)
    assert all(set(names) <= {"checkpoint-step-011", "checkpoint-step-014"} for names in lines.values())


@pytest.mark.parametrize("order", ["csv_first", "run_first"])
def test_checkpoints_go_to_the_run_folder_whatever_the_logger_order(tmp_path, run_logger_factory, order):
    run_logger = run_logger_factory()
    csv = CSVLogger(tmp_path / "csv")
    loggers = [csv, run_logger] if order == "csv_first" else [run_logger, csv]
    trainer = make_trainer(tmp_path, max_steps=6, logger=loggers, callbacks=[StepCheckpoint(every_n_steps=3)])
    trainer.fit(ToyRegression(hidden=8, seed=None), line_loader(LineDataset(n=16)))
    assert [s for s, _ in run_logger.layout.step_checkpoints()] == [3, 6]
    assert not list((tmp_path / "csv").rglob("*.ckpt"))
    assert trainer.loggers[0] is loggers[0]  # the user's order is left alone by default


def test_move_run_logger_first_makes_a_plain_model_checkpoint_use_the_run_folder(tmp_path, run_logger_factory):
    from lightning.pytorch.callbacks import ModelCheckpoint

    run_logger = run_logger_factory()
    csv = CSVLogger(tmp_path / "csv")
    plain = ModelCheckpoint(filename="plain-{step}", every_n_train_steps=4)
    callbacks = [StepCheckpoint(every_n_steps=4, move_run_logger_first=True), plain]
    trainer = make_trainer(tmp_path, max_steps=4, logger=[csv, run_logger], callbacks=callbacks)
    trainer.fit(ToyRegression(hidden=8, seed=None), line_loader(LineDataset(n=16)))
    assert trainer.loggers[0] is run_logger
    assert (run_logger.layout.checkpoints_dir / "plain-step=4.ckpt").is_file()


def test_without_run_logger_uses_default_root_dir(tmp_path):
    trainer = make_trainer(tmp_path / "root", max_steps=4, logger=False, callbacks=[StepCheckpoint(every_n_steps=2)])
    trainer.fit(ToyRegression(hidden=8, seed=None), line_loader(LineDataset(n=16)))
    layout = RunLayout(tmp_path / "root")
    assert [s for s, _ in layout.step_checkpoints()] == [2, 4]


def test_resume_from_last_continues_without_duplicate_steps(tmp_path, run_logger_factory):
    first_logger = run_logger_factory()
    data = TrackedDataset(LineDataset(n=24))
    callbacks = [StepCheckpoint(every_n_steps=5), BatchTracker()]
    # "killed" after step 12: the newest checkpoint is step 10, tracking already holds 11 and 12
    make_trainer(tmp_path, max_steps=12, logger=first_logger, callbacks=callbacks).fit(
        ToyRegression(hidden=8, seed=None), line_loader(data))
    layout = first_logger.layout
    assert [s for s, _ in layout.step_checkpoints()] == [5, 10]

    logger = run_logger_factory(resume=True)
    assert logger.layout.run_dir == layout.run_dir
    module = ToyRegression(hidden=8, seed=None)
    trainer = make_trainer(tmp_path, max_steps=20, logger=logger, callbacks=[StepCheckpoint(every_n_steps=5),
                                                                            BatchTracker()])
    trainer.fit(module, line_loader(data), ckpt_path="last")
    assert trainer.ckpt_path == str(layout.checkpoint_path(10))
    assert module.seen[0][0] == 10  # the first step trained after the resume starts from global_step 10
    assert [s for s, _ in layout.step_checkpoints()] == [5, 10, 15, 20]
    assert _load(layout.checkpoint_path(20))["global_step"] == 20
    steps = [rec["step"] for _, rec in iter_jsonl(layout.batch_tracking_jsonl)]
    assert steps == list(range(1, 21))
    mapping = read_json(layout.checkpoint_mapping_json)
    assert sorted(mapping) == [f"checkpoint-step-{s:03d}" for s in (5, 10, 15, 20)]


def test_async_saving_writes_complete_files(tmp_path, run_logger_factory):
    logger = run_logger_factory()
    callback = StepCheckpoint(every_n_steps=2, async_save=True)
    trainer = make_trainer(tmp_path, max_steps=8, logger=logger, callbacks=[callback])
    trainer.fit(ToyRegression(hidden=8, seed=None), line_loader(LineDataset(n=16)))
    io = trainer.strategy.checkpoint_io
    assert isinstance(io, AsyncCheckpointIO) and isinstance(io.checkpoint_io, AtomicCheckpointIO)
    steps = [s for s, _ in logger.layout.step_checkpoints()]
    assert steps == [2, 4, 6, 8]
    assert [_load(p)["global_step"] for _, p in logger.layout.step_checkpoints()] == steps


class _ListsFolder:
    """Pickled inside a checkpoint: records what the target folder holds while the file is written."""

    seen: list[str] = []

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __reduce__(self):
        _ListsFolder.seen = sorted(os.listdir(self.folder))
        return (str, ("x",))


def test_temp_file_sits_next_to_the_target_and_is_never_a_ckpt(tmp_path):
    io = AtomicCheckpointIO()
    target = tmp_path / "checkpoints" / RunLayout.checkpoint_filename(7)
    target.parent.mkdir()
    io.save_checkpoint({"w": torch.zeros(3), "probe": _ListsFolder(target.parent)}, target)
    (temp,) = _ListsFolder.seen
    assert temp.startswith(".checkpoint-step-007.ckpt.") and temp.endswith(".tmp")
    assert RunLayout.checkpoint_step(temp) is None
    assert sorted(os.listdir(target.parent)) == ["checkpoint-step-007.ckpt"]


def test_failed_save_keeps_the_previous_file(tmp_path):
    io = AtomicCheckpointIO()
    target = tmp_path / "checkpoint-step-001.ckpt"
    io.save_checkpoint({"w": torch.ones(2)}, target)
    with pytest.raises(AttributeError, match="Can't pickle local object"):
        io.save_checkpoint({"w": torch.zeros(2), "bad": lambda: None}, target)  # lambdas cannot be pickled
    assert torch.equal(_load(target)["w"], torch.ones(2))
    assert os.listdir(tmp_path) == ["checkpoint-step-001.ckpt"]


@pytest.mark.slow
def test_sigkill_during_saves_never_leaves_a_torn_checkpoint(tmp_path):
    """A real process saving ~8 MB checkpoints every step, killed with SIGKILL mid-run."""
    root = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(HERE / "kill_script.py"), str(root)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=script_env())
    try:
        deadline = time.monotonic() + 60
        folder = root / "checkpoints"
        while time.monotonic() < deadline:
            if folder.is_dir() and len(RunLayout(root).step_checkpoints()) >= 4:  # last.ckpt not counted
                break
            time.sleep(0.05)
        else:
            pytest.fail("the training script saved no checkpoints: " + (proc.stdout.read() if proc.poll() else ""))
        time.sleep(0.13)  # land somewhere inside a later save
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    layout = RunLayout(root)
    saved = layout.step_checkpoints()
    assert len(saved) >= 4
    for step, path in saved:  # every file that looks like a checkpoint is complete
        assert _load(path)["global_step"] == step
    # the leftover temp file (if the kill hit a save) is removed by the next fit, which resumes
    trainer = make_trainer(root, max_steps=saved[-1][0] + 1, logger=False,
                           callbacks=[StepCheckpoint(every_n_steps=1)])
    module = ToyRegression(dim=4, hidden=1024, seed=None)
    trainer.fit(module, line_loader(LineDataset(n=32)), ckpt_path="last")
    assert trainer.ckpt_path == str(saved[-1][1])
    assert not [p for p in layout.checkpoints_dir.iterdir() if p.name.endswith(".tmp")]
