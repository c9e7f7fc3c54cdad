"""The checkpointing tests' Trainer set-up (the toy model and its data: lightning_track.training.toy)."""

from __future__ import annotations

import warnings
from typing import Any

import lightning as L

warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")


def make_trainer(root: Any, **kwargs: Any) -> L.Trainer:
    defaults: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        default_root_dir=str(root),
        num_sanity_val_steps=0,
    )
    defaults.update(kwargs)
    return L.Trainer(**defaults)


def wait_for_run_files(trainer: L.Trainer) -> None:
    """What a RunLogger finishes after ``fit`` returns (the viewers' files, the plot): done before a test reads it."""
    from lightning_track import RunLogger

    for logger in trainer.loggers:
        if isinstance(logger, RunLogger):
            logger.wait()
