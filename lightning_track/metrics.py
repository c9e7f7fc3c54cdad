"""Reading ``metrics.jsonl`` (the source of truth) and what is derived from it.

A record is ``{"step": 12, "time": 1795323146.64, "metrics": {"train/loss": 0.51, "epoch": 0}}``.
Non-finite values are stored as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` and come
back as floats from :func:`read_metrics`.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .fileio import JsonlProblem, atomic_open, iter_jsonl, restore_nonfinite

__all__ = [
    "MetricRecord",
    "read_metrics",
    "infer_mode",
    "summarize_metrics",
    "write_metrics_csv",
    "metrics_by_step",
]

Mode = Literal["min", "max"]

_MIN_WORDS = re.compile(r"(loss|err|error|perplexity|ppl|mae|mse|rmse|wer|cer|nll|distance|regret)", re.I)
_MAX_WORDS = re.compile(
    r"(acc|accuracy|f1|r2|auc|auroc|precision|recall|bleu|rouge|iou|dice|map|score|reward|return|psnr|ssim)", re.I
)
_FLOAT = {float}
_NO_BEST = re.compile(r"(^|/)(epoch|step|lr|learning_rate|lr-.*|grad_norm.*|time.*|.*_time)$", re.I)


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


def infer_mode(name: str) -> Mode | None:
    """``"min"`` for losses/errors, ``"max"`` for accuracies/scores, None when best means nothing."""
    leaf = name.rsplit("/", 1)[-1]
    if _NO_BEST.search(name) or _NO_BEST.search(leaf):
        return None
    if _MIN_WORDS.search(leaf):
        return "min"
    if _MAX_WORDS.search(leaf):
        return "max"
    if _MIN_WORDS.search(name):
        return "min"
    if _MAX_WORDS.search(name):
        return "max"
    return None


def summarize_metrics(
    records: Iterable[MetricRecord], modes: Mapping[str, Mode | None] | None = None
) -> dict[str, dict[str, Any]]:
    """Final value of every metric and, where a direction is known, the best value and its step.

    ``modes`` overrides the direction inferred from the name (``None`` disables "best").
    Non-finite values are final values when last, but never "best".
    """
    modes = dict(modes or {})  # filled with the inferred direction of each key as it is first seen
    final: dict[str, dict[str, Any]] = {}
    best: dict[str, dict[str, Any]] = {}
    for record in records:
        for key, value in record.metrics.items():
            final[key] = {"value": value, "step": record.step}
            mode = modes[key] if key in modes else modes.setdefault(key, infer_mode(key))
            if mode is None or not math.isfinite(value):
                continue
            current = best.get(key)
            better = current is None or (value < current["value"] if mode == "min" else value > current["value"])
            if better:
                best[key] = {"value": value, "step": record.step, "mode": mode}
    return {"final": final, "best": best}


def metrics_by_step(records: Iterable[MetricRecord]) -> dict[int, dict[str, float]]:
    """One merged row per step (later values of a key at the same step win)."""
    rows: dict[int, dict[str, float]] = {}
    for record in records:
        rows.setdefault(record.step, {}).update(record.metrics)
    return dict(sorted(rows.items()))


def write_metrics_csv(records: Iterable[MetricRecord], path: str | Path) -> int:
    """Write the wide table (one row per step, one column per metric) atomically; returns rows."""
    rows = metrics_by_step(records)
    columns = sorted({key for row in rows.values() for key in row})
    with atomic_open(path, "w") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["step", *columns])
        # repr of a float is its shortest round-trip text, and "nan", "inf", "-inf" for the others.
        writer.writerows([step, *["" if (value := row.get(col)) is None else repr(value) for col in columns]]
                         for step, row in rows.items())
    return len(rows)
