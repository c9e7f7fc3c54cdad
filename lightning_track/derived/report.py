"""``report_draft.md``: a report skeleton a person fills in, and the markdown metrics table it shares
with the final model's card."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from ..folder.layout import RunLayout

__all__ = ["render_report", "format_value", "metrics_table"]


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
    ]
    lines += metrics_table(summary.get("final", {}), summary.get("best", {}))
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
