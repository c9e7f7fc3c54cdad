"""Finding run folders and reading what a person asks of them first.

A root may be a run folder, a ``runs/`` folder, or a mirror that ``lt-sync`` filled from several
servers (``mirror/gpu1/<run>``: :mod:`.discover`; the ``source`` of a run says which server). Unreadable
parts (a torn ``summary.json``, a folder that is not a run) become one-line ``problems``; the other runs
are still read.

Status is the summary's word, except that a ``running`` run whose heartbeat is older than
``stale_after`` seconds (or whose process, on this host, is gone) is ``crashed``: the process died
without a word (SIGKILL, OOM, a lost node). A ``running`` run whose heartbeat is fresh but whose step
has not advanced beyond its ``stall_rule`` (:func:`lightning_track.vocabulary.stalled_for`) is ``stalled``:
alive, not training (a collective waiting on a lost or partitioned node).
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from ..errors import RunFolderError
from ..folder.exports import EXPORT_RECORDS, export_cell, read_exports
from ..folder.fileio import read_json, restore_nonfinite
from ..folder.gcpause import collector_paused
from ..folder.layout import RunLayout, parse_run_name
from ..vocabulary import CRASHED, RUN_STATUSES, RUNNING, STALLED, UNKNOWN, parse_iso_time
from .annotations import effective_notes, effective_tags, read_annotations
from .config_read import config_batch, config_pending, read_config
from .discover import find_run_dirs, folder_identity, list_names
from .filters import MISSING, Filter, parse_filter
from .stall import stall_reason

__all__ = ["RunInfo", "find_runs", "read_run", "judge_status", "judged", "filter_runs",
           "metric_table_problems", "STALE_AFTER_S"]

STALE_AFTER_S = 120.0  # heartbeat every 5 s, plus a mirror's lag (lt-sync --every 30 and the copy itself)


def _time(text: Any) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return parse_iso_time(text)
    except ValueError:
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by someone else
    return True


def _ago(seconds: float) -> str:
    from .format import format_duration

    return format_duration(seconds)


def judge_status(summary: dict[str, Any], *, now: float, stale_after: float = STALE_AFTER_S,
                 this_host: str | None = None, pid_alive: Callable[[int], bool] = _pid_alive) -> tuple[str, str]:
    """``(status, why)`` of a run from its summary: ``crashed`` for a running run that went silent."""
    status = summary.get("status")
    if status not in RUN_STATUSES:
        return UNKNOWN, f"summary.json has status {status!r}" if status is not None else "summary.json has no status"
    failure = summary.get("failure") if isinstance(summary.get("failure"), dict) else {}
    if status != RUNNING:
        reason = summary.get("reason") or failure.get("reason") or ""
        return status, " ".join(str(reason).split())
    beat = _time(summary.get("heartbeat")) or _time(summary.get("start_time"))
    attempts = summary.get("attempts") if isinstance(summary.get("attempts"), list) else []
    last = attempts[-1] if attempts and isinstance(attempts[-1], dict) else {}
    host, pid = last.get("host"), last.get("pid")
    if this_host is not None and host == this_host and isinstance(pid, int) and not pid_alive(pid):
        since = f"; last heartbeat {_ago(now - beat)} ago" if beat else ""
        return CRASHED, f"process {pid} on {host} is gone{since}"
    if beat is None:
        return RUNNING, ""
    if now - beat > stale_after:
        return CRASHED, f"no heartbeat for {_ago(now - beat)} (the process died without finishing the run)"
    why = stall_reason(summary, now=now)
    return (STALLED, why) if why else (RUNNING, "")


@dataclass
class RunInfo:
    """One run as read from its folder: the summary, meta and annotations, and the verdict on them."""

    path: Path
    source: str = ""  # folders between the root and the run, e.g. a mirror's per-server folder
    summary: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    annotations: dict[str, Any] | None = None
    exports: list[dict[str, Any]] = field(default_factory=list)  # where it was exported (folder/exports.py)
    status: str = UNKNOWN
    why: str = ""
    problems: list[str] = field(default_factory=list)
    now: float = 0.0
    _config: dict[str, Any] | None = None
    # the catalog's flattened config and the stat it was read under; and where a newly parsed one goes
    _config_hint: tuple[str, bytes] | None = field(default=None, repr=False, compare=False)
    _config_sink: Callable[[RunInfo, os.stat_result, dict[str, Any], bytes | None], None] | None = field(
        default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.path)

    def _parts(self) -> tuple[str, str]:
        parsed = parse_run_name(self.name)
        prefix = parsed.prefix if parsed else self.name
        dataset, _, method = prefix.partition("_")
        return dataset, method

    @cached_property
    def dataset(self) -> str:
        return str(self.summary.get("dataset") or self.meta.get("dataset") or self._parts()[0])

    @cached_property
    def method(self) -> str:
        return str(self.summary.get("method") or self.meta.get("method") or self._parts()[1])

    @cached_property
    def start(self) -> float | None:
        found = _time(self.summary.get("start_time")) or _time(self.meta.get("created"))
        if found is None:
            parsed = parse_run_name(self.name)
            found = parsed.started.timestamp() if parsed else None
        return found

    @cached_property
    def end(self) -> float | None:
        if self.status == CRASHED:
            return _time(self.summary.get("heartbeat"))
        return _time(self.summary.get("end_time")) if self.status not in (RUNNING, STALLED) else None

    @cached_property
    def wall_span(self) -> float | None:
        """Seconds from the first start to the last end (to now while running): waits between attempts count."""
        start = self.start
        if self.status in (RUNNING, STALLED) and start is not None:
            return max(0.0, self.now - start)
        value = self.summary.get("wall_span_s")
        if isinstance(value, (int, float)) and self.status != CRASHED:
            return float(value)
        end = self.end
        return end - start if end is not None and start is not None else None

    @cached_property
    def training_time(self) -> float | None:
        """Seconds the attempts trained, summed (``duration_s`` in runs written before it had this name)."""
        for key in ("training_time_s", "duration_s"):
            value = self.summary.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
        return None

    @cached_property
    def host(self) -> str:
        attempts = self.summary.get("attempts")
        last = attempts[-1] if isinstance(attempts, list) and attempts and isinstance(attempts[-1], dict) else {}
        return str(self.meta.get("host") or last.get("host") or "")

    @cached_property
    def tags(self) -> list[str]:
        return effective_tags(self.summary, self.annotations)

    @cached_property
    def notes(self) -> str:
        return effective_notes(self.summary, self.annotations)

    @cached_property
    def failure(self) -> dict[str, Any]:
        failure = self.summary.get("failure")
        return failure if isinstance(failure, dict) else {}

    def metric(self, which: str, key: str) -> Any:
        """``best``/``final`` value of ``key`` (a float, NaN included), or MISSING."""
        table = self.summary.get(which)
        entry = table.get(key) if isinstance(table, dict) else None
        if not isinstance(entry, dict) or "value" not in entry:
            return MISSING
        value = restore_nonfinite(entry["value"])
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    def metric_names(self, which: str = "final") -> list[str]:
        table = self.summary.get(which)
        return list(table) if isinstance(table, dict) else []

    @property
    def config(self) -> dict[str, Any]:
        """The flattened ``config.yaml`` (``{"model.lr": 0.01}``), read once; a broken file is a problem."""
        return self._config if self._config is not None else read_config(self)

    def config_pending(self, keys: Sequence[str] = ()) -> tuple[RunInfo, str, os.stat_result] | None:
        """``(self, path, stat)`` when the config must be parsed from its file (:mod:`.config_read`)."""
        return config_pending(self)

    def value(self, key: str) -> Any:
        """The value behind a filter, column or sort key, or MISSING (see :mod:`.filters`)."""
        simple = _FIELDS.get(key)
        if simple is not None:
            found = simple(self)
            return MISSING if found is None or found == "" and key not in ("source",) else found
        head, _, rest = key.partition(".")
        if head in ("best", "final") and rest:
            return self.metric(head, rest)
        if head in ("summary", "meta") and rest:
            return _dig(self.summary if head == "summary" else self.meta, rest)
        if head == "config" and rest:
            key = rest
        return self.config.get(key, MISSING)

    def record(self, *, metrics: bool = True, config: bool = False) -> dict[str, Any]:
        """Plain fields for ``--json`` and DataFrames: times as ISO text, metrics as ``best``/``final``."""
        start, end = self.start, self.end
        data: dict[str, Any] = {
            "name": self.name, "path": str(self.path), "source": self.source, "dataset": self.dataset,
            "method": self.method, "status": self.status, "why": self.why,
            "start": _iso(start), "end": _iso(end), "wall_span_s": _round(self.wall_span),
            "training_time_s": _round(self.training_time),
            "last_step": self.summary.get("last_step"), "host": self.host, "tags": self.tags, "notes": self.notes,
            "exp_id": self.summary.get("exp_id"), "failure": self.failure or None,
            "attempts": len(self.summary.get("attempts") or []) or None, "exports": self.exports,
        }
        if metrics:
            for which in ("best", "final"):
                data[which] = {k: _json_float(self.metric(which, k)) for k in self.metric_names(which)}
        if config:
            data["config"] = self.config
        if self.problems:
            data["problems"] = list(self.problems)
        return data


def _dig(tree: Any, dotted: str) -> Any:
    if isinstance(tree, dict) and dotted in tree:
        return tree[dotted]
    head, _, rest = dotted.partition(".")
    if isinstance(tree, dict) and head in tree and rest:
        return _dig(tree[head], rest)
    return MISSING


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _json_float(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return None if value is MISSING else value


_FIELDS: dict[str, Callable[[RunInfo], Any]] = {
    "name": lambda r: r.name, "path": lambda r: str(r.path), "source": lambda r: r.source,
    "dataset": lambda r: r.dataset, "method": lambda r: r.method, "status": lambda r: r.status,
    "why": lambda r: r.why, "reason": lambda r: r.why, "start": lambda r: r.start, "end": lambda r: r.end,
    "wall_span": lambda r: r.wall_span, "training_time": lambda r: r.training_time,
    "age": lambda r: None if r.start is None else r.now - r.start,
    "step": lambda r: r.summary.get("last_step"), "host": lambda r: r.host, "tag": lambda r: r.tags,
    "notes": lambda r: r.notes, "exp_id": lambda r: r.summary.get("exp_id"),
    "check": lambda r: r.failure.get("check"), "failure": lambda r: r.failure or None,
    "attempts": lambda r: len(r.summary.get("attempts") or []) or None,
    "migrated": lambda r: bool(r.summary.get("migrated") or r.meta.get("migrated_from")),
    "pipeline": lambda r: _pipeline_cell(r),
    "exported": lambda r: bool(r.exports),
    "export": lambda r: export_cell(r.exports),
}


def _pipeline_cell(run: RunInfo) -> str | None:
    """``<pipeline>/<step>: <state>`` of the pipeline step that made the run (state files beside the runs)."""
    from .pipelines import pipeline_step

    step = pipeline_step(run.path, run.summary.get("exp_id"))
    return None if step is None else f"{step['pipeline']}/{step['step']}: {step['state']}"
FIELD_NAMES = tuple(_FIELDS)


def metric_table_problems(summary: dict[str, Any], path: Path) -> list[str]:
    """Take out of ``summary`` the ``best``/``final`` parts that are not ``{metric: {"value": ...}}``;
    one line for each, naming the file and the key (a hand edit or another tool's file, never a crash)."""
    problems: list[str] = []
    for which in ("final", "best"):
        table = summary.get(which)
        if table is None:
            continue
        if not isinstance(table, dict):
            del summary[which]
            problems.append(f"{path}: {which!r} is a {type(table).__name__}, expected an object of metrics; ignored")
            continue
        for key in [k for k, entry in table.items() if not isinstance(entry, dict) or "value" not in entry]:
            shown = repr(table.pop(key))
            shown = shown if len(shown) <= 40 else shown[:39] + "…"
            problems.append(f"{path}: {which}.{key} is {shown}, expected {{\"value\": ..., \"step\": ...}}; ignored")
    return problems


def read_run(path: str | Path, source: str = "", names: set[str] | None = None, *, now: float | None = None,
             stale_after: float = STALE_AFTER_S, this_host: str | None = None) -> RunInfo:
    """One run's summary, meta and annotations; what cannot be read is a problem on the run."""
    path = Path(path)
    names = list_names(path) if names is None else names
    if names is None:
        raise RunFolderError(f"{path}: not a folder")
    info = RunInfo(path, source, now=time.time() if now is None else now)
    for attr, filename in (("summary", RunLayout.SUMMARY), ("meta", RunLayout.META)):
        if filename not in names:
            if filename == RunLayout.SUMMARY:
                info.problems.append(f"{path / filename}: missing (a run that never started, or not a run)")
            continue
        try:
            data = read_json(path / filename)
        except (ValueError, OSError) as exc:
            info.problems.append(f"{' '.join(str(exc).split())}" if str(path) in str(exc)
                                 else f"{path / filename}: {exc}")
            continue
        if isinstance(data, dict):
            setattr(info, attr, data)
            if attr == "summary":
                info.problems += metric_table_problems(data, path / filename)
        else:
            info.problems.append(f"{path / filename}: expected a JSON object")
    if RunLayout.ANNOTATIONS in names:
        try:
            info.annotations = read_annotations(path)
        except RunFolderError as exc:
            info.problems.append(str(exc))
    info.exports = read_exports(path, names, info.problems) if names & set(EXPORT_RECORDS) else []
    return judged(info, stale_after=stale_after, this_host=this_host)


def judged(info: RunInfo, *, stale_after: float = STALE_AFTER_S, this_host: str | None = None) -> RunInfo:
    """``info`` with its status and why set from its summary (see :func:`judge_status`)."""
    if info.summary:
        info.status, info.why = judge_status(info.summary, now=info.now, stale_after=stale_after,
                                             this_host=socket.gethostname() if this_host is None else this_host)
    else:
        info.why = "summary.json missing or unreadable"
    return info


@collector_paused()
def find_runs(roots: str | Path | Sequence[str | Path] = "runs", problems: list[str] | None = None, *,
              stale_after: float = STALE_AFTER_S, now: float | None = None, catalog: bool = True,
              lean: Any = None) -> list[Any]:
    """Every run under ``roots``, oldest first; without ``problems`` an unreadable root raises.

    ``catalog``: read through the catalog in the user's cache (:mod:`.catalog`), which re-reads only the
    runs that changed since the last look; the result is the same as a plain read of every run's files.
    A run the catalog had is a :class:`~.catalog_rows.CatalogRun` (a RunInfo built on first use); with
    ``lean`` (a :class:`~.catalog_kept.Kept`, one root) its unchanged ended runs are only keys there."""
    roots = [roots] if isinstance(roots, (str, os.PathLike)) else list(roots)
    sink: list[str] = [] if problems is None else problems
    now = time.time() if now is None else now
    host = socket.gethostname()
    runs: list[RunInfo] = []
    seen: set[Any] = set()
    notes: list[str] = []  # the catalog's own warnings: never a reason to raise
    from .catalog import KEPT, Claimed, keep_frame, open_catalog

    book = open_catalog(notes) if catalog else None
    rows = None
    if book is not None:
        from .catalog_rows import RowSource

        def build(path: Path, source: str, **parts: Any) -> RunInfo:
            return judged(RunInfo(path, source, now=now, **parts), stale_after=stale_after, this_host=host)

        def reread(path: Path, source: str) -> RunInfo:
            return read_run(path, source, now=now, stale_after=stale_after, this_host=host)

        rows = RowSource(book.path, build, reread, book.config_sink, FIELD_NAMES, keep_frame)
        if lean is not None:
            book.lean, lean.rows = lean, rows
    try:
        for root in roots:
            before = len(sink)
            if book is not None:
                book.load_root(root)
                listing = book.lister if lean is None or lean.feed is None else \
                    lean.feed.lister(book.lister, book._stats, book._known)
            for path, source, names in find_run_dirs(root, sink, **({"lister": listing, "claim": book.claim}
                                                                     if book else {})):
                if book is not None and isinstance(names, Claimed):  # an ended run as kept: no Path, no read
                    if names.identity not in seen:
                        seen.add(names.identity)
                        runs.append(book.claimed(path, source, names, rows))
                    continue
                key = folder_identity(path, book.stat_of(path) if book is not None else None)
                if key in seen:
                    continue
                seen.add(key)
                def read(path: Path = path, source: str = source, names: set[str] = names) -> RunInfo:
                    return read_run(path, source, names, now=now, stale_after=stale_after, this_host=host)
                found = read() if book is None else book.run(path, source, names, read, rows)
                if found is not KEPT:
                    runs.append(found)
            if problems is None and len(sink) > before:
                raise RunFolderError(sink[before])
    finally:
        if book is not None:
            book.save()
    sink.extend(notes)
    for run in runs:
        found = run.problems
        if found:  # most runs have none: no generator for them
            sink.extend(f"run {run.name}: {p}" if run.name not in p else p for p in found)
    runs.sort(key=lambda r: (r.start or 0.0, r.name))
    return runs


def filter_runs(runs: Iterable[RunInfo], filters: str | Filter | Sequence[str | Filter] | None) -> list[RunInfo]:
    """The runs that match every filter (strings are parsed: a bad one raises :class:`FilterError`)."""
    if filters is None:
        return list(runs)
    items = [filters] if isinstance(filters, (str, Filter)) else list(filters)
    parsed = [f if isinstance(f, Filter) else parse_filter(f) for f in items]
    runs = runs if isinstance(runs, list) else list(runs)
    with config_batch(runs, [key for f in parsed for key in f.keys()]):  # configs to parse: parsed at once
        if len(parsed) == 1:  # the usual case: no generator a run
            return [run for run in runs if parsed[0].matches(run.value)]
        return [run for run in runs if all(f.matches(run.value) for f in parsed)]
