"""Curves for display: downsampling that keeps spikes and non-finite values visible. Pure numpy.

Why not every k-th point: a loss spike or a NaN one step long vanishes from a decimated curve, and
those are what a person looks for. Each bucket of consecutive records keeps its mean (the line), its
minimum and maximum (drawn as a band, so a one-step spike still reaches its height), and the steps of
non-finite values are kept apart as markers (capped per curve, the first of each bucket).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Curve", "downsample", "group_metrics"]


@dataclass
class Curve:
    """A downsampled series: ``x`` (a bucket's first step), ``y`` (mean of its finite values, NaN where it
    has none), ``lo``/``hi`` (its extremes; None when every bucket is one record), ``bad`` (steps of NaN,
    +inf, -inf values as ``(step, "nan"|"inf"|"-inf")``) and how many records it stands for."""

    x: np.ndarray
    y: np.ndarray
    lo: np.ndarray | None
    hi: np.ndarray | None
    bad: list[tuple[int, str]]
    records: int


def _bad_markers(steps: np.ndarray, values: np.ndarray, limit: int) -> list[tuple[int, str]]:
    where = np.flatnonzero(~np.isfinite(values))
    if len(where) > limit:  # first of each of ``limit`` buckets
        where = where[np.unique(np.linspace(0, len(where) - 1, limit).astype(np.int64))]
    kinds = np.where(np.isnan(values[where]), "nan", np.where(values[where] > 0, "inf", "-inf"))
    return [(int(s), str(k)) for s, k in zip(steps[where].tolist(), kinds.tolist(), strict=True)]


def downsample(steps: np.ndarray, values: np.ndarray, points: int = 400, bad_limit: int = 200) -> Curve:
    """At most ``points`` buckets of consecutive records (all records when there are fewer)."""
    steps = np.asarray(steps, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    bad = _bad_markers(steps, values, bad_limit)
    if n <= points:
        y = np.where(np.isfinite(values), values, np.nan)
        return Curve(steps, y, None, None, bad, n)
    starts = np.unique(np.linspace(0, n, points + 1).astype(np.int64)[:-1])
    finite = np.isfinite(values)
    counts = np.add.reduceat(finite.astype(np.int64), starts)
    sums = np.add.reduceat(np.where(finite, values, 0.0), starts)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    lo = np.minimum.reduceat(np.where(finite, values, np.inf), starts)
    hi = np.maximum.reduceat(np.where(finite, values, -np.inf), starts)
    lo = np.where(counts > 0, lo, np.nan)
    hi = np.where(counts > 0, hi, np.nan)
    return Curve(steps[starts], mean, lo, hi, bad, n)


_SKIP = frozenset({"epoch", "step", "global_step"})


def group_metrics(keys: list[str]) -> dict[str, list[str]]:
    """Metrics drawn together: ``train/loss`` and ``val/loss`` share a ``loss`` panel; ``epoch`` is left out."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        if key in _SKIP:
            continue
        stage, _, name = key.partition("/")
        title = name if name and stage.lower() in ("train", "val", "valid", "validation", "test", "eval") else key
        groups.setdefault(title, []).append(key)
    return groups
