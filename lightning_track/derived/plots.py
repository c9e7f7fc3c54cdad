"""PNG curves with matplotlib: a run's metrics (``plots/metrics.png``, written by ``post_process``) and
several runs overlaid (``lt compare --plot``).

Cheap on purpose, because ``post_process`` runs at the end of every training: one figure with one panel
per metric group (``train/loss`` and ``val/loss`` together), curves downsampled first
(:mod:`.curves`), matplotlib's object API with the Agg canvas (no pyplot, no GUI backend, no global
state). Without matplotlib nothing is drawn and the caller says so.

At finalize the drawing runs on a background thread (:func:`draw_later`): matplotlib's import and
draw take 0.2-0.5 s, which ``fit()`` would otherwise spend before returning. The thread is not a
daemon, so the interpreter's exit waits for it; :func:`wait_for_plots` (``RunLogger.wait()``) waits
for it on request.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..folder.fileio import atomic_open
from ..folder.layout import RunLayout

__all__ = ["plot_panels", "have_matplotlib", "Series", "run_panels", "write_run_plots", "draw_later",
           "wait_for_plots"]

POINTS = 600
MAX_PANELS = 12
Series = tuple[str, Any, Any]  # (label, steps, values as numpy arrays); numpy is imported when drawing


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _plain(text: str) -> str:
    """A metric or run name as matplotlib should print it: ``$`` is a dollar, never mathtext."""
    return text.replace("$", r"\$")


def plot_panels(panels: Mapping[str, Sequence[Series]], path: str | Path, *, title: str | None = None,
                columns: int = 3, log_y: bool = False) -> Path:
    """One PNG with a panel per entry of ``panels``; each series a line, its min/max band, NaN/inf marks.

    Written atomically (a reader never sees half a PNG).
    """
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .curves import downsample

    panels = {k: v for k, v in panels.items() if v}
    count = max(1, len(panels))
    cols = min(columns, count)
    rows = math.ceil(count / cols)
    # Fixed margins in inches, not a layout engine: "constrained" draws the figure twice (~1 s for 10 panels).
    width, height = 4.2 * cols, 2.9 * rows + (0.4 if title else 0.1)
    fig = Figure(figsize=(width, height), dpi=90)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.55 / width * cols / cols, right=1 - 0.15 / width, bottom=0.5 / height,
                        top=1 - (0.65 if title else 0.35) / height, wspace=0.55 / 4.2 * 1.6, hspace=0.75 / 2.9 * 1.6)
    if title:
        fig.suptitle(_plain(title), fontsize=10)
    for i, (name, series) in enumerate(panels.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.set_title(_plain(name), fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(True, linewidth=0.3, alpha=0.5)
        for j, (label, steps, values) in enumerate(series):
            color = f"C{j % 10}"
            curve = downsample(steps, values, POINTS)
            few = len(curve.x) <= 50  # a handful of validation points: show each one
            ax.plot(curve.x, curve.y, color=color, linewidth=1.0, label=_plain(label), marker="o" if few else None,
                    markersize=3)
            if curve.lo is not None and curve.hi is not None:
                ax.fill_between(curve.x, curve.lo, curve.hi, color=color, alpha=0.18, linewidth=0)
            if curve.bad:
                xs = [s for s, _ in curve.bad]
                ax.plot(xs, [1.0] * len(xs), linestyle="none", marker="v", color="red", markersize=4,
                        transform=ax.get_xaxis_transform(), clip_on=False,
                        label=f"{_plain(label)}: NaN/inf ({len(curve.bad)})" if len(series) > 1 else "NaN/inf")
        if log_y:
            ax.set_yscale("log")
        if len(series) > 1 or any(len(v) and not np.isfinite(v).all() for _, _, v in series):
            ax.legend(fontsize=7, loc="upper right")
        ax.set_xlabel("step", fontsize=7)
    path = Path(path)
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png")
    return path


def run_panels(records: Sequence[object]) -> dict[str, list[Series]]:
    """A run's metrics as panels: ``train/loss`` and ``val/loss`` share a ``loss`` panel (:func:`group_metrics`)."""
    import numpy as np

    from .curves import group_metrics
    columns: dict[str, tuple[list[int], list[float]]] = {}
    for record in records:
        step = record.step  # type: ignore[attr-defined]
        for key, value in record.metrics.items():  # type: ignore[attr-defined]
            steps, values = columns.setdefault(key, ([], []))
            steps.append(step)
            values.append(value)
    panels: dict[str, list[Series]] = {}
    for title, keys in group_metrics(list(columns)).items():
        panels[title] = [(key.partition("/")[0] if len(keys) > 1 else key, np.asarray(columns[key][0]),
                          np.asarray(columns[key][1], dtype=np.float64)) for key in keys]
    return panels


def write_run_plots(run_dir: str | Path, records: Sequence[object]) -> Path | None:
    """``plots/metrics.png`` of a run (None when there is nothing to draw or no matplotlib)."""
    panels = dict(list(run_panels(records).items())[:MAX_PANELS])  # a run of 100 metrics: the first ones
    if not panels or not have_matplotlib():
        return None
    (Path(run_dir) / RunLayout.RUN_PLOT).parent.mkdir(exist_ok=True)
    return plot_panels(panels, Path(run_dir) / RunLayout.RUN_PLOT, title=Path(run_dir).name)


_pending: dict[Path, threading.Thread] = {}  # run folder -> the thread drawing its plot
_pending_lock = threading.Lock()


def draw_later(run_dir: str | Path, job: Callable[[], None]) -> None:
    """Run ``job`` (a run's plot and what links it) on a background thread, one at a time per run.

    At interpreter exit (an atexit hook finalizing a run) no thread would be waited for: then the
    job runs here, before returning.
    """
    key = Path(run_dir).absolute()
    wait_for_plots(key)
    if not threading.main_thread().is_alive():  # the interpreter is shutting down
        job()
        return
    thread = threading.Thread(target=job, name="lightning_track-plot", daemon=False)
    with _pending_lock:
        _pending[key] = thread
    thread.start()


def wait_for_plots(run_dir: str | Path | None = None, timeout: float | None = None) -> bool:
    """Wait until the plot of ``run_dir`` (every run when None) is drawn; False on timeout."""
    with _pending_lock:
        if run_dir is None:
            threads = list(_pending.items())
        else:
            key = Path(run_dir).absolute()
            threads = [(key, _pending[key])] if key in _pending else []
    for key, thread in threads:
        if thread is not threading.current_thread():
            thread.join(timeout)
        if thread.is_alive():
            return False
        with _pending_lock:
            if _pending.get(key) is thread:
                del _pending[key]
    return True
