"""A SwanLab run, without network or prompt: one run serves SwanLab's local board *and* ``swanlab sync``.

Two SwanLab modes write a run to disk (``RunLogger(swanlab_mode=...)``, ``logger.swanlab_mode``):

* ``"local"``: what ``swanlab watch <run>/swanlab_logs`` shows (SwanLab's board, ``swanboard``, from
  ``pip install "swanlab[dashboard]"``): SwanLab writes its record (``run-*/run-*.swanlab``) and, beside
  it, the board's files (a SQLite ``runs.swanlab`` in ``swanlab_logs/``, one JSON-lines file per metric,
  ``console/``). The record is the very one offline mode writes, so ``swanlab sync`` uploads it all the same.
* ``"offline"``: the record only. Nothing for the board; no swanboard needed; less written per value.
  ``swanlab_logs/runs.swanlab`` is then a one-row stand-in for the board's database (:func:`write_board_hint`):
  ``swanlab watch <run>/swanlab_logs`` shows a project named after ``lt board <run>`` (which shows the run on
  SwanLab's board, fed from the folder) instead of SwanLab's "Cannot use uninitialized Proxy." error.
* ``"auto"`` (the default): ``"local"`` where swanboard (the version this SwanLab expects) is installed,
  else ``"offline"``. ``"local"`` without it is refused when the RunLogger is built.

The trade: local mode writes each value a second time (a line per value and a rewritten ``_summary.json``
per metric and flush, in the sink host process, off the training thread: ~0.6 s of CPU per 10,000 values
against ~0.3 s offline, see :func:`_lighten_board_writer`) and needs swanboard, which pins ``rich<14``.
The board's *stop* and *delete* buttons act on these files only: they never stop training (the record goes
on), and *delete* removes the SwanLab run folder, record included.

Besides the metrics and the config, the run gets the console: ``logs.txt``'s lines (with the times they
were printed) become SwanLab's console, shown by the board and uploaded by ``swanlab sync``; and system
samples arrive as ``system/...`` metrics like any other value.

Upload later with ``swanlab sync <run>/swanlab_logs/run-*``.

What the run says matches ``metrics.jsonl``: every value carries the time it was logged (not the time
the sink got to it, up to a flush interval or a slow start later), and a failed or interrupted run is
finished with the reason the writer was given.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import sqlite3
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..folder.fileio import temp_path
from ..folder.layout import RunLayout
from ..folder.media import IMAGE, TEXT, MediaRecord
from ..folder.records import MetricRecord
from ..vocabulary import COMPLETED, FAILED, INTERRUPTED, parse_iso_time
from .base import Sink, SinkContext

__all__ = ["SwanLabSink", "SWANLAB_MODES", "board_missing", "check_swanlab_mode", "swanlab_project_name",
           "write_board_hint"]

# SwanLab accepts only these characters in a project name.
_PROJECT_UNSAFE = re.compile(r"[^0-9a-zA-Z_\-+.]+")

AUTO, LOCAL, OFFLINE = "auto", "local", "offline"
SWANLAB_MODES = (AUTO, LOCAL, OFFLINE)


def board_missing() -> str | None:
    """None where SwanLab's local board (swanboard, the version this SwanLab pins) is installed, else why not."""
    from importlib.metadata import PackageNotFoundError, requires, version

    try:
        have, swanlab_version = version("swanboard"), version("swanlab")
    except PackageNotFoundError as exc:
        return f"{exc.name or 'swanboard'} is not installed (pip install \"swanlab[dashboard]\")"
    from packaging.requirements import InvalidRequirement, Requirement

    for line in requires("swanlab") or []:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if requirement.name == "swanboard" and have not in requirement.specifier:
            return (f"swanboard {have} is installed, SwanLab {swanlab_version} needs swanboard{requirement.specifier}"
                    f" (pip install \"swanlab[dashboard]=={swanlab_version}\")")
    return None


def check_swanlab_mode(mode: str) -> str:
    """``mode`` checked (one of :data:`SWANLAB_MODES`); ``"local"`` only where the board is installed."""
    if mode not in SWANLAB_MODES:
        raise ConfigError(f"swanlab_mode={mode!r}: use one of {', '.join(map(repr, SWANLAB_MODES))}"
                          " (auto: the local board where swanboard is installed, else offline)")
    why = board_missing() if mode == LOCAL else None
    if why:
        raise ConfigError(f"swanlab_mode='local' needs SwanLab's board, but {why}; or use swanlab_mode='offline'")
    return mode


def swanlab_project_name(dataset: str) -> str:
    """SwanLab project for a dataset: its name reduced to the characters SwanLab accepts."""
    return _PROJECT_UNSAFE.sub("-", dataset).strip("-") or "lightning_track"


# swanboard 0.1.10's project table, as its models create it: the board reads this row for its page title.
_PROJECT_TABLE = ('CREATE TABLE IF NOT EXISTS "project" ("id" INTEGER NOT NULL PRIMARY KEY,'
                  ' "name" VARCHAR(100) NOT NULL, "description" VARCHAR(255), "sum" INTEGER,'
                  ' "charts" INTEGER NOT NULL, "pinned_opened" INTEGER NOT NULL, "hidden_opened" INTEGER NOT NULL,'
                  ' "more" VARCHAR(255), "version" VARCHAR(30) NOT NULL, "create_time" VARCHAR(30) NOT NULL,'
                  ' "update_time" VARCHAR(30) NOT NULL)')


def write_board_hint(swanlab_dir: Path, run_dir: Path) -> None:
    """A stand-in for the board's database in an offline-mode ``swanlab_logs/``: ``swanlab watch`` on it opens
    an empty board whose project says ``lt board <run>``, where SwanLab would answer every request with
    "Get list experiments failed: Cannot use uninitialized Proxy." (its board finds no database and never
    binds its models). Written once, with the standard library (no swanboard needed); the board adds its
    other tables when it opens it. Never over an existing database."""
    from datetime import datetime, timezone

    target = swanlab_dir / RunLayout.SWANLAB_BOARD_DB
    if target.exists():
        return
    command = f"lt board {run_dir}"
    name = command if len(command) <= 100 else "lt board <this run folder>"
    description = (f"This SwanLab run was written in offline mode, without the board's files. {command} shows it"
                   " on SwanLab's board, beside any other run.")[:255]
    now = datetime.now(timezone.utc).isoformat()
    temp = temp_path(target)
    temp.unlink(missing_ok=True)
    with sqlite3.connect(temp) as db:
        db.execute(_PROJECT_TABLE)
        db.execute('CREATE UNIQUE INDEX IF NOT EXISTS "project_name" ON "project" ("name")')
        db.execute("INSERT INTO project (id, name, description, sum, charts, pinned_opened, hidden_opened, more,"
                   " version, create_time, update_time) VALUES (1, ?, ?, 0, 0, 1, 0, '', '0.1.10b2', ?, ?)",
                   (name, description, now, now))
    db.close()
    os.replace(temp, target)


# Our final statuses -> SwanLab's finish states.
_STATE = {COMPLETED: "success", FAILED: "crashed", INTERRUPTED: "aborted"}


@contextmanager
def _unwrapped_console(tips: bool = True) -> Iterator[None]:
    """SwanLab's messages on one line each while inside; ``tips=False``: without its notes.

    SwanLab prints through a rich console that wraps at the terminal's width, or at 80 columns in a
    log file, so the ``swanlab sync <path>`` it suggests arrives in pieces nobody can paste. Soft wrap
    leaves the wrapping to the terminal; a log keeps the line whole. At finish SwanLab repeats the
    ``swanlab watch``/``swanlab sync`` note it printed at init (``swanlab: ...`` lines, its ``info``):
    said once is enough, its warnings and errors still print. Scoped to our init and finish, so a
    user's own SwanLab messages in the same process print as they always did.
    """
    try:
        from swanlab.sdk.internal.pkg import console
    except ImportError:  # another SwanLab layout: its messages print as SwanLab makes them
        yield
        return
    rich_console = getattr(console, "c", None)
    if rich_console is None or not hasattr(rich_console, "soft_wrap"):
        yield
        return
    before, info = rich_console.soft_wrap, getattr(console, "info", None)
    rich_console.soft_wrap = True
    if not tips and info is not None:
        console.info = lambda *args, **kwargs: None
    try:
        yield
    finally:
        rich_console.soft_wrap = before
        if info is not None:
            console.info = info


class _TimedLog:
    """Logs values with the time they were logged, through the event SwanLab's own ``Run.log`` emits.

    ``Run.log`` has no time argument: it stamps each value with the time of the call, which here is
    when the batch reached this sink (a flush interval, or SwanLab's start-up, after the training step).
    The record SwanLab stores and syncs (``ScalarRecord.timestamp``) comes from the ``MetricLogEvent``
    that ``log`` puts on the run's event bus; emitting that event with the record's own time is all
    ``log`` does besides checks our records pass anyway (a dict, a step >= 0; a negative step still
    goes through ``log``, which refuses it as it always did). Where this SwanLab has no such bus,
    values go through ``Run.log`` (times of writing), with one warning.
    """

    def __init__(self, run: Any) -> None:
        self.run = run
        try:
            from google.protobuf.timestamp_pb2 import Timestamp
            from swanlab.sdk.internal.bus import MetricLogEvent
            from swanlab.sdk.internal.run import fmt

            self._emit = run._components.emitter.emit
            self._next_step = run._ctx.next_step
            self._lock = run._api_lock
        except (ImportError, AttributeError) as exc:
            import swanlab

            warnings.warn(f"SwanLab {getattr(swanlab, '__version__', '')}: cannot give logged values their own"
                          f" time ({exc!r}); SwanLab records the time they reached it instead",
                          RuntimeWarning, stacklevel=2)
            self.write = self._write_untimed  # type: ignore[method-assign]
            return
        self._timestamp, self._event, self._flatten = Timestamp, MetricLogEvent, fmt.flatten_dict

    def write(self, records: list[MetricRecord]) -> None:
        timestamp, event, flatten, emit, next_step = (self._timestamp, self._event, self._flatten, self._emit,
                                                      self._next_step)
        with self._lock:
            if not self.run.alive:
                raise RuntimeError("the SwanLab run is no longer active")
            for record in records:
                step = int(record.step)
                if step < 0:
                    self.run.log(dict(record.metrics), step=step)
                    continue
                if not record.metrics:
                    continue
                seconds = math.floor(record.time)
                stamp = timestamp(seconds=seconds, nanos=min(round((record.time - seconds) * 1e9), 999_999_999))
                emit(event(data=flatten(dict(record.metrics)), step=next_step(step), timestamp=stamp))

    def _write_untimed(self, records: list[MetricRecord]) -> None:
        log = self.run.log
        for record in records:
            log(dict(record.metrics), step=record.step)


class _ConsoleFeed:
    """``logs.txt``'s new whole lines, each as a SwanLab console line with the time it was printed.

    Read on each flush (about twice a second) from where the last read ended; a line still being written
    waits for its newline. SwanLab keeps them in the run's record (``swanlab sync`` uploads them as the
    console) and, in local mode, in the board's ``console/`` folder.
    """

    def __init__(self, run: Any, path: Any, from_end: bool) -> None:
        from google.protobuf.timestamp_pb2 import Timestamp
        from swanlab.proto.swanlab.terminal.v1.log_pb2 import LogLevel
        from swanlab.sdk.internal.bus import LogEvent

        self.path = path
        self._emit = run._components.emitter.emit
        self._timestamp, self._event, self._level = Timestamp, LogEvent, LogLevel.LOG_LEVEL_INFO
        self._max = int(getattr(getattr(run._ctx.config.settings, "terminal", None), "max_length", 1024))
        try:
            self.offset = path.stat().st_size if from_end else 0  # a resume: the lines before are the last run's
        except OSError:
            self.offset = 0

    def read(self) -> None:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except OSError:
            return  # no console captured (console=False), or not yet
        end = data.rfind(b"\n")
        if end < 0:
            return
        self.offset += end + 1
        for raw in data[:end].decode("utf-8", errors="replace").split("\n"):
            stamp, _, text = raw.partition(" ")
            try:
                when = parse_iso_time(stamp)
            except ValueError:
                continue
            seconds = math.floor(when)
            timestamp = self._timestamp(seconds=seconds, nanos=min(round((when - seconds) * 1e9), 999_999_999))
            self._emit(self._event(line=text[:self._max], level=self._level, timestamp=timestamp))


_BOARD_WRITER = ("_check_exp_status", "_get_metric_context", "_create_column", "_created_columns",
                 "_require_swanlog_dir", "_record_time", "_rewrite_metric_file")


def _lighten_board_writer(run: Any) -> None:
    """SwanLab's local-mode writer (``swanlab.deprecated.local.LocalCallbacker``), made cheap enough for
    every step.

    Measured (10,000 values, this machine): SwanLab's own local mode ~7 s of CPU against ~0.3 s offline;
    ~5 s are one SQLite query per value (is the board's *stop* pressed?), ~2.5 s two file opens per value.

    * No status query. The board's *stop* (or *delete*) makes that writer raise ``KeyboardInterrupt`` in
      SwanLab's background thread, which ends the thread: every later value would be lost from the
      record too, silently. Training never hears of it either way, so the record goes on.
    * Scalars are written the board's way by SwanLab's own code (``_MetricContext.add``, the column in its
      database), a batch at a time: one append per metric file and one ``_summary.json`` (replaced
      whole) per metric per batch, not per value.

    Another SwanLab version, whose writer lacks these parts, keeps its own writer.
    """
    callbacks = getattr(getattr(getattr(run, "_ctx", None), "callbacker", None), "_callbacks", {})
    for callback in list(callbacks.values()):
        if all(hasattr(callback, name) for name in _BOARD_WRITER):
            callback._check_exp_status = lambda: None
            callback.on_scalar_flush = functools.partial(_board_scalars, callback)


def _board_scalars(writer: Any, records: list[Any], *args: Any, **kwargs: Any) -> None:
    logs = writer._require_swanlog_dir()
    appends: dict[Any, list[str]] = {}  # a metric file (relative to logs/) -> its new lines
    metrics: dict[str, Any] = {}  # kid -> the metric whose _summary.json is rewritten
    for record in records:
        metric = writer._get_metric_context(record, scalar=True)
        if record.key not in writer._created_columns:
            writer._create_column(record, metric)
            writer._created_columns.add(record.key)
        line, overwrite, relative = metric.add(step=int(record.step), data=record.value.number,
                                               create_time=writer._record_time(record))
        if overwrite:  # a step logged again: SwanLab rewrites its line, after what is pending for the file
            _append(logs / relative, appends.pop(relative, []))
            writer._rewrite_metric_file(logs / relative, line)
        else:
            appends.setdefault(relative, []).append(json.dumps(line, ensure_ascii=False) + "\n")
        metrics[metric.kid] = metric
    for relative, lines in appends.items():
        _append(logs / relative, lines)
    for kid, metric in metrics.items():  # replaced whole (the board may read it any time), no fsync
        summary = logs / kid / "_summary.json"
        temp = summary.with_name("._summary.json.tmp")
        temp.write_text(json.dumps(metric.summary, ensure_ascii=False), encoding="utf-8")
        os.replace(temp, summary)


def _append(path: Path, lines: list[str]) -> None:
    if lines:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write("".join(lines))


class SwanLabSink(Sink):
    name = "swanlab"

    def __init__(self, project: str | None = None) -> None:
        self.project = project
        self._run: Any = None
        self._log: _TimedLog | None = None
        self._layout: Any = None
        self._console: _ConsoleFeed | None = None
        self.run_dir: str | None = None
        self.mode: str | None = None  # the SwanLab mode this run was opened in: "local" or "offline"

    @staticmethod
    def warm_up() -> None:
        """Import SwanLab (~1 s) ahead of the first record (the sink host calls this at start)."""
        import swanlab  # noqa: F401

    def open(self, context: SinkContext) -> None:
        import swanlab

        layout = self._layout = context.layout
        layout.swanlab_workspace.mkdir(parents=True, exist_ok=True)
        layout.swanlab_dir.mkdir(parents=True, exist_ok=True)
        config = dict(context.config)
        name = layout.name
        if context.resume_count:
            # A resumed run becomes a new SwanLab run in the same folder, linked by name and config.
            name = f"{layout.name}-resume{context.resume_count}"
            config["lightning_track_resumed"] = {"run": layout.name, "attempt": context.resume_count,
                                                 "from_step": context.resume_step}
        mode = check_swanlab_mode(context.options.get("swanlab", {}).get("mode", AUTO))
        self.mode = mode = mode if mode != AUTO else (OFFLINE if board_missing() else LOCAL)
        settings = swanlab.Settings(
            mode=mode,
            interactive=False,
            terminal=swanlab.Settings.Terminal(proxy_type="none"),
            probe=swanlab.Settings.Probe(hardware=False, requirements=False, git=False),
        )
        if swanlab.has_run():
            # SwanLab holds one run per process. Finishing someone else's run from this thread is
            # not ours to do (and SwanLab can only do it from the main thread).
            raise RuntimeError(
                "another SwanLab run is active in this process; finish it (swanlab.finish()) before this"
                " RunLogger logs, or leave 'swanlab' out of RunLogger(sinks=...)"
            )
        # SwanLab's own variables, for the time of init (local mode sets SWANLAB_LOG_DIR for its board).
        saved = {k: os.environ.get(k) for k in ("SWANLAB_ROOT", "SWANLAB_MODE", "SWANLAB_LOG_DIR")}
        os.environ["SWANLAB_ROOT"] = str(layout.swanlab_workspace)
        os.environ["SWANLAB_MODE"] = mode
        try:
            with _unwrapped_console():
                self._run = swanlab.init(
                    project=self.project or swanlab_project_name(context.dataset),
                    name=name,
                    description=f"lightning_track run {layout.name} ({context.method})",
                    mode=mode,
                    log_dir=str(layout.swanlab_dir),
                    config=config,
                    settings=settings,
                )
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        self.run_dir = str(getattr(self._run, "_ctx", None) and self._run._ctx.run_dir or "")
        self._log = _TimedLog(self._run)
        if mode == LOCAL:
            _lighten_board_writer(self._run)
        else:
            try:
                write_board_hint(layout.swanlab_dir, layout.run_dir)
            except (OSError, sqlite3.Error) as exc:  # only a hint: the run is whole without it
                warnings.warn(f"{layout.swanlab_dir}: no board hint for swanlab watch ({exc})", RuntimeWarning,
                              stacklevel=2)
        try:
            self._console = _ConsoleFeed(self._run, layout.logs_txt, from_end=bool(context.resume_count))
        except (ImportError, AttributeError) as exc:
            warnings.warn(f"SwanLab {getattr(swanlab, '__version__', '')}: the console (logs.txt) cannot be added"
                          f" to the SwanLab run ({exc!r})", RuntimeWarning, stacklevel=2)

    def log_config(self, config: dict[str, Any]) -> None:
        self._run.config.update(config)

    def write(self, records: list[MetricRecord]) -> None:
        assert self._log is not None, "sink not opened"
        self._log.write(records)

    def write_media(self, records: list[MediaRecord]) -> None:
        """Images and text as SwanLab's own types, read from the files under ``media/`` (written first).
        SwanLab 0.10 has no histogram type: histograms are in ``media/`` and TensorBoard."""
        import swanlab

        assert self._run is not None and self._layout is not None, "sink not opened"
        for record in records:
            if record.kind == IMAGE:
                key = record.key if not record.info.get("many") else f"{record.key}/{record.info.get('index', 0)}"
                value: Any = swanlab.Image(str(self._layout.run_dir / record.file), caption=record.caption)
            elif record.kind == TEXT:
                key, value = record.key, swanlab.Text(record.info.get("text", ""), caption=record.caption)
            else:
                continue
            self._run.log({key: value}, step=int(record.step))

    def flush(self) -> None:
        if self._console is not None:
            self._console.read()

    def close(self, status: str, reason: str | None = None) -> None:
        if self._run is not None:
            self.flush()  # the console's last lines
            run, self._run, self._log, self._console = self._run, None, None, None
            state = _STATE.get(status, "crashed")
            if reason is None and state == "crashed":
                # SwanLab would record "unknown" (and warn); our status is what we do know.
                reason = f"lightning_track recorded the run as {status}; no reason was given"
            with _unwrapped_console(tips=False):
                run.finish(state=state, error=reason)


SINK = SwanLabSink
