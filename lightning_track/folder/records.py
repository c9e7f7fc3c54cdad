"""``metrics.jsonl`` records: the run's source of truth, and how to read them back.

A record is ``{"step": 12, "time": 1795323146.64, "metrics": {"train/loss": 0.51, "epoch": 0}}``.
Non-finite values are stored as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` and come
back as floats from :func:`read_metrics`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import JsonlProblem
from .fileio import iter_jsonl, restore_nonfinite

__all__ = ["MetricRecord", "read_metrics", "flatten"]

_FLOAT = {float}


@dataclass
class MetricRecord:
    step: int
    time: float
    metrics: dict[str, float] = field(default_factory=dict)


def read_metrics(path: str | Path, problems: list[JsonlProblem] | None = None) -> list[MetricRecord]:
    """All records of a ``metrics.jsonl``; bad lines go to ``problems`` (or raise without it)."""
    records = []
    for lineno, obj in iter_jsonl(path, problems):
        try:
            step = int(obj["step"])
            values = obj.get("metrics", {})
            if not (type(values) is dict and _FLOAT.issuperset(map(type, values.values()))):  # else: the usual case
                values = {str(k): float(restore_nonfinite(v)) for k, v in dict(values).items()}
            records.append(MetricRecord(step, float(obj.get("time", 0.0)), values))
        except (KeyError, TypeError, ValueError) as exc:
            problem = JsonlProblem(Path(path), lineno, f"not a metrics record ({exc})")
            if problems is None:
                raise problem from None
            problems.append(problem)
    return records


def flatten(tree: Any, prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """``{"model": {"lr": 0.1}}`` -> ``{"model.lr": 0.1}``: the one way a nested config key is named
    (``lt ls --filter model.lr<...``, a resume's config changes; ``sep="/"`` for TensorBoard's HParams).
    Lists and empty mappings stay values."""
    flat: dict[str, Any] = {}
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            name = f"{prefix}{key}"
            if isinstance(value, Mapping) and value:
                flat.update(flatten(value, name + sep, sep))
            else:
                flat[name] = value
    return flat
