"""One run folder into one W&B run, written offline by W&B's own SDK (the ``wandb`` extra), for
``wandb sync`` to upload unchanged. No account, no network: the SDK runs in offline mode.

What goes where (docs/export.md says it for users): the redacted config (nested, as ``config.yaml``);
every ``metrics.jsonl`` record as history at its own step, with its time as ``_timestamp``; the final
and best values of ``summary.json`` as the summary (``best/<key>``, ``best_step/<key>``), with the
status, reason and attempts as ``lt/...``; our tags and notes; ``logs.txt`` as W&B's console
(``output.log``); the status as the exit code; the folder name as the run name, the dataset as the
project (``--experiment`` to choose), the method as the group.

W&B's history only goes forward: a row's ``_step`` must be larger than the last one. Each export writes
one offline *segment* (``wandb/offline-run-<time>-<id>[-partN]``, the same run id every time; ``wandb sync`` uploads
a run's segments in order, as it does for a resumed run) holding only what is new, its records sorted
by step and merged into one row per step. Exactly once:

* a running run's last step is held back (more values of it may come) and sent by the next export;
* a record that arrives at a step at or below one already written, and a ``metrics.jsonl`` that a resume
  rewrote (records moved aside), cannot be added to a forward-only history: the W&B run is written
  again from the start under a new id; segments of the old id not yet synced are removed (they are
  made from the folder, which stays the truth), and one line names an old id ``wandb sync`` already
  uploaded, to delete on the server;
* a segment being written is recorded as ``pending`` first; an export that was interrupted leaves it
  half-written, and the next export removes it before writing it again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import string
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ExportError, JsonlProblem, one_line
from ..folder.layout import RunLayout
from ..folder.records import MetricRecord, read_metrics_since
from ..query.runs import RunInfo
from ..redaction import redact
from ..vocabulary import COMPLETED, CRASHED, FAILED, INTERRUPTED, RUNNING, STALLED, iso_time
from .record import SentFile
from .target import Target

__all__ = ["WandbExporter", "HistoryRow", "history_rows", "held_back", "exit_code", "run_summary", "run_config",
           "new_run_id", "wandb_settings", "offline_env", "console_feed"]

EXIT_CODES = {COMPLETED: 0, RUNNING: 0, STALLED: 0, FAILED: 1, INTERRUPTED: 130, CRASHED: 137}  # 128 + SIGINT/KILL
_ENV = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DISABLE_GIT": "true",
        "WANDB_DISABLE_CODE": "true", "WANDB_CONSOLE": "wrap_raw"}


# -- pure rules ------------------------------------------------------------------------------------
@dataclass
class HistoryRow:
    """One W&B history row: every value logged at ``step``, at the time the last of them was logged."""

    step: int
    time: float
    values: dict[str, float] = field(default_factory=dict)


def history_rows(records: list[MetricRecord]) -> tuple[list[HistoryRow], int]:
    """``records`` as history rows in step order, one per step (records of different metrics at one step
    merged), and how many values a later, different value of the same metric at the same step replaced
    (W&B keeps one value per key and step: the later one, as ``summary.json``'s final does)."""
    rows: dict[int, HistoryRow] = {}
    replaced = 0
    for record in records:
        row = rows.get(record.step)
        if row is None:
            row = rows[record.step] = HistoryRow(record.step, record.time)
        replaced += sum(1 for key, value in record.metrics.items()
                        if key in row.values and not _same(row.values[key], value))
        row.values.update(record.metrics)
        row.time = max(row.time, record.time)
    return [rows[step] for step in sorted(rows)], replaced


def _same(a: float, b: float) -> bool:
    return a == b or (a != a and b != b)  # NaN is NaN


def held_back(records: list[MetricRecord], running: bool) -> int:
    """How many of ``records`` are sent now: for a running run, all but the trailing records at the last
    step (more values of that step may still come, and W&B cannot add to a row already written)."""
    if not running or not records:
        return len(records)
    last = records[-1].step
    cut = len(records)
    while cut and records[cut - 1].step == last:
        cut -= 1
    return cut


def exit_code(status: str) -> int:
    """The exit code W&B is given: 0 for completed (and for a running run's segment), else non-zero."""
    return EXIT_CODES.get(status, 1)


def run_summary(run: RunInfo) -> dict[str, Any]:
    """The run's summary as W&B keys: ``summary.json``'s final values under their own names, its best
    values as ``best/<key>`` with their steps as ``best_step/<key>``, and ``lt/status``, ``lt/reason``,
    ``lt/attempts``."""
    summary: dict[str, Any] = {}
    for key in run.metric_names("final"):
        value = run.metric("final", key)
        if isinstance(value, (int, float)):
            summary[key] = value
    best = run.summary.get("best") if isinstance(run.summary.get("best"), dict) else {}
    for key, entry in best.items():
        value = run.metric("best", key)
        if isinstance(value, (int, float)):
            summary[f"best/{key}"] = value
            if isinstance(entry, dict) and isinstance(entry.get("step"), int):
                summary[f"best_step/{key}"] = entry["step"]
    attempts = run.summary.get("attempts")
    summary["lt/status"] = run.status
    summary["lt/attempts"] = len(attempts) if isinstance(attempts, list) and attempts else 1
    if run.why:
        summary["lt/reason"] = redact(run.why)
    return summary


def run_config(run: RunInfo) -> dict[str, Any]:
    """The run's config as ``config.yaml`` nests it, secrets redacted (again: migrated or hand-made files
    may hold them); an unreadable file gives ``{}`` (the run's problems say why)."""
    path = run.path / RunLayout.CONFIG
    if not path.is_file():
        return {}
    try:
        import yaml

        data = yaml.load(path.read_bytes(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except Exception:  # noqa: BLE001 - RunInfo.config reports the same file as a problem
        return {}
    return redact(data) if isinstance(data, dict) else {}


def new_run_id() -> str:
    """A fresh W&B run id (eight lower-case letters and digits, as W&B makes them)."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


# -- W&B's SDK -------------------------------------------------------------------------------------
@contextmanager
def offline_env() -> Iterator[None]:
    """W&B's variables for offline mode while the SDK runs: no network, no prompt, no messages, and no
    git or code capture of the exporting process (the run's own commit comes from its meta.json)."""
    before = {k: os.environ.get(k) for k in _ENV}
    os.environ.update(_ENV)
    level = logging.getLogger("wandb").level
    logging.getLogger("wandb").setLevel(logging.WARNING)
    try:
        yield
    finally:
        logging.getLogger("wandb").setLevel(level)
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def wandb_settings(run_meta: Mapping[str, Any], host: str) -> Any:
    """``wandb.Settings`` for a run written from its folder: offline, console through :func:`console_feed`
    only, none of the writing machine's metadata or system samples (they would be false), the run's host,
    commit and program from its meta.json."""
    import wandb

    git = run_meta.get("git") if isinstance(run_meta.get("git"), dict) else {}
    argv = run_meta.get("argv") if isinstance(run_meta.get("argv"), list) else []
    options: dict[str, Any] = {
        "mode": "offline", "console": "wrap_raw", "silent": True, "x_disable_stats": True, "x_disable_meta": True,
        "x_disable_machine_info": True, "x_save_requirements": False, "disable_git": True, "save_code": False,
        "disable_code": True, "host": host or None, "git_commit": git.get("commit") or None,
        "git_remote_url": redact(git.get("remote")) if git.get("remote") else None,
        "program": str(argv[0]) if argv else None,
    }
    return wandb.Settings(**{k: v for k, v in options.items() if v is not None})


def console_feed(wb_run: Any) -> Callable[[str, str], None]:
    """A function ``(stream, text)`` that writes ``text`` as the run's console (its ``output.log``).

    Why not W&B's own capture: it takes this process's stdout, which is not the run's console. W&B's
    console setting stays on (its core then writes ``output.log``) and its capture is taken off again at
    once; the text goes the way captured text goes (the run's raw-console callback)."""
    restore = getattr(wb_run, "_restore", None)
    feed = getattr(wb_run, "_console_raw_callback", None)
    if restore is None or feed is None:
        raise ExportError("this wandb version has no raw console callback (wandb 0.2x-0.3x have it); "
                          "pip install 'lightning-track[wandb]'")
    restore()
    return feed


def _import_wandb() -> Any:
    try:
        import wandb
    except ImportError:
        raise ExportError("lt export --to wandb needs W&B's SDK: pip install 'lightning-track[wandb]'") from None
    return wandb


# -- the exporter ----------------------------------------------------------------------------------
class WandbExporter:
    """Writes offline W&B runs under ``<dir>/wandb/`` (``target.dir``; by default each run's own folder)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.wandb = _import_wandb()

    def close(self) -> None:
        pass

    def base_dir(self, run: RunInfo) -> Path:
        return Path(self.target.dir) if self.target.dir else run.path

    def export(self, run: RunInfo, entry: dict[str, Any], save: Callable[[], None], *, experiment: str | None,
               with_model: bool = False, with_checkpoints: bool = False, result: Any) -> None:
        """Bring the W&B run of ``run`` up to date with its folder: one new segment with what is new, or
        nothing when nothing is. ``entry`` is the export record's entry, saved with ``save``."""
        if with_model or with_checkpoints:
            result.notes.append("--with-model/--with-checkpoints: W&B runs get no files from lt export "
                                "(use W&B artifacts); sent without them")
        with offline_env():
            self._export(run, entry, save, experiment, result)

    def _export(self, run: RunInfo, entry: dict[str, Any], save: Callable[[], None], experiment: str | None,
                result: Any) -> None:
        layout, base = run.layout, self.base_dir(run)
        wandb_dir = base / RunLayout.WANDB  # W&B's own folder under the dir it is given
        self._drop_pending(entry, wandb_dir)
        sent = entry.setdefault("sent", {})
        metrics = SentFile(layout.metrics_jsonl, sent.get(RunLayout.METRICS_JSONL))
        logs = SentFile(layout.logs_txt, sent.get(RunLayout.LOGS))
        records, ends = self._read(metrics, result)
        run_id, why_new = entry.get("run_id"), None
        last = entry.get("last_step")
        if run_id:
            if metrics.rewritten or logs.rewritten:
                why_new = (f"a resume rewrote {metrics.path.name if metrics.rewritten else logs.path.name} (records "
                           f"moved aside) and a W&B history cannot take rows back")
            elif last is not None and records and min(r.step for r in records) <= last:
                late = min(r.step for r in records)
                why_new = (f"a value at step {late} arrived after step {last} was written, and a W&B history "
                           f"only goes forward")
        if not run_id or why_new:
            old = {k: entry[k] for k in ("recreated",) if k in entry}
            if why_new:
                self._retire(entry, wandb_dir, why_new, old, result)
            entry.clear()
            entry.update(old)
            entry.update({"tracker": "wandb", "run_id": new_run_id(), "dir": str(base), "segments": []})
            sent = entry.setdefault("sent", {})
            if metrics.bytes or logs.bytes or metrics.rewritten or logs.rewritten:  # from the start again
                metrics, logs = SentFile(layout.metrics_jsonl, None), SentFile(layout.logs_txt, None)
                records, ends = self._read(metrics, result)
        running = run.status in (RUNNING, STALLED)
        cut = held_back(records, running)
        to_send = records[:cut]
        console = self._console(logs)
        project = entry.get("project") or experiment or run.dataset  # a W&B run stays in its project
        if experiment and experiment != project:
            result.notes.append(f"--experiment {experiment!r} ignored: the W&B run {entry['run_id']} is in "
                                f"project {project!r} (wandb sync --project chooses where it is uploaded)")
        config, tags, notes, summary = run_config(run), sorted(run.tags), run.notes, run_summary(run)
        state = {"config": _digest(config), "tags": tags, "notes": _digest(notes), "summary": _digest(summary),
                 "exit_code": exit_code(run.status)}
        result.run_id = entry["run_id"]
        if not to_send and not console[0] and state == entry.get("state"):
            return  # nothing new: no segment
        rows, replaced = history_rows(to_send)
        segment = self._write(run, entry, save, base, project, config, tags, notes, summary, rows, console[0])
        if to_send:
            metrics.advance(ends[cut - 1], cut)
            entry["last_step"] = rows[-1].step
        if console[0]:
            logs.advance(console[1], console[0].count("\n"))
        if replaced:
            entry["replaced_at_same_step"] = entry.get("replaced_at_same_step", 0) + replaced
            result.notes.append(f"{replaced} values logged twice at one step: W&B keeps the later one")
        entry["segments"].append(segment)
        entry.pop("pending", None)
        sent[RunLayout.METRICS_JSONL], sent[RunLayout.LOGS] = metrics.entry(), logs.entry()
        entry.update({"project": project, "state": state, "exported_at": iso_time()})
        result.values += sum(len(row.values) for row in rows)
        result.files += 1  # the segment
        result.link = str(base / RunLayout.WANDB / segment)
        if entry.get("status") != state["exit_code"]:
            entry["status"] = state["exit_code"]
            result.status = f"exit code {state['exit_code']}"
        save()

    # -- steps -----------------------------------------------------------------------------------
    @staticmethod
    def _read(sent: SentFile, result: Any) -> tuple[list[MetricRecord], list[int]]:
        if not sent.path.exists():
            return [], []
        problems: list[JsonlProblem] = []
        ends: list[int] = []
        records, _ = read_metrics_since(sent.path, sent.bytes, problems, ends=ends)
        result.notes.extend(str(problem) for problem in problems)
        return records, ends

    @staticmethod
    def _console(logs: SentFile) -> tuple[str, int]:
        """The whole lines of ``logs.txt`` not sent yet, and the offset after them."""
        if not logs.path.exists():
            return "", logs.bytes
        with open(logs.path, "rb") as handle:
            handle.seek(logs.bytes)
            body = handle.read()
        end = body.rfind(b"\n") + 1
        return body[:end].decode("utf-8", errors="replace"), logs.bytes + end

    def _drop_pending(self, entry: dict[str, Any], wandb_dir: Path) -> None:
        """A segment an interrupted export left half-written: removed, to be written again."""
        pending = entry.pop("pending", None)
        if pending:
            shutil.rmtree(wandb_dir / pending, ignore_errors=True)

    def _retire(self, entry: dict[str, Any], wandb_dir: Path, why: str, kept: dict[str, Any], result: Any) -> None:
        """The old id's segments: removed when not synced yet; an uploaded one is named for deletion."""
        old_id = entry.get("run_id")
        uploaded = []
        for segment in entry.get("segments", []):
            folder = wandb_dir / segment
            if (folder / f"run-{old_id}.wandb.synced").exists():
                uploaded.append(segment)
            else:
                shutil.rmtree(folder, ignore_errors=True)
        line = f"{why}: the W&B run {old_id} is written again under a new id"
        if uploaded:
            line += f" (wandb sync already uploaded {old_id}: delete it on the W&B server)"
        kept.setdefault("recreated", []).append({"at": iso_time(), "old_run_id": old_id, "why": why,
                                                 "uploaded": uploaded})
        result.notes.append(line)

    def _write(self, run: RunInfo, entry: dict[str, Any], save: Callable[[], None], base: Path, project: str,
               config: dict[str, Any], tags: list[str], notes: str, summary: dict[str, Any],
               rows: list[HistoryRow], console: str) -> str:
        """One offline segment: init (resuming the id after the first), history, console, summary, exit."""
        try:
            return self._segment(run, entry, save, base, project, config, tags, notes, summary, rows, console)
        except (ExportError, KeyboardInterrupt, OSError):
            raise
        except Exception as exc:  # noqa: BLE001 - the SDK's own errors: one line, nothing recorded as sent
            raise ExportError(f"{run.name}: W&B's SDK failed ({one_line(exc)}); nothing new recorded, "
                              "run lt export again") from None

    def _segment(self, run: RunInfo, entry: dict[str, Any], save: Callable[[], None], base: Path, project: str,
                 config: dict[str, Any], tags: list[str], notes: str, summary: dict[str, Any],
                 rows: list[HistoryRow], console: str) -> str:
        wandb = self.wandb
        base.mkdir(parents=True, exist_ok=True)
        first = not entry["segments"]
        settings = wandb_settings(run.meta, run.host)
        if not first:  # W&B names the folder by the second: two segments in one second would share it
            settings.x_sync_dir_suffix = f"part{len(entry['segments']) + 1}"
        wb_run = wandb.init(dir=str(base), project=project, id=entry["run_id"], name=run.name,
                            group=run.method or None, job_type="train", tags=tags, notes=notes or None,
                            config=config, resume=None if first else "allow", settings=settings)
        try:
            segment = Path(wb_run.settings.sync_dir).name
            entry["pending"] = segment
            save()
            feed = console_feed(wb_run)
            for row in rows:
                wb_run.log({**row.values, "_timestamp": row.time}, step=row.step)
            if console:
                feed("stdout", console)
            wb_run.summary.update(summary)
        except BaseException:
            wb_run.finish(exit_code=1)
            raise
        wb_run.finish(exit_code=exit_code(run.status))
        return segment
