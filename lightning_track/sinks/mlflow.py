"""The ``"mlflow"`` sink: the run fed live into MLflow, by the same exactly-once export as ``lt export``.

Why the exporter and not a writer of its own: the run folder is the truth and the export record
(``export.json``) says how far the tracker holds it, so the live sink, a later ``lt export`` and
any other export all continue one another and never send a value twice. Every few seconds (when
something new was logged) a pass brings the MLflow run up to date with ``metrics.jsonl``,
``system.jsonl``, the params and tags; the files (``logs.txt``, ``summary.json``, plots) and the final
status go in the last pass, run by :meth:`close` on the sink host's sinks thread once the training
process has finished the folder (:func:`folder_final`: finalize writes summary.json and the plot after
the host answered ``Closing``). ``fit()`` never waits for it; ``RunLogger.wait()`` and the interpreter's
exit wait for the sink host, so for it too.

Where it runs: in the sink host process, on a thread of its own, so neither the training thread nor
the other sinks ever wait on the server. MLflow's client (~1 s of CPU to import; no lighter part of it can
be imported, since every ``mlflow.*`` module runs ``mlflow/__init__``) is imported when the first pass is
due, not when the host starts: a fit shorter than :data:`EVERY_SECONDS` pays nothing for it while it
trains, and the import then overlaps finalize (:meth:`close` starts it before waiting for finalize's
files). The passes, and an import started by one, run at the lowest priority (:func:`.base.lowest_priority`):
on a machine with few cores they take only what training leaves; once the sink closes, the import runs at the
sinks thread's priority, so that a busy machine cannot starve it past the last pass's budget.
A server that is down or failing costs one warning line per outage; the next pass after it is back catches
up from the files. The last pass is bounded (:data:`FINAL_SECONDS`): when the server is still down,
``export.json`` says what was not sent (``not_sent``) and ``lt export`` sends it later.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

from ..errors import ConfigError, ExportBusy, ExportError
from ..export.mlflow_client import failure_reason
from ..export.target import Target, parse_target
from ..folder.records import MetricRecord
from .base import Sink, SinkContext, lowest_priority

__all__ = ["MlflowSink", "SINK", "EVERY_SECONDS", "FINAL_SECONDS", "folder_final", "start_client_import"]

EVERY_SECONDS = 2.0  # between passes while the run is logging
FINAL_SECONDS = 20.0  # the last pass's budget (no new call to the server after it); also the wait for finalize
# MLflow's client for a live sink: no retries (the next pass is the retry), short timeouts.
_LIVE_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def _target(options: dict[str, Any]) -> Target:
    try:
        return parse_target(options.get("uri"))
    except ConfigError as exc:  # say it in RunLogger's words
        text = str(exc).replace("--to ", "mlflow_uri=").replace("pass --to URI", "pass mlflow_uri=URI")
        raise ConfigError(f"the 'mlflow' sink: {text}") from None


class MlflowSink(Sink):
    """One run folder kept up to date in one MLflow run while it trains."""

    name = "mlflow"
    hosted_only: ClassVar[bool] = True  # close waits for finalize's summary.json

    def __init__(self) -> None:
        self.target: Target | None = None
        self.run_dir: Path | None = None
        self.attempt = 1
        self._parent = os.getppid()  # the training process (the sink host's parent)
        self.interval = EVERY_SECONDS
        self._exporter: Any = None
        self._new = threading.Event()  # something was logged since the last pass
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one pass at a time
        self._failing = False  # the server failed the last pass (warned once for this outage)

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        _target(options)
        if importlib.util.find_spec("mlflow") is None:
            raise ConfigError("the 'mlflow' sink needs MLflow's client: pip install 'lightning-track[mlflow]'")

    def open(self, context: SinkContext) -> None:
        self.target = _target(dict(context.options.get(self.name) or {}))
        self.run_dir = Path(context.layout.run_dir)
        self.attempt = context.resume_count + 1
        self._parent = os.getppid()
        for key, value in _LIVE_ENV.items():  # this process is the sink host's: only its client reads them
            os.environ.setdefault(key, value)
        self._new.set()
        self._thread = threading.Thread(target=self._loop, name="lightning_track-mlflow", daemon=True)
        self._thread.start()

    def write(self, records: list[MetricRecord]) -> None:
        self._new.set()  # the pass reads metrics.jsonl, which has these records already

    def close(self, status: str, reason: str | None = None) -> None:
        """Stop the passes (the one under way ends at its next call), wait for finalize's files (at most
        :data:`FINAL_SECONDS`; not once the training process is gone), then the last pass, with the files
        and the final status, within :data:`FINAL_SECONDS`."""
        self._stop.set()
        if self._exporter is not None:
            self._exporter.deadline = 0.0
        start_client_import(lowest=False)  # beside finalize, which the wait below is for
        assert self.run_dir is not None
        deadline = time.monotonic() + FINAL_SECONDS
        while not folder_final(self.run_dir, self.attempt) and time.monotonic() < deadline \
                and os.getppid() == self._parent:
            time.sleep(0.1)
        with self._lock:
            if self._exporter is not None:
                self._exporter.deadline = time.monotonic() + FINAL_SECONDS
            try:
                self._pass(final=True)
            finally:
                if self._exporter is not None:
                    self._exporter.close()
                    self._exporter = None

    # -- the passes --------------------------------------------------------------------------
    def _loop(self) -> None:
        lowest_priority()
        while not self._stop.wait(self.interval):
            if self._new.is_set() or self._failing:
                if not _client_imported(self._stop):
                    continue  # close() came first: the last pass waits for the import itself
                with self._lock:
                    if not self._stop.is_set():
                        self._pass(final=False)

    def _pass(self, *, final: bool) -> None:
        from ..export import export_run
        from ..export.mlflow import MlflowExporter

        assert self.target is not None and self.run_dir is not None
        start_client_import(lowest=not final)
        if _importing is not None and _importing.is_alive():
            # One thread imports MLflow (two importing its module cycles at once can deadlock); at nice 19 on a
            # busy machine that can take long: a pass while training skips (the next one sends it), the last waits.
            if not final:
                return
            _importing.join(FINAL_SECONDS)
            if _importing.is_alive():
                why = f"MLflow's client was still being imported after {FINAL_SECONDS:g} s"
                self._record_not_sent(why)
                print(f"lightning_track: {why}; the run is in its folder: lt export {self.run_dir} --to "
                      f"{self.target.uri}", file=sys.stderr, flush=True)
                return
        self._new.clear()
        try:
            if self._exporter is None:
                self._exporter = MlflowExporter(self.target)
                if final:
                    self._exporter.deadline = time.monotonic() + FINAL_SECONDS
            export_run(self.run_dir, exporter=self._exporter, artifacts=final)
        except ExportBusy:  # an lt export of this run is under way: it sends the same
            self._new.set()
        except Exception as exc:  # noqa: BLE001 - the server's problem never becomes training's
            self._new.set()
            if self._stop.is_set() and not final:
                return  # cut short by close(): the last pass follows
            cause = exc.__context__ if isinstance(exc, ExportError) and exc.__context__ is not None else exc
            why = failure_reason(cause, self.target)  # "Connection refused", not the exporter's whole sentence
            if final:
                self._record_not_sent(why)
            if not self._failing:
                self._failing = True
                print(f"lightning_track: MLflow at {self.target.uri} failed ({why}); training goes on, the run is "
                      f"in its folder and is sent when the server answers (else: lt export {self.run_dir} "
                      f"--to {self.target.uri})", file=sys.stderr, flush=True)
        else:
            self._failing = False

    def _record_not_sent(self, why: str) -> None:
        """``export.json`` says what the server lacks (an export that got as far as the run says it itself)."""
        from ..export.record import export_lock, not_sent, read_record, write_record

        assert self.target is not None and self.run_dir is not None
        try:
            with export_lock(self.run_dir):
                record = read_record(self.run_dir)
                entry = record["targets"].setdefault(self.target.uri, {"tracker": self.target.tracker})
                if "not_sent" not in entry:
                    entry["not_sent"] = not_sent(self.run_dir, entry, why)
                    write_record(self.run_dir, record)
        except (ExportError, OSError, ValueError):
            pass  # another export holds the run, or the folder is gone: nothing to say it in


_importing: threading.Thread | None = None  # the one import of MLflow's client in this process
_starting = threading.Lock()


def start_client_import(*, lowest: bool = True) -> None:
    """Start importing MLflow's client, once per process; returns at once. ``lowest``: at nice 19, beside
    training; else at the caller's priority (the sink closing: training is over, and on a busy machine a nice-19
    import could outlast the last pass's budget), which also lifts an import already under way, where allowed."""
    global _importing
    with _starting:
        if _importing is None:
            _importing = threading.Thread(target=_import_client, args=(lowest,), name="lightning_track-mlflow-import",
                                          daemon=True)
            _importing.start()
        elif not lowest and _importing.is_alive():
            _lift(_importing)


def _lift(thread: threading.Thread) -> None:
    """``thread`` at the calling thread's priority (Linux; raising a priority needs the right, else nothing)."""
    if not sys.platform.startswith("linux") or thread.native_id is None:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, thread.native_id, os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
    except OSError:
        pass


def _client_imported(stop: threading.Event) -> bool:
    """Start the import if nobody has, and wait for it; False when ``stop`` is set first."""
    start_client_import()
    assert _importing is not None
    while _importing.is_alive():
        if stop.is_set():
            return False
        _importing.join(0.1)
    return True


def _import_client(lowest: bool) -> None:
    if lowest:
        lowest_priority()
    try:
        import mlflow.tracking  # noqa: F401 - seconds of imports
    except Exception:  # noqa: BLE001 - the pass that needs it imports it again and reports why it failed
        pass


def folder_final(run_dir: Path, attempt: int) -> bool:
    """Whether finalize has written ``attempt``'s files: its final status in ``summary.json``, then the
    plot drawn after it (``plots/metrics.png`` and ``report_draft.md`` newer than the attempt's end, or a
    ``plots_error``), where one is drawn (matplotlib installed, records logged)."""
    from ..folder.layout import RunLayout
    from ..vocabulary import RUNNING, parse_iso_time

    layout = RunLayout(run_dir)
    try:
        summary = json.loads(layout.summary_json.read_text(encoding="utf-8"))
        mine = [a for a in summary.get("attempts") or [] if isinstance(a, dict) and a.get("attempt") == attempt]
        if not mine or mine[-1].get("status") in (None, RUNNING) or not mine[-1].get("end_time"):
            return False
        if "plots_error" in summary or importlib.util.find_spec("matplotlib") is None \
                or not layout.metrics_jsonl.stat().st_size:
            return True
        plot = (layout.run_dir / RunLayout.RUN_PLOT).stat().st_mtime
        return plot >= parse_iso_time(mine[-1]["end_time"]) - 1.0 and layout.report_md.stat().st_mtime >= plot
    except (OSError, ValueError, TypeError):
        return False


SINK = MlflowSink
