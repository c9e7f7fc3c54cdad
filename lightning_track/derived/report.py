"""``report_draft.md``: a report skeleton a person fills in, and the markdown metrics table it shares
with the final model's card.

A failed run's report opens with why it failed (the ``failure`` block of ``summary.json``: check,
value, threshold, step), so whoever opens the folder learns that before any table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from ..folder.fileio import restore_nonfinite
from ..folder.layout import RunLayout
from ..vocabulary import COMPLETED, FAILED, INTERRUPTED
from .system import system_report_line

__all__ = ["render_report", "format_value", "metrics_table", "failure_lines"]


def format_value(value: Any) -> str:
    """A metric value for a person: 6 significant digits for finite floats, ``nan``/``inf`` as Python spells them."""
    return f"{value:.6g}" if isinstance(value, float) and math.isfinite(value) else str(value)


def metrics_table(final: Mapping[str, Mapping[str, Any]], best: Mapping[str, Mapping[str, Any]],
                  keys: Iterable[str] | None = None) -> list[str]:
    """Markdown rows ``| metric | final | step | best | best step |`` for ``keys`` (default: all, sorted)."""
    lines = ["| metric | final | step | best | best step |", "| --- | --- | --- | --- | --- |"]
    for key in sorted(final) if keys is None else keys:
        f, b = final.get(key, {}), best.get(key, {})
        lines.append(f"| {key} | {format_value(f.get('value'))} | {f.get('step')} |"
                     f" {format_value(b.get('value', '-'))} | {b.get('step', '-')} |")
    return lines


def failure_lines(failure: Mapping[str, Any], status: str = FAILED) -> list[str]:
    """The report's opening on a failure: a headline with check, step and reason, then every number."""

    def shown(key: str) -> str:
        value = restore_nonfinite(failure.get(key))  # summary.json spells NaN "NaN" (strict JSON)
        return "-" if value is None else format_value(value)

    check = failure.get("check") or "unknown"
    step = failure.get("step")
    word = "Interrupted" if status == INTERRUPTED else "Failed"
    headline = f"**{word}: {check}" + (f" at step {step}" if step is not None else "") + "**"
    if failure.get("reason"):
        headline += f": {failure['reason']}"
    details = f"- check: {check}, value: {shown('value')}, threshold: {shown('threshold')}, step: {shown('step')}"
    if failure.get("rank"):  # as HealthCheckFailed says it: only a rank other than 0 is news
        details += f", rank: {failure['rank']}"
    return [headline, "", details, ""]


def render_report(layout: RunLayout, summary: Mapping[str, Any]) -> str:
    """A report skeleton to fill in: why it failed (if it did), what ran, key results, where to look."""
    config = layout.config_yaml.read_text(encoding="utf-8") if layout.config_yaml.exists() else "(no config.yaml)\n"
    failure = summary.get("failure")
    status = summary.get("status", "unknown")
    # A completed run's leftover failure (an earlier attempt's) is not why this run ended.
    opening = failure_lines(failure, status) if isinstance(failure, Mapping) and status != COMPLETED else []
    lines = [
        f"# {layout.name}",
        "",
        *opening,
        f"- status: {status}",
        f"- dataset / method: {summary.get('dataset', '?')} / {summary.get('method', '?')}",
        f"- started: {summary.get('start_time', '?')}, ended: {summary.get('end_time', '-')}",
        f"- training time: {summary.get('training_time_s', summary.get('duration_s', '-'))} s, wall span (first"
        f" start to last end): {summary.get('wall_span_s', '-')} s, last step: {summary.get('last_step', '-')}",
        *([f"- {line}"] if (line := system_report_line(summary.get("system"))) else []),
        "",
        "## Key results",
        "",
    ]
    lines += metrics_table(summary.get("final", {}), summary.get("best", {}))
    lines += [
        "",
        "## Plots",
        "",
        *([f"![metrics]({RunLayout.RUN_PLOT})", ""] if (layout.run_dir / RunLayout.RUN_PLOT).is_file() else []),
        f"`tensorboard --logdir {layout.run_dir}` (curves), `metrics.csv` (one row per step), "
        f"`lt report {layout.name} -o report.html` (interactive).",
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
