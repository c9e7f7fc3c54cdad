"""PNG curves with matplotlib: a run's metrics (``plots/metrics.png``, written by ``post_process``) and
several runs overlaid (``lt compare --plot``).

Cheap on purpose, because ``post_process`` runs at the end of every training: one figure with one panel
per metric group (``train/loss`` and ``val/loss`` together), curves downsampled first
(:mod:`.curves`), matplotlib's object API with the Agg canvas (no pyplot, no GUI backend, no global
state). Without matplotlib nothing is drawn and the caller says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..folder.fileio import atomic_open
from .curves import downsample

__all__ = ["PLOTS_DIR", "RUN_PLOT", "plot_panels", "have_matplotlib", "Series"]

PLOTS_DIR = "plots"
RUN_PLOT = "plots/metrics.png"  # relative to the run folder; report_draft.md links it
POINTS = 1000
Series = tuple[str, np.ndarray, np.ndarray]  # (label, steps, values)


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot_panels(panels: Mapping[str, Sequence[Series]], path: str | Path, *, title: str | None = None,
                columns: int = 3, log_y: bool = False) -> Path:
    """One PNG with a panel per entry of ``panels``; each series a line, its min/max band, NaN/inf marks.

    Written atomically (a reader never sees half a PNG).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = {k: v for k, v in panels.items() if v}
    count = max(1, len(panels))
    cols = min(columns, count)
    rows = math.ceil(count / cols)
    fig = Figure(figsize=(4.2 * cols, 2.9 * rows + (0.4 if title else 0)), dpi=90, layout="constrained")
    FigureCanvasAgg(fig)
    if title:
        fig.suptitle(title, fontsize=10)
    for i, (name, series) in enumerate(panels.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(True, linewidth=0.3, alpha=0.5)
        for j, (label, steps, values) in enumerate(series):
            color = f"C{j % 10}"
            curve = downsample(steps, values, POINTS)
            few = len(curve.x) <= 50  # a handful of validation points: show each one
            ax.plot(curve.x, curve.y, color=color, linewidth=1.0, label=label, marker="o" if few else None,
                    markersize=3)
            if curve.lo is not None and curve.hi is not None:
                ax.fill_between(curve.x, curve.lo, curve.hi, color=color, alpha=0.18, linewidth=0)
            if curve.bad:
                xs = [s for s, _ in curve.bad]
                ax.plot(xs, [1.0] * len(xs), linestyle="none", marker="v", color="red", markersize=4,
                        transform=ax.get_xaxis_transform(), clip_on=False,
                        label=f"{label}: NaN/inf ({len(curve.bad)})" if len(series) > 1 else "NaN/inf")
        if log_y:
            ax.set_yscale("log")
        if len(series) > 1 or any(len(v) and not np.isfinite(v).all() for _, _, v in series):
            ax.legend(fontsize=7, loc="best")
        ax.set_xlabel("step", fontsize=7)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png")
    return path
