"""``lt export``: run folders into a shared tracker (MLflow, W&B offline), exactly once and incrementally.

The run folder stays the truth; the export record in it (:mod:`.record`) says what the tracker holds,
so exporting again sends only what is new, and two exports of one run never interleave (a lock on the
run folder). One module per tracker (:mod:`.mlflow`, :mod:`.wandb`); :mod:`.exporting` picks it from ``--to`` and does
what every tracker shares: resolve the run, hold the lock, read and save the record. Torch-free; the
tracker's own library is imported only when an export starts.
"""

from __future__ import annotations

from typing import Any

from .target import SUPPORTED, Target, parse_target, wandb_target

__all__ = ["ExportResult", "export_run", "open_exporter", "parse_target", "wandb_target", "Target", "SUPPORTED"]

_EXPORTING = frozenset({"ExportResult", "export_run", "open_exporter"})


def __getattr__(name: str) -> Any:
    """The exporting machinery (:mod:`.exporting`: the run reader, the catalog's rows) on first use, so a
    training process whose RunLogger names an ``mlflow`` sink imports only the target's parser (every module
    imported there is long-lived garbage-collector work beside training)."""
    if name in _EXPORTING:
        from . import exporting

        return getattr(exporting, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
