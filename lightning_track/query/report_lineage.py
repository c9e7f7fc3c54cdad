"""The lineage section of ``lt report`` for one or a few runs: each run's checkpoints (the best by the
monitored metric, where a resume started, what the final model's weights match) and the checkpoints of
other runs it evaluated, as plain HTML tables (no script needed). Kept apart from the report's layout so
either can change alone; the reading is :mod:`.lineage`'s, the same as ``lt show``'s."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from ..folder.checkpoint_index import HASH
from .lineage import Lineage, evaluated_line, read_lineage, short_hash
from .runs import RunInfo

__all__ = ["lineage_html", "LINEAGE_RUNS"]

LINEAGE_RUNS = 5  # past this many runs the report leaves lineage to lt show RUN


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _notes(traced: Lineage, file: str) -> list[str]:
    notes = []
    for checkpoint in traced.checkpoints:
        if checkpoint["file"] == file and checkpoint["best"]:
            notes.append(f"best {checkpoint['best']}")
    notes += [f"attempt {r.get('attempt')} resumed from it" for r in traced.resumes if r.get("file") == file]
    for model in traced.models:
        source = model.get("from_checkpoint")
        if isinstance(source, dict) and source.get("file") == file:
            notes.append(f"{model.get('file')}/ weights match it")
    return notes


def _run_section(label: str, run: RunInfo, traced: Lineage) -> str:
    rows = "".join(
        f"<tr><td>{_e(c['file'])}</td><td class=\"num\">{_e(c['step'])}</td><td class=\"num\">{_e(c['attempt'])}</td>"
        f"<td><code title=\"{_e(c.get(HASH))}\">{_e(short_hash(c))}</code></td><td>{_e(c.get('hashed') or '-')}</td>"
        f"<td>{_e('; '.join(_notes(traced, c['file'])))}</td></tr>" for c in traced.checkpoints)
    parts = [f'<details open class="lineage"><summary>{_e(label)} {_e(run.name)}</summary>']
    if rows:
        parts.append("<table><tr><th>checkpoint</th><th>step</th><th>attempt</th><th>sha256</th><th>hashed</th>"
                     f"<th>lineage</th></tr>{rows}</table>")
    items = [f"attempt {r.get('attempt')} resumed from {r.get('file')} (step {r.get('step')}, {HASH} "
             f"{short_hash(r)})" for r in traced.resumes]
    for model in traced.models:
        source = model.get("from_checkpoint") if isinstance(model.get("from_checkpoint"), dict) else None
        items.append(f"{model.get('file')}/ (step {model.get('step')}): "
                     + (f"weights of {source.get('file')} ({HASH} {short_hash(source)})" if source
                        else "no checkpoint of its step"))
    items += [f"evaluated {evaluated_line(record)}" for record in traced.evaluated]
    if items:
        parts.append("<ul>" + "".join(f"<li>{_e(item)}</li>" for item in items) + "</ul>")
    return "".join(parts) + "</details>"


def lineage_html(runs: Sequence[RunInfo], names: Sequence[str]) -> list[str]:
    """``<h2>Lineage</h2>`` and one block per run that has any; nothing past ``LINEAGE_RUNS`` runs."""
    if len(runs) > LINEAGE_RUNS:
        return []
    blocks = [_run_section(label, run, traced) for label, run in zip(names, runs, strict=True)
              if (traced := read_lineage(run))]
    return ["<h2>Lineage</h2>", *blocks] if blocks else []
