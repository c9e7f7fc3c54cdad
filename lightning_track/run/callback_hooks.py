"""What lightning_track's callbacks tell a :class:`~lightning_track.run.logger.RunLogger`, which Lightning's
``Logger`` API has no call for: where training starts (the attempt's decision), checkpoints as they are
written and hashed, the exported model, summary fields (HealthGuard's failure).

Why apart from the logger: Lightning gives a Logger no trainer and no checkpoint contents, so
``StepCheckpoint``, ``FinalModelExport``, ``HealthGuard`` and ``targets`` hand them over through these
methods; the Logger API (:mod:`.logger`) is what Lightning itself calls.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from .distributed import rank_zero_method

if TYPE_CHECKING:
    from .lifecycle import RunLifecycle

__all__ = ["CallbackHooks"]


class CallbackHooks:
    """A base of ``RunLogger``: the calls its callbacks make. Writing ones act on rank 0 only."""

    _run: RunLifecycle | None

    def attach(self, trainer: Any) -> None:  # RunLogger's
        raise NotImplementedError

    def _rank_zero(self) -> bool:  # RunLogger's
        raise NotImplementedError

    def _rank_zero_run(self, reopen: bool = True) -> RunLifecycle:  # RunLogger's
        raise NotImplementedError

    def training_starts(self, step: int, trainer: Any = None) -> None:
        """Training (re)starts at ``step`` (``trainer.global_step`` at ``on_train_start``).

        On a resume this decides the attempt: a restart before the run's last checkpoint is refused
        with :class:`~lightning_track.errors.ResumeError` before anything is written.
        """
        if trainer is not None:
            self.attach(trainer)
        self._start_at(step)

    @rank_zero_method
    def _start_at(self, step: int) -> None:
        run = self._rank_zero_run()
        if not run.started:
            run.start(from_step=step)

    def checkpoint_written(self, path: str | os.PathLike[str], sha256: str, size: int) -> None:
        """``StepCheckpoint``'s writer hashed a file as it wrote it (any thread): the index takes that hash."""
        if self._run is not None:
            self._run.lineage.written(path, sha256, size)

    @rank_zero_method
    def model_exported(self, folder: str | os.PathLike[str], step: int | None) -> None:
        """A model was exported (``FinalModelExport``): recorded with its hashes in ``checkpoints.json``."""
        if self._run is not None and self._run.started:
            self._run.model_exported(folder, step)

    @rank_zero_method
    def before_checkpoint(self) -> None:
        """Make every record logged so far durable, before a checkpoint that a resume would start
        from lands on disk (so no step between the last flush and the checkpoint is ever lost)."""
        if self._run is not None and self._run.active:
            self._run.make_durable()

    @rank_zero_method
    def update_summary(self, **fields: Any) -> None:
        """Merge ``fields`` into ``summary.json`` (rank 0; a no-op elsewhere).

        Goes through the same lock as the heartbeat, so callbacks (HealthGuard recording a failure)
        never race the writer thread's rewrites of the file.
        """
        self._rank_zero_run(reopen=False).update_summary(**fields)
