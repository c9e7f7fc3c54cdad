"""StepCheckpoint: Lightning's ModelCheckpoint with the run folder's names, a step policy and atomic files.

Why a subclass and not a new saver: Lightning already knows how to dump, restore and link
checkpoints; this class only decides *when* (``start_step``, ``every_n_steps``), *where* (the run
layout's ``checkpoints/checkpoint-step-NNN.ckpt``), keeps the newest ``keep_last``, and replaces
Lightning's default file writer, which stages the file in ``$TMPDIR`` and moves it (not atomic
across filesystems, no fsync), with one that writes a temp file beside the target.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import AsyncCheckpointIO
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override

from ..folder.checkpoint_index import HashingWriter
from ..folder.fileio import atomic_open
from ..folder.layout import RunLayout
from .targets import find_layout, find_run_logger, run_logger_first, training_starts

__all__ = ["StepCheckpoint", "AtomicCheckpointIO", "SAVED_HOOK", "REMOVED_HOOK"]

# Other callbacks (BatchTracker) learn about step checkpoints through these optional methods:
# ``on_step_checkpoint_saved(trainer, step, path)`` / ``on_step_checkpoint_removed(trainer, step, path)``.
SAVED_HOOK = "on_step_checkpoint_saved"
REMOVED_HOOK = "on_step_checkpoint_removed"

_TEMP_SUFFIX = ".tmp"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` straight into a temp file next to the target, fsync, then ``os.replace``.

    A reader (or ``ckpt_path="last"`` after a kill) sees the previous file or the complete new one,
    never a torn ``.ckpt``; the temp file ends in ``.tmp`` so nothing mistakes it for a checkpoint.
    Non-local paths (``s3://`` ...) go through Lightning's own fsspec writer.

    ``on_written(path, sha256, size)``: when given, the bytes are hashed as ``torch.save`` streams them
    (no second read of the file) and it is called before the file takes its name.
    """

    def __init__(self, on_written: Callable[[str, str, int], None] | None = None) -> None:
        super().__init__()
        self.on_written = on_written

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(target, "wb") as handle:
            hashing = HashingWriter(handle) if self.on_written is not None else None
            torch.save(checkpoint, hashing or handle)
            if hashing is not None and self.on_written is not None:
                self.on_written(str(target), hashing.hexdigest(), hashing.size)


def _wants_atomic(io: Any) -> bool:
    return type(io) is TorchCheckpointIO


def _no_trainer() -> None:
    """The trainer reference before setup (a module function, so the callback pickles for ddp_spawn)."""
    return None


class StepCheckpoint(ModelCheckpoint):
    """Save ``checkpoints/checkpoint-step-{step:03d}.ckpt`` every ``every_n_steps`` from ``start_step``.

    Args:
        every_n_steps: save when ``(global_step - start_step) % every_n_steps == 0``.
        start_step: first optimizer step (1-based, as ``trainer.global_step`` after the step) to save.
        keep_last: keep only the newest K step checkpoints (None keeps all).
        async_save: write files in a background thread (Lightning's ``AsyncCheckpointIO``): the
            training thread only pays for copying the tensors.
        dirpath: override the folder (default: the run layout's ``checkpoints/``).
        save_weights_only: as in ModelCheckpoint (then the files cannot resume optimizer state).
        move_run_logger_first: move the RunLogger to the front of ``trainer.loggers`` so that
            ``trainer.logger``/``trainer.log_dir`` (and a plain ModelCheckpoint) use the run folder.
            Off by default: it changes what ``self.logger`` is in the user's module.

    ``last.ckpt`` is a relative symlink to the newest file (Lightning's ``save_last="link"``), and
    ``trainer.fit(ckpt_path="last")`` resumes from the newest complete step checkpoint.
    """

    def __init__(
        self,
        every_n_steps: int = 1,
        start_step: int = 0,
        keep_last: int | None = None,
        async_save: bool = False,
        dirpath: _PATH | None = None,
        save_weights_only: bool = False,
        move_run_logger_first: bool = False,
    ) -> None:
        if not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ValueError(f"StepCheckpoint: every_n_steps must be an integer >= 1, got {every_n_steps!r}")
        if not isinstance(start_step, int) or start_step < 0:
            raise ValueError(f"StepCheckpoint: start_step must be an integer >= 0, got {start_step!r}")
        if keep_last is not None and (not isinstance(keep_last, int) or keep_last < 1):
            raise ValueError(f"StepCheckpoint: keep_last must be None or an integer >= 1, got {keep_last!r}")
        super().__init__(
            dirpath=dirpath,
            save_top_k=-1,
            save_last="link",
            every_n_train_steps=1,
            save_weights_only=save_weights_only,
            enable_version_counter=False,
        )
        self.every_n_steps = every_n_steps
        self.start_step = start_step
        self.keep_last = keep_last
        self.async_save = async_save
        self.move_run_logger_first = move_run_logger_first
        self._user_dirpath = dirpath is not None
        self._trainer_ref: Callable[[], Trainer | None] = _no_trainer

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(every_n_steps=self.every_n_steps, start_step=self.start_step)

    # -- where -----------------------------------------------------------------------------------
    def _checkpoints_dir(self, trainer: Trainer) -> str:
        if self._user_dirpath:
            assert self.dirpath is not None
            return str(self.dirpath)
        return str(find_layout(trainer).checkpoints_dir)

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.move_run_logger_first:
            run_logger_first(trainer)
        self._trainer_ref = weakref.ref(trainer)
        self.dirpath = self._checkpoints_dir(trainer)
        super().setup(trainer, pl_module, stage)
        if stage == "fit":
            self._install_atomic_io(trainer)
            if trainer.is_global_zero:
                self._remove_stale_temp_files()

    # -- the run record: what the logger cannot see for itself (Lightning gives a Logger no trainer) --
    @override
    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        """``fit(ckpt_path=...)`` inside an earlier run of the same dataset and method continues that
        run's folder (before any file is written in the new one), here before the checkpoint callbacks
        load their state, so they find their folder unchanged."""
        logger = find_run_logger(trainer)
        if logger is not None:
            logger.continue_from_checkpoint(trainer.ckpt_path, trainer)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        training_starts(trainer)  # a resume that would rewind is refused here, before anything is written
        super().on_train_start(trainer, pl_module)

    @override
    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(trainer, pl_module, checkpoint)
        logger = find_run_logger(trainer)
        if logger is not None:
            logger.before_checkpoint()  # every checkpoint, ours or not: its steps' records first

    def _written_hook(self, trainer: Trainer) -> Callable[[str, str, int], None] | None:
        """Who takes the hash of each file as it is written: the RunLogger's checkpoint index (None without one:
        then nothing is hashed)."""
        logger = find_run_logger(trainer)
        return logger.checkpoint_written if logger is not None else None

    def _install_atomic_io(self, trainer: Trainer) -> None:
        strategy = trainer.strategy
        current = strategy.checkpoint_io
        hook = self._written_hook(trainer)
        if isinstance(current, AsyncCheckpointIO):
            if _wants_atomic(current.checkpoint_io):
                current._checkpoint_io = AtomicCheckpointIO(hook)  # noqa: SLF001 - the setter keeps the first one
            elif isinstance(current.checkpoint_io, AtomicCheckpointIO):
                current.checkpoint_io.on_written = hook
            return
        if _wants_atomic(current):
            current = AtomicCheckpointIO(hook)
        elif isinstance(current, AtomicCheckpointIO):
            current.on_written = hook
        else:
            rank_zero_warn(
                f"StepCheckpoint: the trainer uses its own checkpoint writer {type(current).__name__};"
                " atomic writes are up to it"
            )
        strategy.checkpoint_io = AsyncCheckpointIO(current) if self.async_save else current

    def _remove_stale_temp_files(self) -> None:
        """Temp files left by a process killed mid-save (never valid checkpoints)."""
        folder = Path(str(self.dirpath))
        if not folder.is_dir():
            return
        for path in folder.iterdir():
            name = path.name
            if name.startswith(".") and name.endswith(_TEMP_SUFFIX) and RunLayout.CHECKPOINT_SUFFIX in name:
                try:
                    path.unlink()
                except OSError:
                    pass

    @override
    def format_checkpoint_name(
        self,
        metrics: dict[str, Any],
        filename: str | None = None,
        ver: int | None = None,
        prefix: str | None = None,
    ) -> str:
        if filename == self.CHECKPOINT_NAME_LAST:
            name = RunLayout.LAST_CHECKPOINT
        else:
            trainer = self._trainer_ref()
            step = trainer.global_step if trainer is not None else int(metrics.get("step", 0))
            name = RunLayout.checkpoint_filename(int(step))
        return os.path.join(str(self.dirpath), name) if self.dirpath else name

    @override
    def _find_last_checkpoints(self, trainer: Trainer) -> set[str]:
        """The newest complete step checkpoint (runs before ``setup``, so resolve the folder here).

        Not ``last.ckpt`` itself: after a kill between a save and the link update, or with
        asynchronous saving, the link may lag or dangle; the newest step file never does.
        """
        newest = RunLayout.step_checkpoints_in(Path(self._checkpoints_dir(trainer)))
        return {str(newest[-1][1])} if newest else set()

    def is_due(self, step: int) -> bool:
        """Whether the policy saves at ``step`` (the value of ``trainer.global_step`` after a step)."""
        return step >= max(self.start_step, 1) and (step - self.start_step) % self.every_n_steps == 0

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.is_due(trainer.global_step):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # Step policy only: no extra file at epoch ends (Lightning would only refresh the link).
        return

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        return

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        return

    # -- after a save ------------------------------------------------------------------------------
    @override
    def _save_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        if trainer.is_global_zero and _is_local_file_protocol(filepath):
            # With async saving the writer thread creates the folder later than the last.ckpt link.
            Path(filepath).parent.mkdir(parents=True, exist_ok=True)
        super()._save_checkpoint(trainer, filepath)
        step = RunLayout.checkpoint_step(filepath)
        if step is None:
            return
        _notify(trainer, SAVED_HOOK, step, filepath)
        if self.keep_last is not None:
            self._prune(trainer, step)

    def _prune(self, trainer: Trainer, current: int) -> None:
        folder = Path(str(self.dirpath))
        # With async saving the current file may not be on disk yet: count it anyway.
        known = {step: path for step, path in RunLayout.step_checkpoints_in(folder)}
        known.setdefault(current, folder / RunLayout.checkpoint_filename(current))
        assert self.keep_last is not None
        for step in sorted(known)[: -self.keep_last]:
            path = known[step]
            trainer.strategy.remove_checkpoint(str(path))
            _notify(trainer, REMOVED_HOOK, step, str(path))


def _notify(trainer: Trainer, hook: str, step: int, path: str) -> None:
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        method = getattr(callback, hook, None)
        if callable(method):
            method(trainer, step, path)
