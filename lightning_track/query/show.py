"""``lt show RUN``: what a person asks first about one run, in the order they ask it.

Status and why (the failing check, its value and step), what ran (dataset, method, host, times,
attempts), final and best metrics, the config, checkpoints, system peaks, the last console lines and
the run's files. Every section reads its own file; a missing or broken file leaves its section out
and adds a one-line problem instead of stopping the rest.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson

from ..derived.report import format_value
from ..errors import one_line
from ..folder.checkpoint_index import HASH, read_index
from ..folder.fileio import is_temp_name, restore_nonfinite
from ..folder.layout import RunLayout
from ..folder.records import flatten
from ..vocabulary import COMPLETED, format_bytes
from .format import format_cell, format_duration, format_time, table
from .lineage import evaluated_line, read_lineage
from .pipelines import pipeline_lines, pipeline_step
from .runs import RunInfo

__all__ = ["render_show", "export_lines", "checkpoints", "system_peaks", "console_tail", "files", "show_record"]


def checkpoints(run: RunInfo) -> list[tuple[int, str, int]]:
    """``(step, path relative to the run, bytes)`` of every checkpoint whose name gives its step."""
    out = []
    for step, path in run.layout.checkpoint_steps():
        try:
            size = path.stat().st_size
        except OSError:
            continue
        out.append((step, path.relative_to(run.path).as_posix(), size))
    return out


def lineage(run: RunInfo, entries: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Mapping[str, Any]]:
    """The newest ``checkpoints.json`` entry of each checkpoint file (attempt, epoch, metrics, hash);
    ``entries``: the index when the caller has read it already."""
    return {str(e.get("file")): e for e in (read_index(run.layout) if entries is None else entries)}


def _short(entry: Mapping[str, Any] | None) -> str:
    digest = entry.get(HASH) if entry else None
    return f"  {HASH} {digest[:12]}" if isinstance(digest, str) else ""


def system_peaks(run: RunInfo, problems: list[str]) -> dict[str, Any]:
    """The summary's system block (peaks and means) when it has one, else the maxima of ``system.jsonl``."""
    block = run.summary.get("system")
    if isinstance(block, Mapping) and block:
        return flatten(dict(block))
    path = run.path / RunLayout.SYSTEM_JSONL
    if not path.is_file():
        return {}
    peaks: dict[str, float] = {}
    try:
        with open(path, "rb") as handle:
            for lineno, raw in enumerate(handle, 1):
                if not raw.endswith(b"\n"):
                    break  # a line still being written
                try:
                    values = orjson.loads(raw).get("metrics", {})
                except (orjson.JSONDecodeError, AttributeError):
                    problems.append(f"{path}:{lineno}: not a JSON object; line skipped")
                    continue
                for key, value in values.items():
                    value = restore_nonfinite(value)
                    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
                        peaks[key] = max(peaks.get(key, value), value)
    except OSError as exc:
        problems.append(f"{path}: cannot be read ({one_line(exc)})")
    return {f"peak {k}": v for k, v in peaks.items()}


def console_tail(run: RunInfo, lines: int) -> list[str]:
    """The last ``lines`` whole lines of ``logs.txt`` with the time cut to ``HH:MM:SS``."""
    path = run.path / RunLayout.LOGS
    if lines <= 0 or not path.is_file():
        return []
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - 256 * lines - 4096))
        data = handle.read()
    text = data.decode("utf-8", errors="replace")
    whole = text[: text.rfind("\n") + 1].splitlines()
    out = []
    for raw in whole[-lines:]:
        stamp, _, rest = raw.partition(" ")
        try:
            out.append(f"{datetime.fromisoformat(stamp).strftime('%H:%M:%S')} {rest}")
        except ValueError:
            out.append(raw)
    return out


def files(run: RunInfo) -> list[tuple[str, int | None]]:
    """Top-level entries of the run folder: ``(name, bytes)``, folders as ``(name/, None)``; temp files left out."""
    out = []
    for entry in sorted(os.scandir(run.path), key=lambda e: e.name):
        if is_temp_name(entry.name):
            continue
        try:
            is_dir = entry.is_dir()
            out.append((entry.name + "/", None) if is_dir else (entry.name, entry.stat().st_size))
        except OSError:
            continue
    return out


def node_lines(run: RunInfo) -> list[str]:
    """One line per node of a multi-node run: its name (meta.json's Slurm ``nodes``), its system samples
    and its ranks' consoles; nothing for a run on one node."""
    slurm = run.meta.get("slurm") if isinstance(run.meta.get("slurm"), dict) else {}
    names = [str(n) for n in slurm.get("nodes") or []] if isinstance(slurm.get("nodes"), list) else []
    layout = run.layout
    systems = {0: RunLayout.SYSTEM_JSONL} if layout.system_jsonl.exists() else {}
    before, after = RunLayout.NODE_SYSTEM_JSONL.split("{node}")
    for path in layout.node_system_jsonls():
        number = path.name[len(before):len(path.name) - len(after)]
        if number.isdigit():
            systems[int(number)] = path.name
    if len(names) < 2 and not set(systems) - {0}:
        return []
    ranks = sorted((p.name for p in run.path.glob(RunLayout.RANK_LOGS.format(rank="*"))),
                   key=lambda name: int("".join(c for c in name if c.isdigit()) or 0))
    lines = []
    for index in range(max(len(names), max(systems, default=0) + 1)):
        name = names[index] if index < len(names) else "?"
        lines.append(f"node {index}: {name}  " + (systems.get(index) or "no system samples"))
    if ranks:
        lines.append("ranks' consoles: " + ", ".join([RunLayout.LOGS, *ranks]))
    return lines


def _metrics_rows(run: RunInfo) -> list[list[str]]:
    rows = []
    best = run.summary.get("best") if isinstance(run.summary.get("best"), dict) else {}
    final = run.summary.get("final") if isinstance(run.summary.get("final"), dict) else {}
    for key in sorted(set(final) | set(best)):
        f, b = final.get(key) or {}, best.get(key) or {}
        rows.append([key, format_cell(run.metric("final", key)) if f else "-", format_cell(f.get("step")),
                     format_cell(run.metric("best", key)) if b else "-", format_cell(b.get("step")),
                     format_cell(b.get("mode"))])
    return rows


def export_lines(run: RunInfo) -> list[str]:
    """Where the run was exported: the tracker, target (no credentials), its run id and link, one per target."""
    lines = []
    for entry in run.exports:
        text = f"  {entry.get('tracker', '?')} {entry['target']}  run {entry.get('run_id')}"
        for key in ("experiment", "project"):  # MLflow's, W&B's
            if entry.get(key):
                text += f"  {key} {entry[key]}"
        if entry.get("status") or entry.get("state"):
            text += f"  {entry.get('status') or entry['state']}"
        if entry.get("exported_at"):
            text += f"  sent {entry['exported_at']}"
        if entry.get("record") == RunLayout.MIRROR_EXPORT:
            text += "  (from this mirror)"
        lines.append(text)
        if entry.get("link"):
            lines.append(f"    {entry['link']}")
    return ["", "exported", *lines] if lines else []


def _status_lines(run: RunInfo) -> list[str]:
    lines = [f"status: {run.status}" + (f" - {run.why}" if run.why else "")]
    failure = run.failure
    if failure and run.status != COMPLETED:
        shown = ", ".join(f"{k} {format_value(restore_nonfinite(failure[k]))}"
                          for k in ("check", "value", "threshold", "step") if failure.get(k) is not None)
        lines.append(f"failure: {shown}")
        for lost in failure.get("lost") or []:
            if isinstance(lost, dict):
                lines.append(f"lost: node {lost.get('node')} ({lost.get('name') or '?'}), ranks "
                             f"{', '.join(str(r) for r in lost.get('ranks') or [])}: nothing written for "
                             f"{format_duration(lost.get('silent_s'))} (last {lost.get('last_write') or '-'})")
    return lines


def show_record(run: RunInfo) -> dict[str, Any]:
    """``lt show --json``: the run's record with config, checkpoints and files."""
    problems: list[str] = []
    record = run.record(config=True)
    entries = read_index(run.layout)
    index = lineage(run, entries)
    record["checkpoints"] = [{"step": s, "path": p, "bytes": n,
                              **{k: index[p].get(k) for k in ("attempt", "epoch", "metrics", HASH) if p in index}}
                             for s, p, n in checkpoints(run)]
    traced = read_lineage(run, entries)
    record["evaluated"] = traced.evaluated or None
    for checkpoint in record["checkpoints"]:
        checkpoint["best"] = next((c["best"] for c in traced.checkpoints if c["file"] == checkpoint["path"]), None)
    record["system"] = system_peaks(run, problems)
    record["files"] = [{"name": n, "bytes": b} for n, b in files(run)]
    step = pipeline_step(run.path, run.summary.get("exp_id"))
    record["pipeline"] = {k: step[k] for k in ("pipeline", "step", "state", "file")} if step else None
    if problems:
        record.setdefault("problems", []).extend(problems)
    return record


def render_show(run: RunInfo, *, lines: int = 20) -> str:
    """The text of ``lt show``."""
    problems: list[str] = []
    out = [f"{run.name}  ({run.path})", *_status_lines(run)]
    where = f"dataset {run.dataset}, method {run.method}, host {run.host or '-'}"
    if run.source:
        where += f", from {run.source}"
    out.append(where)
    attempts = run.summary.get("attempts") or []
    out.append(f"started {format_time(run.start)}, ended {format_time(run.end)}, wall span "
               f"{format_duration(run.wall_span)}, training time {format_duration(run.training_time)}, "
               f"last step {format_cell(run.summary.get('last_step'))}"
               + (f", {len(attempts)} attempts" if len(attempts) > 1 else ""))
    for attempt in attempts if len(attempts) > 1 else []:
        if isinstance(attempt, dict):
            resumed = attempt.get("resumed_from") if isinstance(attempt.get("resumed_from"), dict) else None
            out.append(f"  attempt {attempt.get('attempt')}: {attempt.get('status')} "
                       f"from step {attempt.get('from_step', 0)}"
                       + (f" (resumed from {resumed.get('file')}{_short(resumed)})" if resumed else "")
                       + (f" - {attempt['reason']}" if attempt.get("reason") else ""))
    if run.summary.get("exp_id"):
        out.append(f"exp_id {run.summary['exp_id']}")
    nodes = node_lines(run)
    if nodes:
        out += ["nodes", *(f"  {line}" for line in nodes)]
    out += pipeline_lines(run.path, run.summary)
    if run.tags:
        out.append("tags: " + ", ".join(run.tags))
    if run.notes:
        out.append("notes: " + run.notes.replace("\n", "\n       "))
    out += export_lines(run)
    rows = _metrics_rows(run)
    if rows:
        out += ["", "metrics", _indent(table(["metric", "final", "step", "best", "best step", "mode"], rows,
                                            right=[False, True, True, True, True, False]))]
    config = run.config
    if config:
        out += ["", "config", *(f"  {k} = {format_cell(v)}" for k, v in config.items())]
    ckpts = checkpoints(run)
    entries = read_index(run.layout)
    models = [e for e in entries if e.get("kind") == "model"]
    traced = read_lineage(run, entries)
    if traced.evaluated:  # the checkpoints of other runs this run was given (a pipeline's {train.best_ckpt})
        out += ["", "evaluated", *(f"  {evaluated_line(record)}" for record in traced.evaluated)]
    if ckpts or models:
        index = lineage(run, entries)
        best = {c["file"]: c["best"] for c in traced.checkpoints if c["best"]}
        out += ["", "checkpoints", *(f"  {path}  step {step}  {format_bytes(size)}" + _short(index.get(path))
                                     + (f"  attempt {index[path]['attempt']}" if index.get(path, {}).get("attempt")
                                        else "") + (f"  best {best[path]}" if path in best else "")
                                     for step, path, size in ckpts)]
        for model in models:  # an exported model and the checkpoint its weights match
            source = model.get("from_checkpoint") if isinstance(model.get("from_checkpoint"), dict) else None
            out.append(f"  {model.get('file')}/  step {model.get('step')}  model"
                       + (f"  = {source.get('file')}{_short(source)}" if source else ""))
    system = system_peaks(run, problems)
    if system:
        out += ["", "system", *(f"  {k} = {format_cell(v)}" for k, v in system.items())]
    tail = console_tail(run, lines)
    if tail:
        out += ["", f"console (last {len(tail)} lines of {RunLayout.LOGS})", *(f"  {line}" for line in tail)]
    out += ["", "files", *(f"  {name}" + ("" if size is None else f"  {format_bytes(size)}")
                           for name, size in files(run))]
    for problem in run.problems + problems:
        out.append(f"problem: {problem}")
    return "\n".join(out)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())

