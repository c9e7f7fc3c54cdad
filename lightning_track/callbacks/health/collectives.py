"""The two collectives HealthGuard needs to make every rank take the same decision at the same step.

Why: a rank that stops alone leaves the others blocked in the next gradient all-reduce. So each
rank's flags are OR-ed across ranks (one small all-reduce), and the failing ranks' records are
gathered so that every rank reports the same root cause. Both are no-ops on one process.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["any_rank", "gather_objects"]


def any_rank(trainer: Any, *flags: bool) -> list[bool]:
    """Each flag OR-ed across ranks in one all-reduce (through the trainer's strategy)."""
    if trainer.world_size <= 1:
        return list(flags)
    tensor = torch.tensor([float(f) for f in flags], device=trainer.strategy.root_device)
    tensor = trainer.strategy.reduce(tensor, reduce_op="sum")
    return [v > 0 for v in tensor.tolist()]


def gather_objects(trainer: Any, obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (``[obj]`` without a process group)."""
    import torch.distributed as dist

    if trainer.world_size <= 1 or not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
