"""How a callback finds the run folder: the RunLogger's layout, else ``trainer.default_root_dir``.

Callbacks never build run paths themselves. With a RunLogger anywhere in ``trainer.loggers`` they
use its :class:`RunLayout`; with any other logger (or none) they use a layout rooted at
``trainer.default_root_dir`` so every file still lands in one predictable folder.
"""

from __future__ import annotations

from typing import Any

from ..folder.layout import RunLayout
from ..run.logger import RunLogger

__all__ = ["find_layout", "find_run_logger", "run_logger_first"]


def find_run_logger(trainer: Any) -> RunLogger | None:
    """The first RunLogger in ``trainer.loggers`` (any position), or None."""
    for logger in getattr(trainer, "loggers", None) or []:
        if isinstance(logger, RunLogger):
            return logger
    return None


def find_layout(trainer: Any) -> RunLayout:
    """The run layout: the RunLogger's (synced across ranks), else ``trainer.default_root_dir``."""
    logger = find_run_logger(trainer)
    if logger is not None:
        return logger.experiment  # the sync point: the same folder on every rank
    return RunLayout(trainer.default_root_dir)


def run_logger_first(trainer: Any) -> None:
    """Move the RunLogger to the front of ``trainer.loggers``.

    Lightning's ModelCheckpoint (and ``trainer.log_dir``) resolve folders from ``trainer.loggers[0]``;
    putting the RunLogger first keeps checkpoints in the run folder whatever order the user gave.
    """
    loggers = list(getattr(trainer, "loggers", None) or [])
    logger = find_run_logger(trainer)
    if logger is None or loggers[0] is logger:
        return
    loggers.remove(logger)
    trainer.loggers = [logger, *loggers]
