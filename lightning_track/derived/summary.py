"""``summary.json`` (status, timing, final and best metrics) and the post-processing that
RunLogger runs at finalize and ``lt-run --post-process`` runs on any run folder."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import JsonlProblem, RunFolderError, RunNotFound, one_line
from ..folder.fileio import atomic_write_json, atomic_write_text, read_json
from ..folder.gcpause import collector_paused
from ..folder.layout import RunLayout
from ..folder.records import read_metrics
from ..vocabulary import RUNNING, iso_time
from .digest import MetricsDigest, Mode, summarize_metrics, write_metrics_csv
from .report import render_report
from .system import system_summary

__all__ = ["SummaryFile", "post_process", "attempts_of", "attempt_training_time"]


class SummaryFile:
    """Thread-safe read-modify-write of ``summary.json``, always replaced atomically."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:  # a lock does not pickle (ddp_spawn hands the run over)
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])  # type: ignore[misc]

    def read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        data = read_json(self.path)
        if not isinstance(data, dict):
            raise RunFolderError(f"{self.path}: expected a JSON object")
        return data

    def replace(self, data: dict[str, Any]) -> None:
        """Write ``data`` as the whole summary."""
        with self._lock:
            atomic_write_json(self.path, data)

    def modify(self, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Read, let ``change`` edit the dict in place, write back: one step under the lock."""
        with self._lock:
            data = self.read()
            change(data)
            atomic_write_json(self.path, data)
            return data

    def update(self, **fields: Any) -> dict[str, Any]:
        """Merge ``fields`` into the summary (one read-modify-write under the lock)."""
        return self.modify(lambda data: data.update(fields))


def post_process(
    run_dir: str | Path,
    *,
    status: str | None = None,
    metric_modes: Mapping[str, Mode | None] | None = None,
    extra: Mapping[str, Any] | None = None,
    metrics: MetricsDigest | None = None,
    plots: bool | None = None,
    plots_later: bool = False,
) -> dict[str, Any]:
    """Rebuild ``metrics.csv``, refresh ``summary.json`` and write ``report_draft.md`` from the files.

    Everything is derived from ``metrics.jsonl`` and ``config.yaml``; running it twice gives the
    same result. Returns the summary.

    ``metrics``: a :class:`MetricsDigest` fed every record of ``metrics.jsonl`` as it was written
    (lt-migrate): the same result without reading the file again. An incomplete one is ignored.

    ``plots``: draw ``plots/metrics.png`` (linked from the report); by default when the records were
    read here (not with ``metrics``: lt-migrate's thousands of runs skip the drawing) and matplotlib
    is installed. A plot that cannot be drawn is recorded as ``plots_error``, never fatal.
    ``plots_later``: draw it on a background thread that then links it from the report (finalize:
    ``fit()`` returns without waiting for matplotlib; see :func:`.plots.wait_for_plots`).
    """
    from .plots import wait_for_plots

    layout = RunLayout(run_dir)
    wait_for_plots(layout.run_dir)  # a plot still being drawn for this run finishes first
    if not layout.run_dir.is_dir():
        raise RunNotFound(f"{layout.run_dir}: not a run folder (no such folder)")
    problems: list[JsonlProblem] = []
    csv_error: OSError | None = None  # a full disk: summary.json (small) is still written, then this raised
    plots_error: str | None = None
    draw: list[Any] | None = None  # the records to draw, once the summary and the report are written
    steps: int | None = None
    if metrics is not None and metrics.complete:
        try:
            steps = metrics.write_csv(layout.metrics_csv)
        except OSError as exc:
            csv_error = exc
        summarized = metrics.summary(metric_modes)
        last_step = metrics.last_step
    else:
        records = read_metrics(layout.metrics_jsonl, problems) if layout.metrics_jsonl.exists() else []
        try:
            steps = write_metrics_csv(records, layout.metrics_csv)
        except OSError as exc:
            csv_error = exc
        summarized = summarize_metrics(records, metric_modes)
        last_step = records[-1].step if records else None
        if plots is not False and records and csv_error is None:
            if plots_later:
                draw = records
            else:
                plots_error = _draw(layout, records)
    summary_file = SummaryFile(layout.summary_json)
    fields: dict[str, Any] = {
        "run_name": layout.name,
        "final": summarized["final"],
        "best": summarized["best"],
        "steps_logged": steps,
        "last_step": last_step,
    }
    if problems:
        fields["metrics_problems"] = [str(p) for p in problems[:20]]
    if csv_error is not None:
        fields["metrics_csv_error"] = f"{layout.metrics_csv}: {one_line(csv_error)}"
    if plots_error is not None:
        fields["plots_error"] = plots_error
    system = system_summary(layout.run_dir)
    if system is not None:  # peaks and means of system.jsonl
        fields["system"] = system
    if status is not None:
        fields["status"] = status
    if extra:
        fields.update(extra)
    current = summary_file.read()
    if "end_time" not in current and status not in (None, RUNNING):
        fields.setdefault("end_time", iso_time())
    summary = summary_file.update(**fields)
    if csv_error is not None:
        raise csv_error
    atomic_write_text(layout.report_md, render_report(layout, summary))
    if draw is not None:
        from .plots import draw_later

        records_to_draw = draw
        draw_later(layout.run_dir, lambda: _draw_and_link(layout, records_to_draw))
    return summary


def _draw_and_link(layout: RunLayout, records: list[Any]) -> None:
    """Draw the run's PNG, then record its failure or link it from ``report_draft.md``. With the collector
    paused (:mod:`..folder.gcpause`): the figure's objects are garbage before a collection sees them, and so are
    the records (``records`` is emptied: the thread's job still holds the list when the pause ends)."""
    with collector_paused():
        error = _draw(layout, records)
        records.clear()
        try:
            summary_file = SummaryFile(layout.summary_json)
            summary = summary_file.update(plots_error=error) if error is not None else summary_file.read()
            atomic_write_text(layout.report_md, render_report(layout, summary))
        except (OSError, RunFolderError):
            pass  # a full disk or a summary torn by hand: the report keeps its version without the plot


def _draw(layout: RunLayout, records: list[Any]) -> str | None:
    """Draw the run's PNG curves; the one-line reason when they could not be drawn."""
    from .plots import write_run_plots

    try:
        write_run_plots(layout.run_dir, records)
    except Exception as exc:  # noqa: BLE001 - a plot must never cost the run its summary
        return f"{layout.run_dir / RunLayout.RUN_PLOT}: {one_line(exc)}"
    return None


def attempts_of(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The run's attempts so far (a summary written before attempts were kept counts as one)."""
    attempts = summary.get("attempts")
    if isinstance(attempts, list):
        return [dict(a) for a in attempts if isinstance(a, dict)]
    if not summary.get("start_time"):
        return []
    legacy = {"attempt": 1, "start_time": summary["start_time"], "status": summary.get("status", RUNNING)}
    for key in ("end_time", "failure"):
        if key in summary:
            legacy[key] = summary[key]
    if isinstance(summary.get("duration_s"), (int, float)):  # before training_time_s had its own name
        legacy["training_time_s"] = summary["duration_s"]
    return [legacy]


def attempt_training_time(attempt: Mapping[str, Any]) -> float:
    """An attempt's training time in seconds (``duration_s`` in runs written before it was named so)."""
    for key in ("training_time_s", "duration_s"):
        value = attempt.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return 0.0
