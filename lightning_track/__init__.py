"""lightning_track: clean, safe, self-describing run folders for PyTorch Lightning."""

from __future__ import annotations

from .callbacks import BatchTracker, FinalModelExport, StepCheckpoint, TrackedDataset, load_final_model
from .callbacks.health import HEALTH_EXIT_CODE, HealthCheckFailed, HealthGuard
from .layout import RunLayout, sanitize_name
from .logger import RunLogger
from .metrics import read_metrics
from .summary import post_process

__all__ = ["RunLogger", "RunLayout", "sanitize_name", "read_metrics", "post_process", "__version__"]

__all__ += ["StepCheckpoint", "BatchTracker", "TrackedDataset", "FinalModelExport", "load_final_model"]

__all__ += ["HealthGuard", "HealthCheckFailed", "HEALTH_EXIT_CODE"]

__version__ = "0.1.0"
