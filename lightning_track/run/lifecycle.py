"""One run on disk, from start to finalize, knowing nothing of Lightning.

:class:`~lightning_track.run.logger.RunLogger` is the Lightning adapter (ranks, the folder, the
Logger API); this object owns what happens in the folder: ``summary.json`` (status, heartbeat, the
history of attempts), ``meta.json``, ``config.yaml``, the background writer and its sinks, and the
derived files at the end. Lightning's ``CSVLogger`` over its ``ExperimentWriter`` is the model.
Only rank 0 has one.

Attempts: every start of training in the folder is an attempt (the first run, each resume), with its
own entry in ``summary["attempts"]``: start and end, status and why, the step it restarted from, the
records its resume moved aside and the config values it changed. Top-level fields describe the run
as a whole.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..derived.digest import Mode
from ..derived.summary import SummaryFile, attempts_of, post_process
from ..errors import ResumeError, one_line
from ..folder.fileio import atomic_write_json, temp_path
from ..folder.gcpause import collector_paused
from ..folder.layout import RunLayout
from ..redaction import redact, secret_values
from ..sinks import Sink, SinkContext, load_sink
from ..sinks.jsonl import MetricsJsonlSink
from ..sinks.media import MediaFilesSink
from ..vocabulary import (
    COMPLETED,
    FAILED,
    RUNNING,
    iso_time,
    run_status,
)
from .attempts import begin_attempt, end_attempt
from .capture import CodeCapture, start_capture
from .config import config_digest, config_with_disk, merge_hyperparams, write_config_yaml
from .console import capture_console
from .launched import launch_fields
from .lineage import CheckpointIndex
from .meta import collect_meta
from .progress import ProgressClock
from .resume import check_resume
from .sinkhost import wait_for_hosts
from .system import SystemRecorder, start_system_recorder
from .writer import BackgroundWriter

__all__ = ["RunLifecycle"]


class RunLifecycle:
    """Start, log into, and finalize one run folder (rank 0 only). Nothing touches the disk before
    :meth:`start`."""

    def __init__(
        self,
        layout: RunLayout,
        dataset: str,
        method: str,
        *,
        config: dict[str, Any],
        sink_specs: Sequence[str | Sink],
        resume: bool,
        allow_rewind: bool = False,
        metric_modes: Mapping[str, Mode | None],
        flush_interval: float,
        heartbeat_interval: float,
        sink_process: bool,
        tags: Sequence[str] = (),
        notes: str | None = None,
        console: bool = False,
        system_interval: float = 0.0,
        sink_options: Mapping[str, Mapping[str, Any]] | None = None,
        progress: ProgressClock | None = None,
    ) -> None:
        self.layout = layout
        self.dataset = dataset
        self.method = method
        self.config = dict(config)
        self.sink_specs = list(sink_specs)
        self.resume = resume
        self.allow_rewind = allow_rewind
        self.metric_modes = dict(metric_modes)
        self.flush_interval = flush_interval
        self.heartbeat_interval = heartbeat_interval
        self.sink_process = sink_process
        self.tags, self.notes = list(tags), notes
        self.console = console  # capture this process's console into logs.txt from the start
        self.system_interval = system_interval  # seconds between system samples (0: none)
        self.sink_options = {name: dict(value) for name, value in (sink_options or {}).items()}  # by sink name
        self.system: SystemRecorder | None = None  # sampling in this process (when no sink host does)
        self.last_step: int | None = None
        # the training step the heartbeat reads (the trainer's counter; else the last logged step)
        self.progress = progress or ProgressClock(lambda: self.last_step)
        self.summary = SummaryFile(layout.summary_json)
        self.attempt = 0
        self.start_time = 0.0
        self.from_step: int | None = None
        self.writer: BackgroundWriter | None = None
        self.capture: CodeCapture | None = None  # code and environment, captured beside training
        self.lineage = CheckpointIndex(layout)  # checkpoints.json, hashed beside training
        self.started = False
        self.refused = False
        self._pending: dict[str, Any] = {}  # summary fields given before the attempt started
        self.finalized = False
        self.appending = False  # logging after finalize: the finalized attempt takes more records

    # -- start -------------------------------------------------------------------------------
    def start(self, from_step: int | None = None) -> None:
        """Begin an attempt: ``summary.json`` (running), ``meta.json``, ``config.yaml``, the writer.

        ``from_step``: where training (re)starts, when known. A resume that would rewind the run is
        refused here with :class:`ResumeError`, before anything is written.
        """
        layout = self.layout
        previous = self.summary.read() if self.resume else {}
        if self.resume and from_step is not None:
            self._check_rewind(previous, from_step)
        self.started, self.start_time, self.from_step = True, time.time(), from_step
        if self.console:  # first, so the rest of the start (the sink host's messages) is in logs.txt too
            capture_console(layout.logs_txt, secrets=secret_values(self.config, sys.argv, os.environ))
        now = iso_time(self.start_time)
        attempts, entry = begin_attempt(previous, now)
        self.config, changed = config_with_disk(layout.config_yaml, self.config, resume=self.resume)
        if changed:
            entry["config_changes"] = changed
        if from_step is not None and self.resume:
            entry["from_step"] = from_step
        attempts.append(entry)
        self.attempt = entry["attempt"]
        fields: dict[str, Any] = {
            "run_name": layout.name,
            "dataset": self.dataset,
            "method": self.method,
            "status": RUNNING,
            "start_time": previous.get("start_time", now),
            "heartbeat": now,
            "attempts": attempts,
            **self.progress.start(from_step, self.start_time),
        }
        # exp_id (lt-run's name of this run's signal files), tags, a sweep's trial: from the launcher's env
        fields.update(launch_fields(self.tags, previous.get("tags")))
        if self.notes is not None:
            fields["notes"] = self.notes
        if self.config:
            write_config_yaml(layout.config_yaml, self.config)
            fields["config_digest"] = config_digest(self.config)
        meta = collect_meta(self.dataset, self.method, layout.name, root=str(layout.root.resolve()))
        if layout.meta_json.exists():
            atomic_write_json(layout.attempt_meta_json(self.attempt), meta)
        else:
            atomic_write_json(layout.meta_json, meta)
        self.capture = start_capture(layout, self.attempt, training=lambda: self.last_step is not None,
                                     config=lambda: self.config)
        self._reserve_space()
        # an earlier attempt's (now in its entry), or an old name (duration_s: training_time_s now)
        stale = {"end_time", "failure", "error", "interrupted", "reason", "duration_s"}
        self.summary.replace({k: v for k, v in previous.items() if k not in stale} | fields | self._pending)
        self._pending = {}
        if from_step is not None and self.resume:  # the checkpoint it continues from, in its attempt's entry
            self.lineage.note_resume(from_step, self._update_attempt)
        self.ensure_writer()
        if self.system_interval and not self._hosted:  # else the sink host samples, off this process
            self.system = start_system_recorder(layout, self.system_interval, pid=os.getpid(), attempt=self.attempt,
                                                step=lambda: self.last_step)

    # Room kept for the end of the run: when the disk fills during training, finalize frees this
    # first, so summary.json can still say "failed" and why. Hidden, named by the temp-file rule.
    RESERVE_BYTES = 256 * 1024

    @property
    def _reserve(self) -> Path:
        return temp_path(self.layout.summary_json, "reserve")

    def _reserve_space(self) -> None:
        try:
            with open(self._reserve, "wb") as handle:
                handle.truncate(0)
                handle.write(b"\0" * self.RESERVE_BYTES)  # real blocks: a sparse file frees nothing
        except OSError:
            self._reserve.unlink(missing_ok=True)  # no room even now: the run still starts

    def _check_rewind(self, previous: Mapping[str, Any], from_step: int) -> None:
        try:
            check_resume(self.layout, previous, from_step, self.allow_rewind, len(attempts_of(previous)) + 1)
        except ResumeError:
            self.refused = True
            raise

    # -- while training ----------------------------------------------------------------------
    def log_config(self, params: Any) -> None:
        """Merge ``params`` (hyperparameters Lightning reports) into the config; once started,
        rewrite ``config.yaml`` and tell the sinks."""
        self.config = merge_hyperparams(self.config, params)
        if not self.started:
            return
        write_config_yaml(self.layout.config_yaml, self.config)
        self.update_summary(config_digest=config_digest(self.config))
        self.ensure_writer().put_config(redact(self.config))

    def log(self, step: int, when: float, metrics: dict[str, float]) -> None:
        if not self.started:
            self.start(from_step=max(step - 1, 0))  # the first record after a restart at S is step S + 1
        writer = self.ensure_writer()
        writer.check()
        writer.put(step, when, metrics)
        self.last_step = step

    def log_media(self, items: Sequence[Any]) -> None:
        """Queue images, text or histograms (:class:`~lightning_track.run.media.MediaItem`) for the writer."""
        if not self.started:
            self.start()
        writer = self.ensure_writer()
        writer.check()
        for item in items:
            writer.put_media(item)

    def check(self) -> None:
        """Raise a writer or sink error on the caller's (training) thread."""
        if self.writer is not None:
            self.writer.check()

    def update_summary(self, **fields: Any) -> None:
        """Merge ``fields`` into ``summary.json`` under the same lock as the heartbeat. Before the
        attempt starts they wait for it (a refused resume then writes nothing at all)."""
        if not self.started:
            self._pending.update(fields)
            return
        self.summary.update(**fields)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def make_durable(self) -> None:
        """Everything logged so far written and fsynced in every sink (before a checkpoint)."""
        if self.writer is not None:
            self.writer.flush()  # every sink's flush, then sync: metrics.jsonl fsynced, the sink host done

    def checkpoint_saved(self, path: str, step: int | None, *, epoch: int | None = None,
                         metrics: Mapping[str, float] | None = None, monitor: Mapping[str, str] | None = None) -> None:
        """Record a checkpoint in ``summary.json`` and, hashed off this thread, in ``checkpoints.json``."""
        self.lineage.add(path, step=step, epoch=epoch, attempt=self.attempt, metrics=metrics, monitor=monitor)
        fields: dict[str, Any] = {"last_checkpoint": self.layout.relative(path)}
        if step is not None:
            fields["last_checkpoint_step"] = step
        self.update_summary(**fields)

    def model_exported(self, folder: str | Path, step: int | None) -> None:
        """``final_model/`` written: its weights' hashes and the checkpoint they match, in ``checkpoints.json``."""
        self.lineage.add_model(folder, step=step, attempt=self.attempt)

    # -- the writer and its sinks ------------------------------------------------------------
    def ensure_writer(self) -> BackgroundWriter:
        if self.writer is None:
            context = SinkContext(layout=self.layout, dataset=self.dataset, method=self.method,
                                  config=redact(self.config), resume_count=max(0, self.attempt - 1),
                                  # records after the restart step are the interrupted attempt's replays
                                  resume_step=self.from_step + 1
                                  if self.resume and self.from_step is not None and not self.appending else None,
                                  moved_aside_to=self.layout.dropped_metrics_jsonl(self.attempt),
                                  options=self.sink_options)
            self.writer = BackgroundWriter(
                self._sinks(), context,
                resuming=self.resume and not self.appending,
                flush_interval=self.flush_interval,
                heartbeat_interval=self.heartbeat_interval,
                on_heartbeat=self._heartbeat,
                on_open=self._on_sinks_open,
            )
        return self.writer

    def _heartbeat(self) -> None:
        """The writer thread's beat: alive (``heartbeat``), and whether training moved (``progress``)."""
        now = time.time()
        moved = self.progress.beat(now)
        self.update_summary(heartbeat=iso_time(now), **({"progress": moved} if moved else {}))

    @property
    def _hosted(self) -> bool:
        """Whether a sink host process runs beside this one (it also samples the system metrics)."""
        return self.sink_process and any(isinstance(s, str) for s in self.sink_specs)

    def _sinks(self) -> list[Sink]:
        sinks: list[Sink] = [MetricsJsonlSink(), MediaFilesSink()]  # the files first: other sinks may read them
        named = [s for s in self.sink_specs if isinstance(s, str)]
        if self._hosted:
            # Named sinks run in the sink host process; instances stay here (their class may not be
            # importable there). See lightning_track/run/sinkhost.py.
            from .sinkhost import SinkHost

            # After finalize the run's system record is closed (its last sample taken): no new sampler.
            sinks.append(SinkHost(named, system_interval=0.0 if self.appending else self.system_interval,
                                  on_late_error=self._late_sink_error))
            sinks += [s for s in self.sink_specs if not isinstance(s, str)]
        else:
            sinks += [load_sink(s) if isinstance(s, str) else s for s in self.sink_specs]
        return sinks

    def _late_sink_error(self, text: str) -> None:
        """A sink that failed in the sink host after finalize returned (closing its files): in ``summary.json``."""
        try:
            self.summary.modify(lambda data: data.setdefault("sink_errors", []).append(text))
        except (OSError, ValueError):
            pass  # the folder is gone or torn: the line on stderr (SinkHost) is all there is

    def _on_sinks_open(self, context: SinkContext, sinks: list[Sink]) -> None:
        if context.resume_step is None:
            return
        moved = sum(s.moved_aside for s in sinks)
        record: dict[str, Any] = {"dropped_records": moved}
        lost = sorted({step for sink in sinks for step in sink.lost_steps})
        if lost:  # the truth about a record that never reached the disk
            record["lost_steps"] = lost
        if moved and context.moved_aside_to is not None:
            record["dropped_file"] = self.layout.relative(context.moved_aside_to)
        self._update_attempt(**record)

    def _update_attempt(self, **fields: Any) -> None:
        def change(data: dict[str, Any]) -> None:
            attempts = data.get("attempts") or []
            if attempts and attempts[-1].get("attempt") == self.attempt:
                attempts[-1].update(fields)
        self.summary.modify(change)

    # -- the end -----------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """Whether the writer is running (started and not finalized since)."""
        return self.writer is not None

    def reopen(self) -> None:
        """Logging after finalize (a test score or a sample after ``fit`` returned, ``trainer.test``):
        the same attempt takes the records, appended; its status, times and records stay as they are."""
        self.finalized = False
        self.appending = True
        self.ensure_writer()

    def finalize(self, status: str, *, reason: str | None = None, end_time: float | None = None) -> None:
        """Close every sink with our word for ``status``, then write summary.json, metrics.csv and
        report_draft.md. A sink's error is recorded and raised after the summary is written.

        With the collector paused (:mod:`..folder.gcpause`): the records read back die with it."""
        with collector_paused():
            self._finalize(status, reason, end_time)

    def _finalize(self, status: str, reason: str | None, end_time: float | None) -> None:
        if self.appending:
            self._finish_appending()
            return
        end_time = time.time() if end_time is None else end_time
        ours = run_status(status)
        error: BaseException | None = None
        if self.writer is not None:
            writer, self.writer = self.writer, None
            try:
                writer.close(ours, reason)
            except BaseException as exc:  # noqa: BLE001 - still write the summary, then re-raise
                error = exc
                ours, reason = FAILED, reason or f"writing the run's files failed: {exc!r}"
        self._stop_system()
        if self.capture is not None:
            self.capture.join()
        self.lineage.close()
        self.finalized = True
        self._reserve.unlink(missing_ok=True)
        extra = end_attempt(self.summary.read(), ours, reason, start_time=self.start_time, end_time=end_time,
                            error=error)
        try:
            post_process(self.layout.run_dir, status=ours, metric_modes=self.metric_modes, extra=extra,
                         plots_later=True)
        except OSError as exc:
            if error is None:
                raise
            if self.summary.read().get("status") != ours:
                raise OSError(f"{error}; and summary.json could not record the failure either: {one_line(exc)}"
                              ) from error
            # summary.json says it; only a derived file (metrics.csv) did not fit: the first error stands
        if error is not None:
            raise error

    def _finish_appending(self) -> None:
        """Close the writer of records logged after finalize and refresh the derived files; the
        attempt's status, reason and times are the ones its finalize recorded."""
        writer, self.writer = self.writer, None
        self.finalized, self.appending = True, False
        error: BaseException | None = None
        if writer is not None:
            try:
                writer.close(self.summary.read().get("status") or COMPLETED)
            except BaseException as exc:  # noqa: BLE001 - the derived files first, then re-raise
                error = exc
        post_process(self.layout.run_dir, metric_modes=self.metric_modes,
                     extra={"error": repr(error)} if error is not None else None, plots_later=True)
        if error is not None:
            raise error

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for what finalize finishes in the background: the sink host's files (TensorBoard, SwanLab)
        and ``plots/metrics.png`` with its link in ``report_draft.md``; False when ``timeout`` ran out first."""
        from ..derived.plots import wait_for_plots

        deadline = None if timeout is None else time.monotonic() + timeout
        if not wait_for_hosts(self.layout.run_dir, timeout):
            return False
        return wait_for_plots(self.layout.run_dir, None if deadline is None else max(0.0, deadline - time.monotonic()))

    def hand_over(self) -> None:
        """Stop writing in this process (ddp_spawn pickles the run into its workers).

        A writer that has opened no sink is stopped without creating files.
        """
        self._stop_system()
        if self.writer is not None:
            writer, self.writer = self.writer, None
            if writer.opened:
                writer.close(COMPLETED)
                wait_for_hosts(self.layout.run_dir)  # the workers' host opens the same folder in another process
            else:
                writer.abandon()

    def _stop_system(self) -> None:
        if self.system is not None:
            system, self.system = self.system, None
            system.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["writer"] = state["system"] = state["capture"] = None  # threads do not pickle; the worker starts its own
        return state
