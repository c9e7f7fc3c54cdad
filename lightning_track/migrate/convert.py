"""Plan and convert legacy runs into run folders, each built in a staging folder and renamed into place.

Everything in the new run goes through the same layout and writers as ``RunLogger``: RunLayout for
paths, the metrics.jsonl and TensorBoard sinks, ``write_config_yaml``, ``post_process``,
``atomic_write_json`` and ``CheckpointMappings``.
"""

from __future__ import annotations

import bisect
import errno
import fnmatch
import math
import multiprocessing
import os
import queue
import shutil
import signal
import socket
import sys
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..derived.report import render_report
from ..derived.summary import post_process
from ..folder.fileio import JsonlAppender, atomic_write_json, atomic_write_text, json_line, read_json, staged_writes
from ..folder.layout import RunLayout
from ..folder.records import MetricRecord
from ..folder.tracking import CheckpointMappings
from ..run.config import config_digest, redact, redact_argv, write_config_yaml
from ..run.meta import package_versions
from ..sinks import Sink, SinkContext
from ..sinks.jsonl import MetricsJsonlSink
from ..sinks.tensorboard import TensorBoardSink
from ..vocabulary import COMPLETED, INTERRUPTED, iso_time
from . import loopstate
from .checkpoints import (
    NOT_CARRIED,
    CheckpointError,
    ConvertedCheckpoint,
    LegacyCheckpoint,
    find_checkpoints,
    lightning_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from .discover import LegacyRun, SourceError, discover_runs
from .readers import (
    TrackingReader,
    as_number,
    find_log_file,
    read_checkpoint_mapping,
    read_legacy_config,
    read_line_mapping,
    read_log_history,
    step_from_name,
)
from .report import (
    STATUS_CONVERTED,
    STATUS_FAILED,
    STATUS_PLANNED,
    STATUS_SKIPPED,
    MigrationReport,
    Notes,
    RunReport,
)
from .rules import MigrateRules, apply_config_rules, load_rules

__all__ = ["MigrateOptions", "PlannedRun", "plan_migration", "convert_run", "migrate", "default_jobs", "TOOL"]

TOOL = "lt-migrate"
RECORD_BATCH = 4096  # metric records handed to the sinks at once
_LINK_FALLBACK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP, errno.ENOTSUP}


@dataclass
class MigrateOptions:
    state_dict_prefix: str = "model."
    rules: MigrateRules = field(default_factory=load_rules)
    force: bool = False
    trust_pickle: bool = False
    tensorboard: bool = True


@dataclass
class PlannedRun:
    legacy: LegacyRun
    target: Path | None = None
    size: int = 0
    already_migrated: bool = False
    error: str | None = None
    would_skip: list[str] = field(default_factory=list)  # what --dry-run says will be left out

    @property
    def name(self) -> str | None:
        return self.target.name if self.target else None


ProgressFn = Callable[[int], None]


# -- planning ---------------------------------------------------------------------------------------
def _tree_size(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


def migrated_from(target: Path) -> str | None:
    """The legacy source recorded in a run's ``meta.json`` (None when not a migrated run)."""
    try:
        meta = read_json(RunLayout(target).meta_json)
    except (OSError, ValueError):
        return None
    origin = meta.get("migrated_from") if isinstance(meta, dict) else None
    return origin.get("source") if isinstance(origin, dict) else None


def _check_paths(source: Path, out: Path) -> None:
    src, dst = source.resolve(), out.resolve()
    if dst == src or src in dst.parents:
        raise SourceError(f"--out {str(out)!r} is inside SOURCE {str(source)!r}; the legacy tree is never written,"
                          " choose an output folder outside it")
    if out.exists() and not out.is_dir():
        raise SourceError(f"--out {str(out)!r} exists and is not a folder")


def _would_skip(run: Path, dataset: str) -> list[str]:
    """Cheap look at what the run lacks (for --dry-run): no reading of file contents."""
    notes = []
    logs = run / "logs"
    if not (run / "training_config.yaml").is_file():
        notes.append("training_config.yaml missing: config.yaml from defaults only")
    for stem, suffix, what in (("batch_tracking", ".jsonl", "no batch tracking: metrics only from trainer_state"),
                               ("checkpoint_mapping", ".json", "no checkpoint mapping: rebuilt from batch tracking")):
        if not (logs / f"{stem}_{dataset}{suffix}").is_file() and not list(logs.glob(f"{stem}_*{suffix}")):
            notes.append(what)
    if not (run / "models").is_dir():
        notes.append("models/ missing: no final_model/")
    ckpts = run / "checkpoints"
    if not ckpts.is_dir() or not any(ckpts.iterdir()):
        notes.append("no checkpoints")
    else:
        carried_not = sum(1 for name in NOT_CARRIED for _ in ckpts.glob(f"*/{name}"))
        if carried_not:
            notes.append(f"{carried_not} RNG-state/training-args files not carried (no Lightning equivalent)")
    return notes


def plan_migration(
    source: str | os.PathLike[str], out: str | os.PathLike[str], *, only: str | None = None, force: bool = False
) -> list[PlannedRun]:
    """Find the runs, give each its target name, and mark those already migrated.

    A target that exists but came from another source (or from RunLogger) is never touched: the
    run gets the next free ``-2``, ``-3`` name, as ``RunLayout.create`` would give it.
    """
    source, out = Path(source), Path(out)
    runs = discover_runs(source)
    _check_paths(source, out)
    plans: list[PlannedRun] = []
    taken: set[str] = set()
    for run in runs:
        plan = PlannedRun(run)
        plans.append(plan)
        if run.error or run.legacy is None:
            plan.error = run.error or "run folder name does not parse"
            continue
        try:
            prefix_name = RunLayout.run_name(run.dataset, run.legacy.method, run.legacy.timestamp)
        except ValueError as exc:
            plan.error = f"{run.path}: {exc}"
            continue
        if only and not any(fnmatch.fnmatch(text, only) for text in (run.path.name, run.relpath, prefix_name)):
            plan.error = None
            plan.would_skip = ["not matched by --only"]
            plan.target = None
            continue
        counter = 1
        while True:
            name = RunLayout.run_name(run.dataset, run.legacy.method, run.legacy.timestamp, counter)
            target = out / name
            origin = migrated_from(target) if target.exists() else None
            if name not in taken and (not target.exists() or origin == str(run.path)):
                break
            counter += 1
        taken.add(name)
        plan.target = target
        plan.already_migrated = target.exists()
        plan.size = _tree_size(run.path)
        plan.would_skip = _would_skip(run.path, run.dataset)
    return plans


# -- converting one run --------------------------------------------------------------------------------
class _EpochIndex:
    """Which epoch a step belongs to, from batch tracking, in memory proportional to the epochs."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.epochs: list[int] = []
        self.last_step: dict[int, int] = {}

    def add(self, step: int, epoch: Any) -> None:
        number = as_number(epoch)
        if number is None:
            return
        value = int(number)
        if not self.epochs or self.epochs[-1] != value:
            self.starts.append(step)
            self.epochs.append(value)
        self.last_step[value] = step

    def epoch_of(self, step: int) -> int | None:
        i = bisect.bisect_right(self.starts, step) - 1
        return self.epochs[i] if i >= 0 else None


def link_or_copy_tree(src: Path, dst: Path, on_bytes: ProgressFn) -> tuple[int, int]:
    """Hard-link every file of ``src`` under ``dst`` (copy when linking is impossible); (linked, copied)."""
    linked = copied = 0
    for folder, dirs, files in os.walk(src):
        dirs.sort()
        rel = Path(folder).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in sorted(files):
            s, d = Path(folder) / name, dst / rel / name
            try:
                os.link(s, d)
                linked += 1
            except OSError as exc:
                if exc.errno not in _LINK_FALLBACK:
                    raise
                shutil.copy2(s, d)
                copied += 1
            on_bytes(s.stat().st_size)
    return linked, copied


def _close_sinks(sinks: list[Sink], status: str) -> None:
    for sink in sinks:
        sink.close(status)


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
            report.reason = f"{exc.filename}: {exc.strerror or exc}"
        else:
            text = str(exc).strip().splitlines()
            report.reason = f"{run.path}: {type(exc).__name__}: {text[0] if text else ''}"
        return report
    report.status = STATUS_CONVERTED
    return report


def _install(staging: RunLayout, target: Path, tidy: bool = True) -> None:
    """Rename the complete run into place; with --force the old one is swapped out first."""
    if target.exists():
        old = staging.run_dir.with_name(staging.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        os.rename(target, old)
        os.rename(staging.run_dir, target)
        shutil.rmtree(old)
    else:
        os.rename(staging.run_dir, target)
    if tidy:
        _remove_empty(staging.root)


def _remove_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # other runs still building there, or not empty / already gone


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
    on_bytes = _thread_safe(on_bytes)
    conversion = _CheckpointConversion(checkpoints, layout, options, report, on_bytes)
    try:
        conversion.start()  # inside: an interrupt right after the thread starts must stop it too
        # batch tracking -> batch_tracking.jsonl + metrics.jsonl + TensorBoard
        tracking_path = find_log_file(logs, "batch_tracking", dataset, ".jsonl", notes)
        metrics_sink = MetricsJsonlSink()
        sinks: list[Sink] = [metrics_sink] + ([TensorBoardSink()] if options.tensorboard else [])
        context = SinkContext(layout=layout, dataset=dataset, method=method, config=redact(config))
        first_seen: dict[int, int] = {}
        epochs = _EpochIndex()
        for sink in sinks:
            sink.open(context)
            sink.log_config(redact(config))
        digest = metrics_sink.keep_digest()  # post_process takes it instead of reading metrics.jsonl back
        status = "failed"
        try:
            steps, last_step, last_time = _write_metrics(tracking_path, history, rules, notes, sinks, layout,
                                                         first_seen, epochs, start, report)
            status = "success"
        finally:
            _close_sinks(sinks, status)
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

    # final_model/ and the unchanged legacy files
    models = run.path / "models"
    if models.is_dir():
        report.linked_files, report.copied_files = link_or_copy_tree(models, layout.final_model_dir, on_bytes)
        report.final_model_files = report.linked_files + report.copied_files
    else:
        notes.warn(f"{models}: missing; no final_model/", str(models))
    extras = [p for p in (run.path / "training_config.yaml", logs / "train.log") if p.is_file()]
    for extra in extras:
        layout.legacy_dir.mkdir(exist_ok=True)
        linked, copied = link_or_copy_tree_file(extra, layout.legacy_dir / extra.name, on_bytes)
        report.linked_files += linked
        report.copied_files += copied

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
        "duration_s": round(last_time - start, 3) if last_time is not None else None,
        "config_digest": config_digest(config),
        "migrated": True,
        "checkpoints": len(converted),
    })


def link_or_copy_tree_file(src: Path, dst: Path, on_bytes: ProgressFn) -> tuple[int, int]:
    try:
        os.link(src, dst)
        result = (1, 0)
    except OSError as exc:
        if exc.errno not in _LINK_FALLBACK:
            raise
        shutil.copy2(src, dst)
        result = (0, 1)
    on_bytes(src.stat().st_size)
    return result


def _write_metrics(tracking_path: Path | None, history: dict[int, dict[str, float]], rules: MigrateRules,
                   notes: Notes, sinks: list[Sink], layout: RunLayout, first_seen: dict[int, int],
                   epochs: _EpochIndex, start: float, report: RunReport) -> tuple[int, int | None, float | None]:
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


class _NeedsTracking(Exception):
    """A checkpoint whose step or epoch only the batch tracking tells."""


def _needs_tracking(value: int) -> int | None:
    raise _NeedsTracking


def _thread_safe(on_bytes: ProgressFn) -> ProgressFn:
    lock = threading.Lock()

    def locked(n: int) -> None:
        with lock:
            on_bytes(n)

    return locked


class _CheckpointConversion:
    """A run's checkpoints converted in order, on a thread beside the tracking lines while it can.

    Why a thread: a checkpoint's bytes are copied by the kernel (or checksummed by zlib) with the GIL
    released, so a run keeps a second core busy -- the one a worker that has finished leaves idle.
    The thread stops at the first checkpoint whose step or epoch only the batch tracking tells;
    :meth:`finish` converts the rest once the tracking is read. The order, and so which of two
    checkpoints of one step wins, is that of a sequential conversion; so are the notes, which are
    recorded here for the caller to add after the tracking's.
    """

    def __init__(self, checkpoints: list[LegacyCheckpoint], layout: RunLayout, options: MigrateOptions,
                 report: RunReport, on_bytes: ProgressFn) -> None:
        self.checkpoints, self.layout, self.options, self.report, self.on_bytes = (checkpoints, layout, options,
                                                                                  report, on_bytes)
        self.notes: list[tuple[str, str]] = []
        self.converted: dict[int, ConvertedCheckpoint] = {}
        self._next = 0
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self) -> None:
        if not self.checkpoints:
            return
        self.layout.checkpoints_dir.mkdir(exist_ok=True)
        self._thread = threading.Thread(target=self._run_without_tracking, name="lt-migrate-checkpoints", daemon=True)
        self._thread.start()

    def _run_without_tracking(self) -> None:
        try:
            self._convert(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread by finish()
            self._error = exc

    def _join(self) -> None:
        if self._thread is not None and self._thread.ident is not None:  # None: interrupted before it started
            self._thread.join()
        self._thread = None

    def cancel(self) -> None:
        """Stop between checkpoints (or copy chunks) and wait: nothing is written after this returns."""
        self._cancel.set()
        self._join()

    def finish(self, epochs: _EpochIndex) -> list[ConvertedCheckpoint]:
        self._join()
        if self._error is not None:
            raise self._error
        self._convert(epochs)
        return [self.converted[s] for s in sorted(self.converted)]

    def _convert(self, epochs: _EpochIndex | None) -> None:
        while self._next < len(self.checkpoints) and not self._cancel.is_set():
            try:
                self._convert_one(self.checkpoints[self._next], epochs)
            except _NeedsTracking:
                if epochs is None:
                    return  # the caller's thread goes on from here once the tracking is read
                raise
            self._next += 1

    def _convert_one(self, ck: LegacyCheckpoint, epochs: _EpochIndex | None) -> None:
        report, converted = self.report, self.converted
        try:
            loaded = load_checkpoint(ck, trust_pickle=self.options.trust_pickle,
                                     epoch_of_step=epochs.epoch_of if epochs else _needs_tracking,
                                     last_step_of_epoch=epochs.last_step.get if epochs else _needs_tracking)
        except CheckpointError as exc:
            self.notes.append((f"{exc}; checkpoint skipped", str(ck.path)))
            self.on_bytes(ck.size)
            return
        self.notes.extend((note, str(ck.path)) for note in loaded.notes)
        if loaded.step in converted:
            self.notes.append((f"{ck.path}: step {loaded.step} already converted from"
                               f" {converted[loaded.step].source.name}; checkpoint skipped", str(ck.path)))
            self.on_bytes(ck.size)
            return
        checkpoint = lightning_checkpoint(loaded, prefix=self.options.state_dict_prefix, source=str(ck.path))
        del loaded
        step = checkpoint["global_step"]
        size = save_checkpoint(checkpoint, self.layout.checkpoint_path(step), cancel=self._cancel)
        info = checkpoint["lt_migrate"]
        converted[step] = ConvertedCheckpoint(ck.path, step, checkpoint["epoch"], info["weights_only"],
                                              info["weights"], size)
        report.checkpoints += 1
        report.weights_only += int(info["weights_only"])
        self.on_bytes(ck.size)


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


# -- the whole migration ---------------------------------------------------------------------------------
def _report_without_work(plan: PlannedRun, dry_run: bool, options: MigrateOptions) -> RunReport | None:
    """The report of a run that is not converted (filtered, dry run, already migrated); None to convert it."""
    if plan.target is None and not plan.error:
        return RunReport(str(plan.legacy.path), None, STATUS_SKIPPED, "not matched by --only")
    if not (dry_run or (plan.already_migrated and not options.force)):
        return None
    report = RunReport(str(plan.legacy.path), str(plan.target) if plan.target else None, bytes=plan.size)
    if plan.error:
        report.status, report.reason = STATUS_FAILED, plan.error
    elif plan.already_migrated and not options.force:
        report.status, report.reason = STATUS_SKIPPED, "already migrated (use --force to redo)"
    else:
        report.status = STATUS_PLANNED
        report.warnings = list(plan.would_skip)
    return report


def migrate(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str] = "runs",
    *,
    dry_run: bool = False,
    only: str | None = None,
    options: MigrateOptions | None = None,
    jobs: int = 1,
    on_plan: Callable[[list[PlannedRun]], None] = lambda plans: None,
    on_bytes: ProgressFn = lambda n: None,
    on_run: Callable[[RunReport], None] = lambda r: None,
) -> MigrationReport:
    """Migrate every legacy run under ``source`` into ``out``; a bad run never stops the others.

    ``jobs > 1`` converts that many runs at once in worker processes (runs are independent; one
    run's work is mostly single-threaded Python); ``jobs=1`` converts them here, one after the other.
    ``on_bytes``/``on_run`` are always called in this process. Raises ``SourceError`` only when
    SOURCE/--out cannot be used at all.
    """
    options = options or MigrateOptions()
    out = Path(out)
    plans = plan_migration(source, out, only=only, force=options.force)
    on_plan(plans)
    reports: list[RunReport | None] = [None] * len(plans)
    todo: list[int] = []
    for i, plan in enumerate(plans):
        report = _report_without_work(plan, dry_run, options)
        if report is None and plan.error:
            report = convert_run(plan, out, options)  # fails at once, without touching anything
        if report is None:
            todo.append(i)
            continue
        reports[i] = report  # settled first; the report keeps the plan order
        on_bytes(plan.size)
        on_run(report)
    if todo:
        out.mkdir(parents=True, exist_ok=True)
    learner = loopstate.start_learning() if todo else None  # Lightning's loop state, once per version
    try:
        _convert_todo(plans, todo, out, options, jobs, reports, on_bytes, on_run)
    finally:
        if learner is not None:
            learner.stop()
    return MigrationReport(runs=[r for r in reports if r is not None], dry_run=dry_run)


def _convert_todo(plans: list[PlannedRun], todo: list[int], out: Path, options: MigrateOptions, jobs: int,
                  reports: list[RunReport | None], on_bytes: ProgressFn, on_run: Callable[[RunReport], None]) -> None:
    if jobs > 1 and len(todo) > 1:
        todo = _convert_in_workers(plans, todo, out, options, jobs, reports, on_bytes, on_run)
    for i in todo:  # in this process: --jobs 1, a single run, or runs no worker could take
        plan = plans[i]
        done = 0

        def count(n: int) -> None:
            nonlocal done
            done += n
            on_bytes(n)

        reports[i] = report = convert_run(plan, out, options, count)
        if plan.size > done:
            on_bytes(plan.size - done)
        on_run(report)


# -- worker processes ------------------------------------------------------------------------------------
def default_jobs() -> int:
    """1.5x the CPU count: a run is not all CPU (its checkpoint bytes are copied by the kernel, its files
    are read from disk), and with more runs in flight than cores the last runs share the cores instead
    of one finishing alone on a core while the others idle (3 runs on 2 cores: 9.4-10.8 s at 3 jobs
    vs 11.1-12.2 s at 2, benchmarks/results/migrate.md)."""
    return max(1, math.ceil(1.5 * (os.cpu_count() or 1)))


# The workers come from a fork server that has imported this module once: each worker
# starts in milliseconds, and unlike a plain fork() it never copies a parent holding locks of other
# threads (the rich progress thread writes to stderr). Neither torch nor Lightning is imported there:
# see rawtensors and loopstate.
_WORKER_PRELOAD = ["lightning_track.migrate.convert"]
_worker_queue: Any = None
_worker_busy = threading.Event()


def _interrupt(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # one interrupt: let the staging clean-up finish
    raise KeyboardInterrupt


def _watch_parent() -> None:
    """Stop this worker when the migrating process is gone (SIGKILL): no orphan finishing runs behind a re-run.

    The parent's sentinel is a pipe that only the parent holds open, so it becomes ready exactly when
    the parent ends (the fork server in between does not keep it alive).
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    parent.join()
    if _worker_busy.is_set():
        os.kill(os.getpid(), signal.SIGINT)  # the run in flight removes its staging folder
        for _ in range(600):
            if not _worker_busy.is_set():
                break
            threading.Event().wait(0.05)
    os._exit(1)


def _worker_init(progress: Any) -> None:
    global _worker_queue
    _worker_queue = progress
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # idle: a Ctrl-C is the parent's business
    threading.Thread(target=_watch_parent, daemon=True).start()


def _worker_convert(index: int, plan: PlannedRun, out: Path, options: MigrateOptions) -> RunReport:
    progress = _worker_queue
    progress.put(("start", index, os.getpid()))
    _worker_busy.set()
    signal.signal(signal.SIGINT, _interrupt)
    try:
        return convert_run(plan, out, options, lambda n: progress.put(("bytes", index, n)), tidy_staging=False)
    except KeyboardInterrupt:  # the staging folder is already removed
        return RunReport(str(plan.legacy.path), str(plan.target), STATUS_FAILED,
                         f"{plan.legacy.path}: interrupted; re-run lt-migrate to convert it", bytes=plan.size)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _worker_busy.clear()


def _convert_in_workers(plans: list[PlannedRun], todo: list[int], out: Path, options: MigrateOptions, jobs: int,
                        reports: list[RunReport | None], on_bytes: ProgressFn,
                        on_run: Callable[[RunReport], None]) -> list[int]:
    """Convert ``plans[i]`` for each ``i`` in ``todo`` in up to ``jobs`` worker processes.

    Progress comes back through a queue; a run's bytes are topped up to its planned size when it
    ends. On an interrupt the runs in flight are interrupted too (each removes its staging folder)
    and waited for, so no half run is left behind. Returns the runs no worker started because the
    pool broke (workers that cannot start, e.g. ``python -`` has no main file to re-import): the
    caller converts those in this process.
    """
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_WORKER_PRELOAD)
    progress = ctx.Queue()
    received = dict.fromkeys(todo, 0)
    running: dict[int, int] = {}  # index -> worker pid
    started: set[int] = set()
    finished: set[int] = set()
    not_started: list[int] = []

    def drain() -> None:
        while True:
            try:
                kind, index, value = progress.get_nowait()
            except queue.Empty:
                return
            if index in finished:
                continue
            if kind == "start":
                running[index] = value
                started.add(index)
            else:
                received[index] += value
                on_bytes(value)

    # A Ctrl-C only sets a flag that the loop below checks: a KeyboardInterrupt raised at any point
    # (inside the executor's or the queue's locks) could deadlock the shutdown that must follow it.
    interrupted = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.set())
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=ctx, initializer=_worker_init,
                               initargs=(progress,))
    try:
        # largest runs first: the last run to start is a small one, so no worker idles long at the end
        order = sorted(todo, key=lambda i: -plans[i].size)
        futures: dict[Future[RunReport], int] = {pool.submit(_worker_convert, i, plans[i], out, options): i
                                                 for i in order}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
            drain()
            if interrupted.is_set():
                raise KeyboardInterrupt
            for future in done:
                i = futures[future]
                plan = plans[i]
                try:
                    report = future.result()
                except Exception as exc:  # noqa: BLE001 - a worker that died (killed, out of memory)
                    if isinstance(exc, BrokenProcessPool) and i not in started:
                        finished.add(i)
                        not_started.append(i)
                        continue
                    report = RunReport(str(plan.legacy.path), str(plan.target), STATUS_FAILED,
                                       f"{plan.legacy.path}: worker process failed ({type(exc).__name__}: {exc});"
                                       " re-run lt-migrate to convert it", bytes=plan.size)
                finished.add(i)
                running.pop(i, None)
                if plan.size > received[i]:
                    on_bytes(plan.size - received[i])
                reports[i] = report
                on_run(report)
    except BaseException:
        drain()
        for pid in running.values():
            try:
                os.kill(pid, signal.SIGINT)
            except OSError:
                pass
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        progress.close()
        _remove_empty(RunLayout.staging_dir(out, "x", TOOL).parent)
    return sorted(not_started)
