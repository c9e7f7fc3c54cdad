"""``metrics.jsonl`` records: the run's source of truth, and how to read them back.

A record is ``{"step": 12, "time": 1795323146.64, "metrics": {"train/loss": 0.51, "epoch": 0}}``.
Non-finite values are stored as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` and come
back as floats from :func:`read_metrics`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..errors import JsonlProblem
from .fileio import iter_jsonl, restore_nonfinite

__all__ = ["MetricRecord", "read_metrics", "read_metrics_since", "flatten", "record_step"]

_FLOAT = {float}


@dataclass
class MetricRecord:
    step: int
    time: float
    metrics: dict[str, float] = field(default_factory=dict)


def record_step(step: int | None = None, *, global_step: int | None = None, lightning_step: int | None = None,
                stepped: bool = True, last_step: int | None = None) -> int:
    """Which step names a value, a batch-tracking line or a media item: the README's step convention.

    A batch is named by ``trainer.global_step`` after its optimizer step; a batch that has not stepped
    (in flight before its optimizer step, or failed there) by the step it would make. A step the caller
    chose (a ``step`` metric, an explicit argument) is kept; a step Lightning chose is replaced by the
    batch's. Why Lightning's own number is not kept: it hands loggers
    ``fit_loop.epoch_loop._batches_that_stepped`` (``lightning_step``), one less than ``global_step``
    for training values and equal to it for validation.

    ``step``: the step given with the value (None: the current batch's); ``global_step``: the
    Trainer's (None: no Trainer known); ``stepped``: False while the current training batch has not
    made its optimizer step; ``last_step``: the run's latest step, for a value without step or Trainer.
    """
    if step is not None and (global_step is None or step != lightning_step):
        return step
    if global_step is None:
        return last_step if last_step is not None else 0
    if not stepped and (step is None or step == global_step):
        return global_step + 1
    return global_step


def _record(obj: dict[str, Any]) -> MetricRecord:
    step = int(obj["step"])
    values = obj.get("metrics", {})
    if not (type(values) is dict and _FLOAT.issuperset(map(type, values.values()))):  # else: the usual case
        values = {str(k): float(restore_nonfinite(v)) for k, v in dict(values).items()}
    return MetricRecord(step, float(obj.get("time", 0.0)), values)


def read_metrics(path: str | Path, problems: list[JsonlProblem] | None = None) -> list[MetricRecord]:
    """All records of a ``metrics.jsonl``; bad lines go to ``problems`` (or raise without it)."""
    records = []
    for lineno, obj in iter_jsonl(path, problems):
        try:
            records.append(_record(obj))
        except (KeyError, TypeError, ValueError) as exc:
            problem = JsonlProblem(Path(path), lineno, f"not a metrics record ({exc})")
            if problems is None:
                raise problem from None
            problems.append(problem)
    return records


def read_metrics_since(path: str | Path, offset: int, problems: list[JsonlProblem], limit: int | None = None,
                       ends: list[int] | None = None) -> tuple[list[MetricRecord], int]:
    """The records of the whole lines from byte ``offset`` on (at most ``limit`` bytes of them), and the
    offset after the last whole line read. Why: an incremental reader (``lt export``) resumes where it
    stopped, and a run still being written may end in half a line, which is left for the next read.
    Bad lines go to ``problems`` (numbered from ``offset``'s line) and are passed over. ``ends`` gets the
    offset after each record's line, so a reader can say exactly how far it got.
    ``system.jsonl`` lines have the same ``step``/``time``/``metrics`` shape and read the same way."""
    path = Path(path)
    with open(path, "rb") as handle:
        handle.seek(offset)
        body = handle.read() if limit is None else handle.read(limit)
    end = body.rfind(b"\n") + 1
    records: list[MetricRecord] = []
    position = offset
    for lineno, raw in enumerate(body[:end].split(b"\n")[:-1], 1):
        position += len(raw) + 1
        if not raw.strip():
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            try:  # e.g. a legacy bare NaN: the stdlib reads it
                obj = json.loads(raw.decode("utf-8"))
            except ValueError:
                obj = None
        try:
            records.append(_record(obj))
            if ends is not None:
                ends.append(position)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            reason = "invalid JSON" if obj is None else f"not a metrics record ({exc})"
            where = f" (line {lineno} after byte {offset})" if offset else ""
            problems.append(JsonlProblem(path, lineno, f"{reason}{where}; skipped"))
    return records, offset + end


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
