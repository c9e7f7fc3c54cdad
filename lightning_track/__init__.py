"""lightning_track: clean, safe, self-describing run folders for PyTorch Lightning.

Names are imported lazily (PEP 562) so that tools which need no torch (``lt-sync``, reading a run
folder) start in a fraction of a second instead of paying Lightning's import time.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import _moved

__version__ = "0.1.0"

_moved.install()  # old module paths (lightning_track.layout, .logger, ...) keep working for one release

_EXPORTS = {
    "RunLogger": ".run.logger",
    "RunLayout": ".folder.layout",
    "sanitize_name": ".folder.layout",
    "read_metrics": ".folder.records",
    "post_process": ".derived.summary",
    "StepCheckpoint": ".callbacks.step_checkpoint",
    "BatchTracker": ".callbacks.batch_tracking",
    "TrackedDataset": ".callbacks.batch_tracking",
    "FinalModelExport": ".callbacks.final_model",
    "load_final_model": ".callbacks.final_model",
    "HealthGuard": ".callbacks.health",
    "HealthCheckFailed": ".callbacks.health",
    "HEALTH_EXIT_CODE": ".callbacks.health",
    "PreemptionHandler": ".callbacks.preemption",
    "from_config": ".training.configure",
    "load_runs": ".query.frames",
    "load_history": ".query.history",
}

__all__ = [
    "RunLogger", "RunLayout", "sanitize_name", "read_metrics", "post_process", "StepCheckpoint", "BatchTracker",
    "TrackedDataset", "FinalModelExport", "load_final_model", "HealthGuard", "HealthCheckFailed", "HEALTH_EXIT_CODE",
    "PreemptionHandler", "from_config", "load_runs", "load_history", "__version__",
]

if TYPE_CHECKING:
    from .callbacks.batch_tracking import BatchTracker, TrackedDataset
    from .callbacks.final_model import FinalModelExport, load_final_model
    from .callbacks.health import HEALTH_EXIT_CODE, HealthCheckFailed, HealthGuard
    from .callbacks.preemption import PreemptionHandler
    from .callbacks.step_checkpoint import StepCheckpoint
    from .derived.summary import post_process
    from .folder.layout import RunLayout, sanitize_name
    from .folder.records import read_metrics
    from .query.frames import load_runs
    from .query.history import load_history
    from .run.logger import RunLogger
    from .training.configure import from_config


assert set(__all__) == {*_EXPORTS, "__version__"}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lightning_track' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
