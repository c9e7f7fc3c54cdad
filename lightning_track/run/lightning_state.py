"""What Lightning's objects say, in the run's terms: pure readings the RunLogger makes of the Trainer.

Kept out of the logger so each reading is one function with one rule: the step a value belongs to (the
README's step convention, :func:`~lightning_track.folder.records.record_step`), the step the heartbeat
reports, a checkpoint's metrics as plain numbers, and what ``finalize``'s word means given the exception
being handled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import one_line
from ..folder.records import record_step
from ..vocabulary import FAILED, INTERRUPTED

__all__ = ["batch_step", "progress_step", "plain_numbers", "saved_checkpoint", "finalize_verdict"]


def batch_step(trainer: Any, step: int | None, last_step: int | None) -> int:
    """The step convention applied to what the Trainer says now. ``step`` None: the current batch's (or,
    without a Trainer, the run's ``last_step``).

    A value logged while a training batch is in flight before its optimizer step (``LearningRateMonitor``
    at ``on_train_batch_start``: the rate that batch trains with) belongs to that batch.
    """
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    if loop is None:
        return record_step(step, last_step=last_step)
    lightning_step = getattr(loop, "_batches_that_stepped", None)
    batches = getattr(getattr(loop, "batch_progress", None), "current", None)
    in_flight = bool(getattr(trainer, "training", False)) and batches is not None \
        and batches.ready > batches.processed
    return record_step(lightning_step if step is None else step, global_step=int(trainer.global_step),
                       lightning_step=lightning_step, stepped=not in_flight)


def progress_step(trainer: Any, last_step: int | None) -> int | None:
    """The training step for the heartbeat's progress: the trainer's ``global_step``, else the last step logged."""
    found = [s for s in (getattr(trainer, "global_step", None), last_step) if isinstance(s, int)]
    return max(found) if found else None


def plain_numbers(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Lightning's metrics at a checkpoint (tensors) as plain numbers, for the checkpoint index."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        try:
            out[str(key)] = float(value.item() if hasattr(value, "item") else value)
        except (TypeError, ValueError, RuntimeError):
            continue
    return out


def saved_checkpoint(callback: Any, trainer: Any) -> dict[str, Any] | None:
    """What a checkpoint callback just saved, for the checkpoint index: ``path``, ``step``, ``epoch``, the
    trainer's ``metrics`` and the ``monitor`` (metric and mode) it ranks checkpoints by; None when nothing."""
    path = getattr(callback, "_last_checkpoint_saved", "") or getattr(callback, "last_model_path", "")
    if not path:
        return None
    step = getattr(callback, "_last_global_step_saved", None)
    monitor = getattr(callback, "monitor", None)
    return {"path": path, "step": step if isinstance(step, int) else None,
            "epoch": getattr(trainer, "current_epoch", None),
            "metrics": plain_numbers(getattr(trainer, "callback_metrics", None) or {}),
            "monitor": {"metric": monitor, "mode": str(getattr(callback, "mode", "min"))}
            if isinstance(monitor, str) else None}


def finalize_verdict(status: str, exc: BaseException | None) -> tuple[str, str | None]:
    """Lightning's finalize word and the exception being handled -> our status and a reason.

    Lightning says "failed" for an interrupt too; the exception tells them apart (Ctrl+C, Lightning's SIGTERM).
    """
    if exc is None or status not in ("failed", FAILED):
        return status, None
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED, "KeyboardInterrupt (SIGINT)"
    if type(exc).__name__ == "SIGTERMException":  # lightning.pytorch.utilities.exceptions
        return INTERRUPTED, "SIGTERM"
    return FAILED, f"{type(exc).__name__}: {one_line(exc)}"
