"""Rank helpers and the one rule that matters: every rank agrees on rank 0's run folder.

How the folder is shared (rank 0 decides, once):
* Any process group of more than one rank (Lightning's own DDP launcher, ``torchrun``, ``srun``):
  the first time the folder is asked for while the group is up, rank 0 decides it and broadcasts it
  (``broadcast_object_list``). Lightning asks on every rank at the same point of ``fit`` setup, so
  the collective always pairs. Nothing is handed over through the environment: a process that
  inherits a parent's environment never adopts a folder its own ranks did not agree on.
* ``ddp_spawn``: the logger is pickled into the workers with the folder already decided.
* ``LIGHTNING_TRACK_RUN_DIR`` set by a launcher script for every rank names the folder outright
  (multi-node without a shared process group before fit).
"""

from __future__ import annotations

import atexit
import functools
import os
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

__all__ = ["global_rank", "group_size", "broadcast_from_rank0", "destroy_process_group_at_exit", "rank_zero_method"]

_P = ParamSpec("_P")


class _KnowsItsRank(Protocol):
    def _rank_zero(self) -> bool: ...


_Self = TypeVar("_Self", bound=_KnowsItsRank)


def rank_zero_method(method: Callable[Concatenate[_Self, _P], None]) -> Callable[Concatenate[_Self, _P], None]:
    """A method that writes the run, called on rank 0 only; on any other rank it does nothing.

    Lightning's ``@rank_zero_only``, but asked of the object at each call (``self._rank_zero()``): a
    ``ddp_spawn`` worker learns its rank only after the logger was unpickled into it.
    """

    @functools.wraps(method)
    def on_rank_zero(self: _Self, *args: _P.args, **kwargs: _P.kwargs) -> None:
        if self._rank_zero():
            method(self, *args, **kwargs)

    return on_rank_zero


def global_rank() -> int:
    """This process's global rank, from the process group or the launcher's environment."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    for key in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if key in os.environ:
            return int(os.environ[key])
    # Lightning's subprocess launcher gives its workers LOCAL_RANK and NODE_RANK only.
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    node = int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", "0")) or 0)
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "0") or 0) or max(local + 1, 1)
    return node * per_node + local


def group_size() -> tuple[int, int]:
    """``(world size, rank)`` of the default process group, or ``(1, 0)`` while none is up."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch is a dependency
        return 1, 0
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def broadcast_from_rank0(value: Any) -> Any:
    """rank 0's ``value`` on every rank when a process group is up; ``value`` otherwise."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


_exit_hook_registered = False


def _destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def destroy_process_group_at_exit() -> None:
    """Destroy the default process group when the interpreter exits, before its finalization.

    Why: a rank that ends on an exception (a failed health check, a preemption) otherwise leaves its
    gloo process group to C++ destructors during interpreter finalization, where gloo's threads
    occasionally end the process with ``std::terminate`` (exit -6 instead of 86 or 143: seen once in
    CI). Lightning registers the same hook for NCCL only. Registered once per process.
    """
    global _exit_hook_registered
    if not _exit_hook_registered:
        atexit.register(_destroy_process_group)
        _exit_hook_registered = True
