"""Re-exports of the run-folder helpers of :mod:`.targets`, for the modules that import them from here
(the other callbacks, ``lightning_track.training.lightning_cli``); new code imports ``.targets``."""

from __future__ import annotations

from .targets import find_layout, find_run_logger, run_logger_first

__all__ = ["find_layout", "find_run_logger", "run_logger_first"]
