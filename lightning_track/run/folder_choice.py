"""Which run folder a RunLogger writes to, and how every rank comes to hold the same one.

Rank 0 decides (a new folder, the resumed one, or the one a launcher named); the other ranks take its
answer through one broadcast the first time the folder is asked for under a process group, which
Lightning does on every rank at the same point of ``fit``. See :mod:`lightning_track.run.distributed`.
A mixin of :class:`~lightning_track.run.logger.RunLogger`, kept apart because it is one concern with
its own rules (nothing is created before the folder is asked for; an empty folder made a moment ago
may be given up for the run a checkpoint belongs to).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from ..errors import one_line
from ..folder.layout import RunLayout
from ..folder.signals import tell_launcher
from ..vocabulary import ENV_RUN_DIR
from .distributed import broadcast_from_rank0, group_size
from .lifecycle import RunLifecycle
from .progress import ProgressClock

__all__ = ["RunFolderChoice"]


class RunFolderChoice:
    """The folder-deciding half of RunLogger (its attributes are set by ``RunLogger.__init__``)."""

    dataset: str
    method: str
    _root: Path
    _resume: bool | str | os.PathLike[str]
    _rank: int
    _layout: RunLayout | None
    _agreed: bool
    _created_here: bool
    _run: RunLifecycle | None
    _ckpt_seen: str | None

    def _rank_zero(self) -> bool:  # RunLogger's (it resolves a spawned worker's rank lazily)
        raise NotImplementedError

    def _register_exit_hook(self) -> None:  # RunLogger's
        raise NotImplementedError

    # -- where the run lives -------------------------------------------------------------------
    def _resolve(self) -> RunLayout:
        """The folder, decided once; see the module docstring for how ranks agree on it."""
        if self._agreed and self._layout is not None:
            return self._layout
        explicit = os.environ.get(ENV_RUN_DIR)
        if explicit:  # a launcher named the folder for every rank: nothing to agree on
            self._set_layout(RunLayout(explicit), agreed=True, create=True)
            return self._layout  # type: ignore[return-value]
        world, rank = group_size()
        if world > 1:  # a process group is up: rank 0 decides, every rank takes its answer
            mine = str(self._decide().run_dir) if rank == 0 else None
            self._set_layout(RunLayout(broadcast_from_rank0(mine)), agreed=True)
            return self._layout  # type: ignore[return-value]
        if self._rank > 0:
            # Started independently (torchrun, srun) and asked before the process group is up: a
            # provisional path, never written; the broadcast replaces it.
            if self._layout is None:
                self._layout = (RunLayout.resolve_resume(self._root, self.dataset, self.method, self._resume)
                                if self._resume else
                                RunLayout(self._root / RunLayout.run_name(self.dataset, self.method, "pending")))
            return self._layout
        self._set_layout(self._decide(), agreed=False)
        return self._layout  # type: ignore[return-value]

    def _decide(self) -> RunLayout:
        """Rank 0's folder: the one it already has, the resumed one, or a new one."""
        if self._layout is not None and self._rank == 0:
            return self._layout
        if self._resume:
            return RunLayout.resolve_resume(self._root, self.dataset, self.method, self._resume)
        try:
            layout = RunLayout.create(self._root, self.dataset, self.method)
        except OSError as exc:
            raise OSError(f"cannot create a run folder under {self._root}: {one_line(exc)}") from None
        self._created_here = True
        return layout

    def _set_layout(self, layout: RunLayout, *, agreed: bool, create: bool = False) -> None:
        if self._rank == 0 and create:
            layout.run_dir.mkdir(parents=True, exist_ok=True)
        changed = self._layout is None or self._layout.run_dir != layout.run_dir
        self._layout, self._agreed = layout, agreed or self._agreed
        if self._rank == 0 and changed:
            tell_launcher(layout.run_dir)
        if self._rank == 0 and (self._run is None or self._run.layout.run_dir != layout.run_dir):
            self._run = RunLifecycle(
                layout, self.dataset, self.method, config=self._config, sink_specs=self._sink_specs,
                resume=bool(self._resume), allow_rewind=self.allow_rewind, metric_modes=self.metric_modes,
                flush_interval=self.flush_interval, heartbeat_interval=self.heartbeat_interval,
                sink_process=self.sink_process, tags=self.tags, notes=self.notes, console=self.console,
                system_interval=self.system_interval, sink_options={"swanlab": {"mode": self.swanlab_mode}},
                progress=ProgressClock(self._progress_step, self.stall_factor, self.stall_floor))
            self._register_exit_hook()

    @property
    def layout(self) -> RunLayout:
        """The run's :class:`RunLayout` (deciding the folder if it is not decided yet)."""
        return self._resolve()

    @property
    def run_dir(self) -> Path:
        """The run folder (the same path on every rank once training has started)."""
        return self._resolve().run_dir

    @property
    def run_name(self) -> str:
        return self.run_dir.name

    def continue_from_checkpoint(self, ckpt_path: str | os.PathLike[str] | None, trainer: Any = None) -> bool:
        """``trainer.fit(ckpt_path=...)`` names a checkpoint inside a run of this logger's root with
        the same dataset and method: continue that run, as ``resume=`` would, with every checkpoint
        callback of ``trainer`` that took its folder from this logger. Called (once per checkpoint)
        by StepCheckpoint when the checkpoint loads, else by ``log_graph`` at the start of fit, while
        this logger's own folder is still empty. True when the logger switched folders."""
        if not ckpt_path or self._resume or str(ckpt_path) == self._ckpt_seen:
            return False
        self._ckpt_seen = str(ckpt_path)
        target = RunLayout.run_of_checkpoint(ckpt_path, self._root, self.dataset, self.method)
        current = self._layout
        if target is None:
            if current is not None and self._rank_zero() and Path(ckpt_path).exists():
                print(f"lightning_track: {ckpt_path} is not in a run of {self.dataset}/{self.method} under "
                      f"{self._root}: started the new run {current.name}; to continue that run instead, "
                      "pass RunLogger(resume=<its folder>)", file=sys.stderr)
            return False
        if current is not None and current.run_dir.resolve() == target.run_dir.resolve():
            return False
        if current is not None and self._created_here and self._rank_zero():
            try:
                current.run_dir.rmdir()  # made by this process a moment ago and still empty
            except OSError:
                return False  # something was written there already: keep it, and the new run
        self._resume = str(target.run_dir)
        self._created_here = False
        self._run = None
        self._set_layout(target, agreed=True)
        if current is not None and trainer is not None:
            for callback in getattr(trainer, "checkpoint_callbacks", []):
                dirpath = getattr(callback, "dirpath", None)
                if dirpath and Path(dirpath).resolve() == current.checkpoints_dir.resolve():
                    callback.dirpath = str(target.checkpoints_dir)
        return True

