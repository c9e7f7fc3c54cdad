"""One legacy run built into a run folder: in a staging folder, then renamed into place whole.

Everything in the new run goes through the same layout and writers as ``RunLogger``: RunLayout for
paths, the metrics.jsonl and TensorBoard sinks, ``write_config_yaml``, ``post_process``,
``atomic_write_json`` and ``CheckpointMappings``; so a migrated run reads like any other.
"""

from __future__ import annotations

import bisect
import os
import shutil
import socket
import sys
from pathlib import Path

from ..derived.report import render_report
from ..derived.summary import post_process
from ..errors import one_line
from ..folder.fileio import (
    JsonlAppender,
    atomic_write_json,
    atomic_write_text,
    inside,
    json_line,
    link_or_copy,
    read_json,
    replace_dir,
    staged_writes,
)
from ..folder.layout import RunLayout
from ..folder.records import MetricRecord
from ..folder.tracking import CheckpointMappings
from ..redaction import Masker, redact, redact_argv, secret_values
from ..run.config import config_digest, write_config_yaml
from ..run.meta import package_versions
from ..sinks import Sink, SinkContext
from ..sinks.jsonl import MetricsJsonlSink
from ..sinks.tensorboard import TensorBoardSink
from ..vocabulary import COMPLETED, FAILED, INTERRUPTED, iso_time
from .checkpoint_thread import CheckpointConversion, EpochIndex, ProgressFn, thread_safe
from .checkpoints import NOT_CARRIED, ConvertedCheckpoint, find_checkpoints
from .discover import LegacyRun
from .legacy_text import redacted_text
from .plan import TOOL, MigrateOptions, PlannedRun
from .readers import (
    as_number,
    find_log_file,
    read_checkpoint_mapping,
    read_legacy_config,
    read_line_mapping,
    read_log_history,
    step_from_name,
)
from .report import STATUS_CONVERTED, STATUS_FAILED, Notes, RunReport
from .rules import MigrateRules, apply_config_rules
from .tracking_reader import TrackingReader

__all__ = ["convert_run", "link_or_copy_tree", "remove_empty", "staging_root"]

RECORD_BATCH = 4096  # metric records (and tracking lines) handed to the writers at once


def convert_run(
    plan: PlannedRun, out: Path, options: MigrateOptions, on_bytes: ProgressFn = lambda n: None, *,
    tidy_staging: bool = True,
) -> RunReport:
    """Build one run in the staging folder and rename it into ``out``; never raises for bad data.

    ``tidy_staging=False`` leaves the (empty) staging root for the caller to remove: parallel
    workers must not remove it while another worker is about to create its run folder in it.
    """
    run = plan.legacy
    report = RunReport(source=str(run.path), target=str(plan.target) if plan.target else None, bytes=plan.size)
    if plan.error:
        report.status, report.reason = STATUS_FAILED, plan.error
        return report
    assert plan.target is not None and run.legacy is not None
    staging = RunLayout(RunLayout.staging_dir(out, plan.target.name, TOOL))
    try:
        if staging.run_dir.exists():
            shutil.rmtree(staging.run_dir)  # left by an interrupted migration
        staging.run_dir.mkdir(parents=True)
        with staged_writes():  # the run appears whole by one rename: no per-file fsync inside it
            _build(run, staging, options, report, on_bytes)
        _install(staging, plan.target, tidy_staging)
        summary = read_json(RunLayout(plan.target).summary_json)
        atomic_write_text(RunLayout(plan.target).report_md, render_report(RunLayout(plan.target), summary))
    except BaseException as exc:
        shutil.rmtree(staging.run_dir, ignore_errors=True)
        if not isinstance(exc, Exception):
            raise
        report.status = STATUS_FAILED
        if isinstance(exc, OSError) and exc.filename:
            report.reason = f"{exc.filename}: {one_line(exc)}"
        else:
            text = str(exc).strip().splitlines()
            report.reason = f"{run.path}: {type(exc).__name__}: {text[0] if text else ''}"
        return report
    report.status = STATUS_CONVERTED
    return report



def staging_root(out: Path) -> Path:
    """The hidden folder under ``out`` in which runs are built."""
    return RunLayout.staging_dir(out, "x", TOOL).parent


def _install(staging: RunLayout, target: Path, tidy: bool = True) -> None:
    """Rename the complete run into place; with --force the old one is swapped out by the same renames."""
    replace_dir(staging.run_dir, target)
    if tidy:
        remove_empty(staging.root)


def remove_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # other runs still building there, or not empty / already gone


def _carry(src: Path, dst: Path, on_bytes: ProgressFn, secrets: Masker | None = None) -> bool:
    """Link (else copy) one legacy file into the run; True when linked. A text file holding a secret is
    written redacted instead (:mod:`.legacy_text`)."""
    cleaned = redacted_text(src, secrets) if secrets is not None else None
    if cleaned is not None:
        atomic_write_text(dst, cleaned)
        linked = False
    else:
        linked = link_or_copy(src, dst)
    on_bytes(src.stat().st_size)
    return linked


def leaves_tree(path: Path, root: Path) -> str | None:
    """Why ``path`` must not be carried into the run (a link resolving outside ``root``), or None.

    The rule lt-sync applies to its source (:func:`~lightning_track.folder.fileio.inside`): a symlinked
    ``train.log`` pointing at a secrets file elsewhere is skipped, never copied or hard-linked."""
    target = os.path.realpath(path)
    if inside(target, os.path.realpath(root)):
        return None
    return f"{path}: skipped: a link to {target}, outside the legacy run {root}"


def link_or_copy_tree(src: Path, dst: Path, on_bytes: ProgressFn, secrets: Masker | None = None,
                      root: Path | None = None, skipped: list[str] | None = None) -> tuple[int, int]:
    """Hard-link every file of ``src`` under ``dst`` (copy when linking is impossible; a text file holding a
    secret: written redacted); (linked, copied).

    With ``root``, a file that resolves outside it is left out and named in ``skipped``."""
    linked = copied = 0
    for folder, dirs, files in os.walk(src):
        dirs.sort()
        rel = Path(folder).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in sorted(files):
            why = leaves_tree(Path(folder) / name, root) if root is not None else None
            if why is not None:
                if skipped is not None:
                    skipped.append(why)
                continue
            if _carry(Path(folder) / name, dst / rel / name, on_bytes, secrets):
                linked += 1
            else:
                copied += 1
    return linked, copied


def _build(run: LegacyRun, layout: RunLayout, options: MigrateOptions, report: RunReport, on_bytes: ProgressFn) -> None:
    assert run.legacy is not None
    rules = options.rules
    notes = Notes()
    dataset, method = run.dataset, run.legacy.method
    logs = run.path / "logs"
    start = run.legacy.started.timestamp()

    # config.yaml
    legacy_config = read_legacy_config(run.path / "training_config.yaml", notes)
    config, applied = apply_config_rules(legacy_config or {}, rules)
    write_config_yaml(layout.config_yaml, config)

    # checkpoints (found now: the newest trainer_state.json holds the fullest log history)
    checkpoints = find_checkpoints(run.path / "checkpoints", notes)
    report.checkpoints_found = len(checkpoints)
    not_carried = sorted({p.name for name in NOT_CARRIED for p in (run.path / "checkpoints").glob(f"*/{name}")})
    if not_carried:
        notes.warn(f"{run.path / 'checkpoints'}: {', '.join(not_carried)} not carried (Lightning has no place for"
                   " HF RNG state or training arguments)", "not-carried")
    history_files = [p for p in (run.path / "trainer_state.json", run.path / "models" / "trainer_state.json")
                     if p.is_file()]
    newest = [c.path / "trainer_state.json" for c in reversed(checkpoints)
              if c.kind == "hf" and (c.path / "trainer_state.json").is_file()]
    history = read_log_history(newest[:1] + history_files, rules, notes)

    # checkpoints -> checkpoints/checkpoint-step-NNN.ckpt, on a thread beside the tracking lines
    on_bytes = thread_safe(on_bytes)
    conversion = CheckpointConversion(checkpoints, layout, options, report, on_bytes)
    try:
        conversion.start()  # inside: an interrupt right after the thread starts must stop it too
        # batch tracking -> batch_tracking.jsonl + metrics.jsonl + TensorBoard
        tracking_path = find_log_file(logs, "batch_tracking", dataset, ".jsonl", notes)
        metrics_sink = MetricsJsonlSink()
        sinks: list[Sink] = [metrics_sink] + ([TensorBoardSink()] if options.tensorboard else [])
        context = SinkContext(layout=layout, dataset=dataset, method=method, config=redact(config))
        first_seen: dict[int, int] = {}
        epochs = EpochIndex()
        for sink in sinks:
            sink.open(context)
            sink.log_config(redact(config))
        digest = metrics_sink.keep_digest()  # post_process takes it instead of reading metrics.jsonl back
        status = FAILED
        try:
            steps, last_step, last_time = _write_metrics(tracking_path, history, rules, notes, sinks, layout,
                                                         first_seen, epochs, start, report)
            status = COMPLETED
        finally:
            for sink in sinks:
                sink.close(status)
        if tracking_path is not None:
            on_bytes(tracking_path.stat().st_size)
        else:
            notes.warn(f"{logs}/batch_tracking_{dataset}.jsonl: missing; no batch tracking, metrics only from"
                       " trainer_state.json", "batch_tracking")
        report.steps, report.last_step = steps, last_step

        converted = conversion.finish(epochs)
    except BaseException:
        conversion.cancel()  # before the caller removes the staging folder it writes in
        raise
    for message, source in conversion.notes:  # after the tracking's notes, as a sequential conversion
        notes.warn(message, source)

    # mappings
    _write_mappings(run, layout, dataset, converted, first_seen, notes)

    # final_model/ and the legacy files (text holding a secret redacted)
    known_secrets = Masker(secret_values(legacy_config))
    models = run.path / "models"
    if models.is_dir():
        outside: list[str] = []
        report.linked_files, report.copied_files = link_or_copy_tree(models, layout.final_model_dir, on_bytes,
                                                                     known_secrets, run.path, outside)
        report.final_model_files = report.linked_files + report.copied_files
        for line in outside:
            notes.warn(line, str(models))
    else:
        notes.warn(f"{models}: missing; no final_model/", str(models))
    extras = [p for p in (run.path / "training_config.yaml", logs / "train.log") if p.is_file()]
    for extra in extras:
        why = leaves_tree(extra, run.path)
        if why is not None:
            notes.warn(why, str(extra))
            continue
        layout.legacy_dir.mkdir(exist_ok=True)
        if _carry(extra, layout.legacy_dir / extra.name, on_bytes, known_secrets):
            report.linked_files += 1
        else:
            report.copied_files += 1

    # meta.json, summary.json, metrics.csv, report_draft.md
    report.warnings = notes.finish()
    status_word = COMPLETED if models.is_dir() else INTERRUPTED
    atomic_write_json(layout.meta_json, {
        "dataset": dataset,
        "method": method,
        "run_name": layout.name,
        "created": iso_time(),
        "migrated_from": {
            "tool": TOOL,
            "source": str(run.path),
            "project": run.legacy.project,
            "legacy_name": run.path.name,
            "legacy_timestamp": run.legacy.timestamp,
            "rules": rules.path,
            "config_rules_applied": applied,
            "state_dict_prefix": options.state_dict_prefix,
            "checkpoints": {f"checkpoints/{RunLayout.checkpoint_filename(c.step)}": str(c.source)
                            for c in converted},
        },
        "skipped": report.warnings,
        "migration": {"host": socket.gethostname(), "argv": redact_argv(list(sys.argv)), "cwd": os.getcwd(),
                      "versions": package_versions()},
    })
    post_process(layout.run_dir, status=status_word, metrics=digest, extra={
        "run_name": layout.name,
        "dataset": dataset,
        "method": method,
        "start_time": iso_time(start),
        "end_time": iso_time(last_time) if last_time is not None else None,
        # one attempt, from its first record to its last: its training time and its wall span
        "training_time_s": round(last_time - start, 3) if last_time is not None else None,
        "wall_span_s": round(last_time - start, 3) if last_time is not None else None,
        "config_digest": config_digest(config),
        "migrated": True,
        "checkpoints": len(converted),
    })


def _write_metrics(tracking_path: Path | None, history: dict[int, dict[str, float]], rules: MigrateRules,
                   notes: Notes, sinks: list[Sink], layout: RunLayout, first_seen: dict[int, int],
                   epochs: EpochIndex, start: float, report: RunReport) -> tuple[int, int | None, float | None]:
    """Merge batch tracking with log history in step order; returns (metric steps, last step, last time)."""
    batch: list[MetricRecord] = []
    steps = 0
    last_step: int | None = None
    last_time: float | None = None

    def write_batch() -> None:
        for sink in sinks:
            sink.write(batch)
        batch.clear()

    def emit(step: int, when: float, metrics: dict[str, float]) -> None:
        nonlocal steps, last_step
        batch.append(MetricRecord(step, when, metrics))
        steps += 1
        last_step = step
        if len(batch) >= RECORD_BATCH:
            write_batch()

    hist_steps = list(history)
    h = 0
    tracking_fields = list(rules.tracking_metrics.items())
    if tracking_path is not None:
        with JsonlAppender(layout.batch_tracking_jsonl) as out:
            lines: list[str] = []
            seen = first_seen.setdefault
            add_epoch = epochs.add
            next_hist = hist_steps[0] if hist_steps else None  # hist_steps[h], None past the end
            for _, step, tracked_time, record in TrackingReader(tracking_path, rules, notes).steps():
                while next_hist is not None and next_hist < step:
                    emit(next_hist, last_time if last_time is not None else start, history[next_hist])
                    h += 1
                    next_hist = hist_steps[h] if h < len(hist_steps) else None
                if tracked_time is not None:
                    last_time = tracked_time
                if next_hist == step:
                    metrics = dict(history[step])
                    h += 1
                    next_hist = hist_steps[h] if h < len(hist_steps) else None
                else:
                    metrics = {}
                for key, name in tracking_fields:
                    value = record.get(key)
                    kind = type(value)
                    if kind is int:  # as_number(value), the usual cases inlined
                        value = float(value)
                    elif kind is not float:
                        value = as_number(value)
                        if value is None:
                            continue
                    metrics[name] = value
                if metrics:
                    emit(step, last_time if last_time is not None else start, metrics)
                add_epoch(step, record.get("epoch"))
                for line in record.get("line_indices") or ():  # null: no lines (kept as written)
                    seen(line, step)
                lines.append(json_line(record))
                if len(lines) >= RECORD_BATCH:
                    out.write_lines(lines)
                    report.tracked_lines += len(lines)
                    lines.clear()
            out.write_lines(lines)
            report.tracked_lines += len(lines)
    for s in hist_steps[h:]:
        emit(s, last_time if last_time is not None else start, history[s])
    if batch:
        write_batch()
    return steps, last_step, last_time


def _write_mappings(run: LegacyRun, layout: RunLayout, dataset: str, converted: list[ConvertedCheckpoint],
                    first_seen: dict[int, int], notes: Notes) -> None:
    logs = run.path / "logs"
    steps = {c.step for c in converted}
    mapping_path = find_log_file(logs, "checkpoint_mapping", dataset, ".json", notes)
    entries = read_checkpoint_mapping(mapping_path, notes) if mapping_path else None
    by_step = {}
    for entry in entries or []:
        by_step.setdefault(entry.step, entry)
        if entry.step not in steps:
            exists = entry.path is not None and (run.path / entry.path).exists()
            why = (f"names {entry.path}, which does not exist" if entry.path and not exists
                   else "names a checkpoint that was not converted")
            notes.warn(f"{mapping_path}: entry {entry.name!r} {why}; dropped", str(mapping_path))
    line_path = find_log_file(logs, "line_checkpoint_mapping", dataset, ".json", notes)
    named = read_line_mapping(line_path, notes) if line_path else None
    if named:
        step_of = {entry.name: entry.step for entry in entries or []}
        unknown = sorted(n for n in named if step_of.get(n, step_from_name(n)) not in steps)
        for name in unknown[:20]:
            notes.warn(f"{line_path}: names checkpoint {name!r}, which does not exist or was not converted; dropped",
                       str(line_path))
    if not converted:
        return
    first_steps = sorted(first_seen.items(), key=lambda kv: kv[1])
    firsts = [s for _, s in first_steps]
    first_lines = [line for line, _ in first_steps]
    mappings = CheckpointMappings(layout)
    rebuilt = False
    for ck in converted:
        entry = by_step.get(ck.step)
        if entry is not None and entry.lines is not None:
            lines = entry.lines
        else:
            lines = first_lines[: bisect.bisect_right(firsts, ck.step)]
            rebuilt = True
        mappings.add_checkpoint(ck.step, lines=lines)
    if rebuilt and not first_seen:
        notes.warn(f"{run.path}: no batch tracking lines to rebuild the mapping from; checkpoints map no lines",
                   "mapping")
    mappings.write()
