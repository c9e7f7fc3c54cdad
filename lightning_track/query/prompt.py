"""``lt show --prompt``: the compact summary of a run to hand to an AI assistant.

Why not the log: the background documents ask for a summary in place of a 10,000-line log, which
costs the assistant its context and buries the few facts that matter. This is those facts, in plain
lines a model reads reliably: ids, status and why, key config, final and best metrics, the failure.
Secrets are already redacted in ``config.yaml``; long values are cut.
"""

from __future__ import annotations

from typing import Any

from ..derived.report import format_value
from ..folder.fileio import restore_nonfinite
from ..vocabulary import COMPLETED
from .format import format_duration, format_time
from .provenance import provenance_lines, read_provenance
from .runs import RunInfo

__all__ = ["render_prompt", "MAX_CONFIG_KEYS"]

MAX_CONFIG_KEYS = 40
MAX_VALUE = 80
_SKIP_METRICS = ("epoch",)


def _short(value: Any) -> str:
    text = format_value(value) if isinstance(value, float) else " ".join(str(value).split())
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


def render_prompt(run: RunInfo) -> str:
    """A few dozen lines at most, whatever the run's size."""
    lines = [f"Run {run.name} (dataset {run.dataset}, method {run.method})"]
    ids = [f"path {run.path}"]
    if run.summary.get("exp_id"):
        ids.append(f"exp_id {run.summary['exp_id']}")
    if run.host:
        ids.append(f"host {run.host}")
    lines.append("Ids: " + "; ".join(ids))
    status = f"Status: {run.status}"
    if run.why:
        status += f" ({run.why})"
    lines.append(status)
    failure = run.failure
    if failure and run.status != COMPLETED:
        parts = [f"{k} {_short(restore_nonfinite(failure[k]))}" for k in ("check", "value", "threshold", "step")
                 if failure.get(k) is not None]
        lines.append("Failure: " + ", ".join(parts))
    attempts = run.summary.get("attempts") or []
    lines.append(f"Progress: last step {run.summary.get('last_step', '-')}, "
                 f"wall span {format_duration(run.wall_span)}, training time {format_duration(run.training_time)}, "
                 f"started {format_time(run.start)}" + (f", {len(attempts)} attempts" if len(attempts) > 1 else ""))
    if run.tags:
        lines.append("Tags: " + ", ".join(run.tags))
    if run.notes:
        lines.append("Notes: " + " ".join(run.notes.split()))
    config = run.config
    if config:
        shown = list(config.items())[:MAX_CONFIG_KEYS]
        more = len(config) - len(shown)
        lines.append("Config: " + ", ".join(f"{k}={_short(v)}" for k, v in shown)
                     + (f" (+{more} more keys)" if more > 0 else ""))
    lines += provenance_lines(read_provenance(run.path))
    keys = [k for k in run.metric_names("final") if k not in _SKIP_METRICS]
    keys += [k for k in run.metric_names("best") if k not in keys and k not in _SKIP_METRICS]
    if keys:
        lines.append("Metrics (final at step; best at step, direction):")
        best = run.summary.get("best") or {}
        final = run.summary.get("final") or {}
        for key in keys:
            f, b = final.get(key) or {}, best.get(key) or {}
            text = f"- {key}: final {_short(run.metric('final', key))} at {f.get('step', '-')}" if f else f"- {key}:"
            if b:
                text += f"; best {_short(run.metric('best', key))} at {b.get('step', '-')} ({b.get('mode', '?')})"
            lines.append(text)
    if run.problems:
        lines.append("Problems reading the run: " + "; ".join(run.problems))
    return "\n".join(lines)
