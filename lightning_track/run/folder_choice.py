"""Which run folder a RunLogger writes to, and how every rank comes to hold the same one.

Rank 0 decides (a new folder, the resumed one, or the one a launcher named); the other ranks take its
answer through one broadcast the first time the folder is asked for under a process group, which
Lightning does on every rank at the same point of ``fit``. See :mod:`lightning_track.run.distributed`.
Kept apart from the logger because it is one concern with its own rules (nothing is created before the
folder is asked for; an empty folder made a moment ago may be given up for the run a checkpoint belongs to).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import one_line
from ..folder.layout import RunLayout
from ..folder.signals import tell_launcher
from ..vocabulary import ENV_RUN_DIR
from .distributed import broadcast_from_rank0, group_size

__all__ = ["RunFolderChoice"]


class RunFolderChoice:
    """One RunLogger's folder: decided once, the same on every rank.

    ``on_decided`` is called on rank 0 each time the folder is set (the logger makes the run for it).
    A resume target that does not exist, or a root that cannot hold runs, fails here, before anything
    is written.
    """

    def __init__(self, root: Path, dataset: str, method: str, resume: bool | str | os.PathLike[str], *,
                 rank: int, on_decided: Callable[[RunLayout], None]) -> None:
        self.root, self.dataset, self.method = root, dataset, method
        self.resume = resume  # becomes the run's path when a checkpoint names another run to continue
        self.rank = rank  # -1 in a ddp_spawn worker until Lightning has set its rank (see rank_zero)
        self.on_decided = on_decided
        self.current: RunLayout | None = None  # the folder held so far (provisional until agreed)
        self.agreed = False  # every rank holds the same folder (broadcast, pickle or launcher env)
        self.created_here = False  # this process made the folder (it may remove it while still empty)
        self._ckpt_seen: str | None = None
        if resume:
            self.current = RunLayout.resolve_resume(root, dataset, method, resume)
        elif not os.environ.get(ENV_RUN_DIR):
            RunLayout.check_root(root)

    def rank_zero(self) -> bool:
        """Whether this process writes the run (a spawned worker asks Lightning the first time)."""
        if self.rank < 0:
            from lightning.pytorch.utilities.rank_zero import rank_zero_only

            self.rank = int(getattr(rank_zero_only, "rank", 0))
        return self.rank == 0

    def __getstate__(self) -> dict[str, Any]:
        """Pickled into a ddp_spawn worker, whose rank is not known until Lightning sets it."""
        return {**self.__dict__, "rank": -1}

    def resolve(self) -> RunLayout:
        """The folder, decided once; see the module docstring for how ranks agree on it."""
        if self.agreed and self.current is not None:
            return self.current
        explicit = os.environ.get(ENV_RUN_DIR)
        if explicit:  # a launcher named the folder for every rank: nothing to agree on
            return self._set(RunLayout(explicit), agreed=True, create=True)
        world, rank = group_size()
        if world > 1:  # a process group is up: rank 0 decides, every rank takes its answer
            mine = str(self._decide().run_dir) if rank == 0 else None
            return self._set(RunLayout(broadcast_from_rank0(mine)), agreed=True)
        if self.rank > 0:
            # Started independently (torchrun, srun) and asked before the process group is up: a
            # provisional path, never written; the broadcast replaces it.
            if self.current is None:
                self.current = (RunLayout.resolve_resume(self.root, self.dataset, self.method, self.resume)
                                if self.resume else
                                RunLayout(self.root / RunLayout.run_name(self.dataset, self.method, "pending")))
            return self.current
        return self._set(self._decide(), agreed=False)

    def _decide(self) -> RunLayout:
        """Rank 0's folder: the one it already has, the resumed one, or a new one."""
        if self.current is not None and self.rank == 0:
            return self.current
        if self.resume:
            return RunLayout.resolve_resume(self.root, self.dataset, self.method, self.resume)
        try:
            layout = RunLayout.create(self.root, self.dataset, self.method)
        except OSError as exc:
            raise OSError(f"cannot create a run folder under {self.root}: {one_line(exc)}") from None
        self.created_here = True
        return layout

    def _set(self, layout: RunLayout, *, agreed: bool, create: bool = False) -> RunLayout:
        if self.rank == 0 and create:
            layout.run_dir.mkdir(parents=True, exist_ok=True)
        changed = self.current is None or self.current.run_dir != layout.run_dir
        self.current, self.agreed = layout, agreed or self.agreed
        if self.rank == 0:
            if changed:
                tell_launcher(layout.run_dir)
            self.on_decided(layout)
        return layout

    def continue_from_checkpoint(self, ckpt_path: str | os.PathLike[str] | None, trainer: Any = None) -> bool:
        """``trainer.fit(ckpt_path=...)`` names a checkpoint inside a run of this logger's root with
        the same dataset and method: continue that run, as ``resume=`` would, with every checkpoint
        callback of ``trainer`` that took its folder from this logger. Called (once per checkpoint)
        by StepCheckpoint when the checkpoint loads, else by ``log_graph`` at the start of fit, while
        this logger's own folder is still empty. True when the logger switched folders."""
        if not ckpt_path or self.resume or str(ckpt_path) == self._ckpt_seen:
            return False
        self._ckpt_seen = str(ckpt_path)
        target = RunLayout.run_of_checkpoint(ckpt_path, self.root, self.dataset, self.method)
        current = self.current
        if target is None:
            if current is not None and self.rank_zero() and Path(ckpt_path).exists():
                print(f"lightning_track: {ckpt_path} is not in a run of {self.dataset}/{self.method} under "
                      f"{self.root}: started the new run {current.name}; to continue that run instead, "
                      "pass RunLogger(resume=<its folder>)", file=sys.stderr)
            return False
        if current is not None and current.run_dir.resolve() == target.run_dir.resolve():
            return False
        if current is not None and self.created_here and self.rank_zero():
            try:
                current.run_dir.rmdir()  # made by this process a moment ago and still empty
            except OSError:
                return False  # something was written there already: keep it, and the new run
        self.resume = str(target.run_dir)
        self.created_here = False
        self._set(target, agreed=True)
        if current is not None and trainer is not None:
            for callback in getattr(trainer, "checkpoint_callbacks", []):
                dirpath = getattr(callback, "dirpath", None)
                if dirpath and Path(dirpath).resolve() == current.checkpoints_dir.resolve():
                    callback.dirpath = str(target.checkpoints_dir)
        return True
