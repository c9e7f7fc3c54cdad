"""SwanLab's local board fed from run folders: one board store that any run can join, however it was made.

The store is what SwanLab's board (swanboard, ``pip install "swanlab[dashboard]"``) reads: its SQLite
database (``runs.swanlab``: the project, one experiment per run folder, a chart and a tag per metric) and,
per experiment, SwanLab's local-mode files (``logs/<kid>/<n>.log`` and ``_summary.json``, ``console/``,
``files/config.yaml``). Both are written by SwanLab's own code: swanboard's models for the database, and
SwanLab's local-mode writer (``swanlab.deprecated.local.LocalCallbacker``, the one ``swanlab.init(mode=
"local")`` runs) for the files, fed with SwanLab's own scalar records. Why not ``swanlab.init`` itself:
SwanLab holds one run per process and cannot add lines to a finished run, and a board store must take
any number of runs and their new lines, pass after pass.

The run folders are only read. The store lives in the user's cache (``default_store``) or a given folder.
:data:`STATE` in the store says, per run folder, how far ``metrics.jsonl``, ``system.jsonl`` and
``logs.txt`` were read (whole lines only), so a pass adds only new lines; a ``metrics.jsonl`` that got
shorter (a resume moved records aside) rebuilds that run's experiment from the file. One process feeds a
store at a time (a lock file); the board reads it meanwhile.
"""

from __future__ import annotations

import hashlib
import math
import re
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, JsonlProblem
from ..folder.fileio import HeldLock, atomic_write_json, atomic_write_text, exclusive_lock, read_json
from ..folder.layout import RunLayout
from ..folder.records import MetricRecord, read_metrics_since
from ..query.discover import find_run_dirs
from ..query.runs import judge_status
from ..sinks.swanlab import board_missing
from ..vocabulary import COMPLETED, RUNNING, STALLED, cache_root, parse_iso_time

__all__ = ["BoardStore", "PassResult", "STATE", "board_status", "default_store", "experiment_folder"]

STATE = "lightning_track_board.json"  # in the store: per run folder, how far each file was read
LOCK = "lightning_track_board.lock"
PROJECT = "lightning_track"
_UNSAFE = re.compile(r"[^0-9A-Za-z_.+-]+")
_DESCRIPTION_MAX = 255  # swanboard's column


def default_store() -> Path:
    """The board store when ``--dir`` is not given: in the user's cache, never in a runs folder."""
    return Path(cache_root()) / "board"


def board_status(status: str | None) -> int:
    """swanboard's experiment status for our status word: running (or stalled) 0, completed 1, anything else
    -1 (failed, interrupted, crashed: the board's "stopped")."""
    return {RUNNING: 0, STALLED: 0, COMPLETED: 1}.get(status or RUNNING, -1)


def experiment_folder(run_dir: Path) -> str:
    """The experiment's folder in the store: the run's name and a hash of its path, so two runs with one
    name (a run and its mirror) stay apart and the same folder always lands in the same place."""
    digest = hashlib.sha1(str(run_dir).encode()).hexdigest()[:10]
    return f"{_UNSAFE.sub('-', run_dir.name)[:80]}-{digest}"


@dataclass
class PassResult:
    """What one pass over the run folders did."""

    runs: int = 0
    new_runs: int = 0
    rebuilt: int = 0
    values: int = 0
    problems: list[str] = field(default_factory=list)

    def line(self, store: Path) -> str:
        parts = [f"{self.runs} run{'s' if self.runs != 1 else ''}"]
        if self.new_runs:
            parts.append(f"{self.new_runs} new")
        if self.rebuilt:
            parts.append(f"{self.rebuilt} rebuilt")
        return f"board store {store}: {', '.join(parts)}, {self.values} new values"


def _require_board() -> None:
    why = board_missing()
    if why:
        raise ConfigError(f"lt board needs SwanLab's board, but {why}")


def _timestamp(seconds: float) -> Any:
    from google.protobuf.timestamp_pb2 import Timestamp

    whole = math.floor(seconds)
    return Timestamp(seconds=whole, nanos=min(round((seconds - whole) * 1e9), 999_999_999))


def _scalars(records: Iterable[MetricRecord]) -> list[Any]:
    """Our records as SwanLab's own scalar records (what its SDK hands its local-mode writer)."""
    from swanlab.proto.swanlab.metric.column.v1.column_pb2 import ColumnType
    from swanlab.proto.swanlab.metric.data.v1.data_pb2 import ScalarRecord
    from swanlab.sdk.internal.run.transforms.scalar import Scalar

    out = []
    for record in records:
        if record.step < 0:
            continue  # SwanLab refuses negative steps; metrics.jsonl keeps them
        stamp = _timestamp(record.time)
        for key, value in record.metrics.items():
            out.append(ScalarRecord(key=key, step=int(record.step), timestamp=stamp,
                                    type=ColumnType.COLUMN_TYPE_SCALAR, value=Scalar.transform(value)))
    return out


_WRITER_PARTS = ("exp", "_run_dir", "_swanlog_dir", "_console_dir", "_media_dir", "_metrics", "_next_kid",
                 "_created_columns", "_dashboard_ready", "on_log_flush", "on_run_finished")


def _writer(exp: Any, folder: Path) -> Any:
    """SwanLab's local-mode writer for one experiment, set up as its ``on_run_initialized`` would (which
    also creates the experiment: here it exists already, or is found again on the next pass)."""
    import swanlab
    from swanlab.deprecated.local import LocalCallbacker

    writer = LocalCallbacker()
    missing = [name for name in _WRITER_PARTS if not hasattr(writer, name)]
    if missing:
        raise ConfigError(f"SwanLab {swanlab.__version__}: its local-mode writer lacks {', '.join(missing)};"
                          " lt board writes the board's store with SwanLab 0.10's"
                          " (pip install 'swanlab[dashboard]==0.10.*')")
    writer.exp = exp
    writer._run_dir = folder
    writer._swanlog_dir, writer._console_dir, writer._media_dir = folder / "logs", folder / "console", folder / "media"
    for sub in (writer._swanlog_dir, writer._console_dir):
        sub.mkdir(parents=True, exist_ok=True)
    writer._dashboard_ready = True
    return writer


def _restore(writer: Any, exp: Any) -> None:
    """The writer's per-metric state (steps seen, min/max) read back from the store's own files, so a new
    ``lt board`` process goes on where the last one stopped."""
    import json

    from swanboard.db.models import Tag
    from swanlab.deprecated.local import _MetricContext

    kids = []
    for tag in Tag.filter(Tag.experiment_id == exp.id):
        context = _MetricContext(tag.name, str(tag.folder), scalar=True)
        folder = writer._swanlog_dir / str(tag.folder)
        slices = sorted((p for p in folder.glob("*.log")), key=lambda p: int(p.stem) if p.stem.isdigit() else 0)
        for part in slices:
            for raw in part.read_text(encoding="utf-8").splitlines():
                try:
                    line = json.loads(raw)
                    context.add(step=int(line["index"]), data=line["data"], create_time=line.get("create_time", ""))
                except (ValueError, KeyError, TypeError):
                    continue
        writer._metrics[tag.name] = context
        writer._created_columns.add(tag.name)
        kids.append(int(tag.folder) if str(tag.folder).isdigit() else 0)
    writer._next_kid = max(kids, default=0) + 1


def _swanlab_config(config: Any) -> dict[str, Any]:
    """A config in the shape SwanLab's local mode writes ``files/config.yaml`` (what the board shows)."""
    if not isinstance(config, dict):
        return {}
    return {str(key): {"desc": "", "sort": i, "value": value} for i, (key, value) in enumerate(config.items())}


def _stamp(path: Path) -> list[int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return [stat.st_mtime_ns, stat.st_size]


class _Feed:
    """One run folder into one experiment of the store."""

    def __init__(self, store: Path, run_dir: Path, entry: dict[str, Any]) -> None:
        self.store, self.run_dir, self.entry = store, run_dir, entry
        self.layout = RunLayout(run_dir)
        self.folder = store / entry["folder"]
        self.writer: Any = None
        self.summary: dict[str, Any] | None = None  # summary.json as last read
        self.words: list[str] = []  # dataset and method, for the description

    def _experiment(self, result: PassResult) -> Any:
        from swanboard.db import ExistedError, NotExistedError
        from swanboard.db.models import Experiment

        try:
            exp = Experiment.get(run_id=self.entry["folder"])
        except NotExistedError:
            exp = None
        if exp is not None and len(self.entry) > 1:  # the store has what the state says was read
            self.writer = _writer(exp, self.folder)
            _restore(self.writer, exp)
            return exp
        if exp is not None:  # made by a pass that stopped before its state was saved: start it again
            self._drop(exp)
        name = self.run_dir.name[:100]
        for attempt in range(100):
            try:
                exp = Experiment.create(name=name, run_id=self.entry["folder"], description="",
                                        colors=("#528d59", "#528d59"))
                break
            except ExistedError:  # another run folder with this name (a mirror): the hash tells them apart
                name = f"{self.run_dir.name[:80]}-{self.entry['folder'][-10:]}" + (f"-{attempt}" if attempt else "")
        else:
            raise ConfigError(f"{self.run_dir}: no free experiment name in the board store {self.store}")
        for key in ("metrics", "system", "logs", "config", "summary"):
            self.entry.pop(key, None)
        self.writer = _writer(exp, self.folder)
        result.new_runs += 1
        return exp

    def _drop(self, exp: Any) -> None:
        """The experiment out of the store as the board's own *delete* takes it out (its multi-run charts
        left without a source go too; the project's count stays, so experiment numbers never repeat)."""
        from swanboard.db import connect
        from swanboard.db.models import Chart, Experiment, Tag

        names = [tag.name for tag in Tag.filter(Tag.experiment_id == exp.id)]
        charts = Chart.filter(Chart.project_id == exp.project_id, Chart.name.in_(names))
        with connect().atomic():
            Experiment.delete().where(Experiment.id == exp.id).execute()
            Chart.delete().where(Chart.id.in_([c.id for c in charts if c.sources.count() == 0])).execute()
        shutil.rmtree(self.folder, ignore_errors=True)
        self.writer = None

    def update(self, result: PassResult) -> None:
        metrics = self.layout.metrics_jsonl
        size = metrics.stat().st_size if metrics.exists() else 0
        if self.writer is None:
            self._experiment(result)
        if size < self.entry.get("metrics", 0):  # a resume moved records aside: show what the file holds now
            self._drop(self.writer.exp)
            self._experiment(result)
            result.rebuilt += 1
            result.new_runs -= 1
        self._config()
        for key, path in (("metrics", metrics), ("system", self.layout.system_jsonl)):
            if path.exists():
                problems: list[JsonlProblem] = []
                records, self.entry[key] = read_metrics_since(path, self.entry.get(key, 0), problems)
                result.problems += [str(p) for p in problems]
                scalars = _scalars(records)
                if scalars:
                    from ..sinks.swanlab import _board_scalars

                    _board_scalars(self.writer, scalars)
                    result.values += len(scalars)
        self._console()
        self._status()

    def _config(self) -> None:
        stamp = _stamp(self.layout.config_yaml)
        if stamp is None or stamp == self.entry.get("config"):
            return
        import yaml

        try:
            config = yaml.safe_load(self.layout.config_yaml.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            return  # being replaced: the next pass reads it
        files = self.folder / "files"  # SwanLab's run files: its config under the same name as ours
        files.mkdir(parents=True, exist_ok=True)
        atomic_write_text(files / RunLayout.CONFIG,
                          yaml.safe_dump(_swanlab_config(config), allow_unicode=True, sort_keys=False))
        self.entry["config"] = stamp

    def _console(self) -> None:
        from swanlab.proto.swanlab.terminal.v1.log_pb2 import LogRecord

        path = self.layout.logs_txt
        offset = self.entry.get("logs", 0)
        try:
            with open(path, "rb") as handle:
                handle.seek(offset)
                data = handle.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1
        if not end:
            return
        lines = []
        for raw in data[:end].decode("utf-8", errors="replace").split("\n")[:-1]:
            stamp, _, text = raw.partition(" ")
            try:
                parse_iso_time(stamp)
            except ValueError:
                text = raw  # a line without our time prefix: shown as it is
            lines.append(LogRecord(line=text))
        self.writer.on_log_flush(lines)
        if self.writer._log_file is not None:
            self.writer._log_file.close()
            self.writer._log_file = None
        self.entry["logs"] = offset + end

    def _status(self) -> None:
        """Status and description from summary.json, judged as ``lt ls`` judges it (a running run whose
        heartbeat stopped is crashed), so a run killed without finishing does not stay "running"."""
        stamp = _stamp(self.layout.summary_json)
        if stamp != self.entry.get("summary") or self.summary is None:
            try:
                summary = read_json(self.layout.summary_json)
            except (OSError, ValueError):
                return  # not there yet
            self.summary = summary if isinstance(summary, dict) else {}
            try:
                meta = read_json(self.layout.meta_json) or {}
            except (OSError, ValueError):
                meta = {}
            self.words = [str(meta.get(k)) for k in ("dataset", "method") if isinstance(meta, dict) and meta.get(k)]
            self.entry["summary"] = stamp
        elif self.summary.get("status") != RUNNING:
            return  # nothing new, and only a running run's verdict changes with time
        status, _ = judge_status(self.summary, now=time.time())
        description = " · ".join([*self.words, status, str(self.run_dir)])[:_DESCRIPTION_MAX]
        exp = self.writer.exp
        if (exp.status, exp.description) == (board_status(status), description):
            return
        exp.description = description
        if exp.status != board_status(status):
            exp.update_status(board_status(status))  # also saves the description
        else:
            exp.save()


class BoardStore:
    """The board's store in ``folder``, fed from run folders pass after pass (:meth:`update`)."""

    def __init__(self, folder: str | Path) -> None:
        _require_board()
        self.folder = Path(folder).expanduser().resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock: HeldLock | None = exclusive_lock(
            self.folder / LOCK, name=self.folder, what="another lt board is feeding this store",
            fix="stop it, or give --dir another folder")
        from swanboard.db import connect
        from swanboard.db.models import Project

        connect(path=str(self.folder), autocreate=True)
        Project.init(PROJECT, description="runs fed from their folders by lt board")
        state = read_json(self.folder / STATE) if (self.folder / STATE).exists() else {}
        self.state: dict[str, dict[str, Any]] = state.get("runs", {}) if isinstance(state, dict) else {}
        self._feeds: dict[str, _Feed] = {}

    def close(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> BoardStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run_dirs(self, specs: Sequence[str | Path], problems: list[str]) -> list[Path]:
        """The run folders ``specs`` name (run folders or folders of runs), each once."""
        seen: dict[Path, None] = {}
        for spec in specs:
            for run_dir, _, _ in find_run_dirs(spec, problems):
                seen.setdefault(run_dir.resolve(), None)
        return list(seen)

    def update(self, specs: Sequence[str | Path]) -> PassResult:
        """One pass: every run under ``specs`` into the store, only what is new since the last pass."""
        result = PassResult()
        changed = 0
        try:
            for run_dir in self.run_dirs(specs, result.problems):
                key = str(run_dir)
                feed = self._feeds.get(key)
                if feed is None:
                    entry = self.state.setdefault(key, {"folder": experiment_folder(run_dir)})
                    feed = self._feeds[key] = _Feed(self.folder, run_dir, entry)
                before = dict(feed.entry)
                feed.update(result)
                result.runs += 1
                changed += feed.entry != before
                if changed >= 50:  # a long first build keeps what it did if it is stopped
                    self._save()
                    changed = 0
        finally:
            if changed:
                self._save()
        return result

    def _save(self) -> None:
        atomic_write_json(self.folder / STATE, {"runs": self.state})
