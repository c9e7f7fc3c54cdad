"""Helpers of the health tests: an in-process fit with a guard, and the env for child processes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning_track.training.toy import ToyRegression, regression_data

from .processes import script_env

SCRIPT = Path(__file__).resolve().parents[1] / "health" / "health_train_script.py"


def fit(root: Path, guard: Any, *, max_steps: int = 20, run_logger: bool = True, **module_kwargs: Any) -> Any:
    """A real CPU fit of ToyModule with ``guard``; returns the trainer (raises what fit raises)."""
    import lightning as L

    from lightning_track import RunLogger

    logger = RunLogger("toy", "health", root=root, sinks=()) if run_logger else False
    trainer = L.Trainer(
        max_steps=max_steps,
        logger=logger,
        callbacks=[guard],
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        default_root_dir=root / "plain",
        accumulate_grad_batches=module_kwargs.pop("accumulate_grad_batches", 1),
    )
    try:
        trainer.fit(ToyRegression(**module_kwargs), regression_data())
    finally:
        from support.trainers import wait_for_run_files

        wait_for_run_files(trainer)  # the viewers' files and the plot are finished after fit returns
    return trainer


subprocess_env = script_env  # the health tests' name for it
