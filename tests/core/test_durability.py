"""Durability rules without a process: a failed append leaves whole lines only, and a checkpoint lands on disk
after the records up to it (the slow twins: the full-disk tmpfs and the random-SIGKILL tests)."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
from support.trainers import make_trainer

from lightning_track import RunLogger, StepCheckpoint
from lightning_track.callbacks.step_checkpoint import AtomicCheckpointIO
from lightning_track.folder.fileio import JsonlAppender, iter_jsonl
from lightning_track.training.toy import ToyRegression, regression_data


class FullDisk(JsonlAppender):
    """A disk that takes ``room`` more bytes, then answers ENOSPC (as a write(2) on a full tmpfs does)."""

    room = 0

    def _write(self, fd: int, data: memoryview) -> int:  # type: ignore[override]
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        taken = os.write(fd, data[: self.room])
        self.room -= taken
        return taken


@pytest.mark.parametrize("room", [0, 7, 40])  # nothing, part of the first line, a whole line and part of one
def test_a_failed_append_is_cut_back_to_the_last_whole_line(tmp_path: Path, room: int) -> None:
    path = tmp_path / "metrics.jsonl"
    with JsonlAppender(path) as out:
        out.write_lines(['{"step": 1}\n', '{"step": 2}\n'])
    before = path.read_bytes()
    with FullDisk(path) as out:
        out.room = room
        with pytest.raises(OSError, match=f"cannot append to {path}: No space left on device") as caught:
            out.write_lines(['{"step": 3, "metrics": {"loss": 0.5}}\n', '{"step": 4, "metrics": {"loss": 0.4}}\n'])
        assert caught.value.errno == errno.ENOSPC
        assert path.read_bytes() == before  # the batch is gone whole: no torn line, no half of it
        out.room = 1 << 20  # room again: the next batch follows the last whole line
        out.write_lines(['{"step": 5}\n'])
    assert [obj["step"] for _, obj in iter_jsonl(path)] == [1, 2, 5]


class SpyIO(AtomicCheckpointIO):
    """Saves checkpoints as StepCheckpoint does, noting first which steps metrics.jsonl holds at that moment."""

    def __init__(self) -> None:
        super().__init__()
        self.logger: RunLogger | None = None
        self.seen: list[tuple[int, list[int]]] = []

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path_jsonl = self.logger.run_dir / "metrics.jsonl"
        steps = [obj["step"] for _, obj in iter_jsonl(path_jsonl)] if path_jsonl.exists() else []
        self.seen.append((checkpoint["global_step"], steps))
        super().save_checkpoint(checkpoint, path, storage_options)


def test_a_checkpoint_is_written_after_every_record_logged_before_it(tmp_path: Path) -> None:
    """The writer flushes only once an hour here: whatever metrics.jsonl holds when a checkpoint is written was
    made durable for that checkpoint (a resume from it must find every step before it)."""
    logger = RunLogger("d", "m", root=tmp_path / "runs", sinks=(), console=False, flush_interval=3600)
    spy = SpyIO()
    spy.logger = logger
    trainer = make_trainer(tmp_path, max_steps=6, logger=logger, plugins=[spy], limit_val_batches=0,
                           callbacks=[StepCheckpoint(every_n_steps=2)])
    trainer.fit(ToyRegression(), regression_data(n=64))
    assert [step for step, _ in spy.seen] == [2, 4, 6]
    for step, on_disk in spy.seen:
        # Lightning logs a batch's values just after the checkpoint its end saved: every step before it
        assert on_disk == list(range(1, step)), (step, on_disk)
