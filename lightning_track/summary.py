"""``summary.json`` (status, timing, final and best metrics) and the post-processing that
RunLogger runs at finalize and ``lt-run --post-process`` runs on any run folder."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from .fileio import JsonlProblem, atomic_write_json, atomic_write_text, read_json
from .layout import RunLayout
from .metrics import MetricsDigest, Mode, read_metrics, summarize_metrics, write_metrics_csv

__all__ = ["SummaryFile", "post_process", "iso_now", "STATUS_RUNNING", "STATUS_COMPLETED", "STATUS_FAILED",
           "STATUS_INTERRUPTED", "status_from_lightning"]

STATUS_RUNNING = "running"
STATUS_COMPLETED = "completed"
STATUS_FAILED = "failed"
STATUS_INTERRUPTED = "interrupted"


def status_from_lightning(status: str) -> str:
    """Map Lightning's ``finalize`` status words to ours."""
    return {"success": STATUS_COMPLETED, "finished": STATUS_COMPLETED, "failed": STATUS_FAILED}.get(status, status)


def iso_now(when: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if when is None else when).astimezone().isoformat(timespec="seconds")


class SummaryFile:
    """Thread-safe read-modify-write of ``summary.json``, always replaced atomically."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        data = read_json(self.path)
        if not isinstance(data, dict):
            raise ValueError(f"{self.path}: expected a JSON object")
        return data

    def update(self, **fields: Any) -> dict[str, Any]:
        with self._lock:
            data = self.read()
            data.update(fields)
            atomic_write_json(self.path, data)
            return data


def post_process(
    run_dir: str | Path,
    *,
    status: str | None = None,
    metric_modes: Mapping[str, Mode | None] | None = None,
    extra: Mapping[str, Any] | None = None,
    metrics: MetricsDigest | None = None,
) -> dict[str, Any]:
    """Rebuild ``metrics.csv``, refresh ``summary.json`` and write ``report_draft.md`` from the files.

    Everything is derived from ``metrics.jsonl`` and ``config.yaml``; running it twice gives the
    same result. Returns the summary.

    ``metrics``: a :class:`MetricsDigest` fed every record of ``metrics.jsonl`` as it was written
    (lt-migrate): the same result without reading the file again. An incomplete one is ignored.
    """
    layout = RunLayout(run_dir)
    if not layout.run_dir.is_dir():
        raise FileNotFoundError(f"{layout.run_dir}: not a run folder")
    problems: list[JsonlProblem] = []
    if metrics is not None and metrics.complete:
        steps = metrics.write_csv(layout.metrics_csv)
        summarized = metrics.summary(metric_modes)
        last_step = metrics.last_step
    else:
        records = read_metrics(layout.metrics_jsonl, problems) if layout.metrics_jsonl.exists() else []
        steps = write_metrics_csv(records, layout.metrics_csv)
        summarized = summarize_metrics(records, metric_modes)
        last_step = records[-1].step if records else None
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
    if status is not None:
        fields["status"] = status
    if extra:
        fields.update(extra)
    current = summary_file.read()
    if "end_time" not in current and status not in (None, STATUS_RUNNING):
        fields.setdefault("end_time", iso_now())
    summary = summary_file.update(**fields)
    atomic_write_text(layout.report_md, render_report(layout, summary))
    return summary


def _fmt(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def render_report(layout: RunLayout, summary: Mapping[str, Any]) -> str:
    """A report skeleton to fill in: what ran, key results, where to look."""
    config = layout.config_yaml.read_text(encoding="utf-8") if layout.config_yaml.exists() else "(no config.yaml)\n"
    lines = [
        f"# {layout.name}",
        "",
        f"- status: {summary.get('status', 'unknown')}",
        f"- dataset / method: {summary.get('dataset', '?')} / {summary.get('method', '?')}",
        f"- started: {summary.get('start_time', '?')}, ended: {summary.get('end_time', '-')}",
        f"- duration: {summary.get('duration_s', '-')} s, last step: {summary.get('last_step', '-')}",
        "",
        "## Key results",
        "",
        "| metric | final | step | best | best step |",
        "| --- | --- | --- | --- | --- |",
    ]
    best = summary.get("best", {})
    for key, final in sorted(summary.get("final", {}).items()):
        b = best.get(key, {})
        lines.append(
            f"| {key} | {_fmt(final.get('value'))} | {final.get('step')} | {_fmt(b.get('value', '-'))} |"
            f" {b.get('step', '-')} |"
        )
    lines += [
        "",
        "## Plots",
        "",
        f"`tensorboard --logdir {layout.run_dir}` (curves), `metrics.csv` (one row per step).",
        "",
        "## Config",
        "",
        "```yaml",
        config.rstrip("\n"),
        "```",
        "",
        "## Conclusions",
        "",
        "- (one sentence: what this run shows)",
        "",
        "## Next steps",
        "",
        "- ",
        "",
    ]
    return "\n".join(lines)
