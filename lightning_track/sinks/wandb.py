"""``"wandb"``: an offline W&B run written live, in the sink host (never on the training thread), under
``<run>/wandb/`` for ``wandb sync`` to upload. W&B's own SDK (the ``wandb`` extra), offline mode.

It writes what :mod:`lightning_track.export.wandb` writes from the folder (same settings, same rules:
history at our steps, one row per step, config, tags, notes, status as the exit code) and, when it
closes, records its run in the run's export record as the ``wandb`` target, so ``lt export RUN --to
wandb`` continues the same W&B run with only what is new: ``summary.json``'s best values and the last
console lines (both written after the sinks close), nothing twice.

A row is written once its step is over (a record of a later step arrived, or the run closed). A record
at an earlier step than one already written (W&B's history only goes forward), and a resumed run (its
earlier rows may have been moved aside), are not written live: the sink then leaves its run to the
export, which writes the run from the folder, exactly once.
"""

from __future__ import annotations

import shutil
import sys
from typing import Any

from ..errors import ConfigError, ExportError, one_line
from ..export.record import SentFile, export_lock, read_record, write_record
from ..export.target import WANDB
from ..export.wandb import (
    console_feed,
    exit_code,
    new_run_id,
    offline_env,
    run_config,
    wandb_settings,
)
from ..folder.layout import RunLayout
from ..folder.records import MetricRecord, read_metrics_since
from ..query.runs import read_run
from ..redaction import redact
from ..vocabulary import iso_time
from .base import Sink, SinkContext

__all__ = ["WandbSink", "SINK"]


class WandbSink(Sink):
    name = "wandb"

    def __init__(self) -> None:
        self.run: Any = None
        self.context: SinkContext | None = None
        self.row: dict[str, float] = {}
        self.row_step: int | None = None
        self.row_time = 0.0
        self.last_step: int | None = None
        self.records = 0  # metric records taken (metrics.jsonl's lines, in order)
        self.late = 0  # records at a step already written: the run is left to lt export
        self.segment = ""

    @classmethod
    def warm_up(cls) -> None:
        import wandb  # noqa: F401 - a second of import, before the first record

    def open(self, context: SinkContext) -> None:
        try:
            import wandb
        except ImportError:
            raise ConfigError("the 'wandb' sink needs W&B's SDK: pip install 'lightning-track[wandb]'") from None
        self.context = context
        try:
            self._open(context, wandb)
        except Exception as exc:  # noqa: BLE001 - never the training's failure
            self._give_up("open", exc)

    def _open(self, context: SinkContext, wandb: Any) -> None:
        run_dir = context.layout.run_dir
        if context.resume_step is not None or WANDB in read_record(run_dir)["targets"]:
            return  # a resumed run: lt export writes it from the folder, which is exactly what it holds
        info = read_run(run_dir)
        self.run_id = new_run_id()
        with offline_env():
            self.run = wandb.init(dir=str(run_dir), project=context.dataset, id=self.run_id, name=run_dir.name,
                                  group=context.method or None, job_type="train", tags=sorted(info.tags),
                                  notes=info.notes or None, config=run_config(info) or dict(context.config),
                                  settings=wandb_settings(info.meta, info.host))
            self.segment = self.run.settings.sync_dir.rstrip("/").rsplit("/", 1)[-1]
            self.feed = console_feed(self.run)

    def log_config(self, config: dict[str, Any]) -> None:
        if self.run is not None:
            try:
                self.run.config.update(redact(config), allow_val_change=True)
            except Exception as exc:  # noqa: BLE001 - never the training's failure
                self._give_up("config", exc)

    def write(self, records: list[MetricRecord]) -> None:
        if self.run is None:
            return
        try:
            self._write(records)
        except Exception as exc:  # noqa: BLE001 - never the training's failure
            self._give_up("write", exc)

    def _write(self, records: list[MetricRecord]) -> None:
        for record in records:
            if record.metrics and all(key.startswith("system/") for key in record.metrics):
                continue  # the host's machine samples (system.jsonl), not a metrics.jsonl record
            self.records += 1
            if self.late:
                continue
            if self.row_step is not None and record.step < self.row_step or (
                    self.last_step is not None and record.step <= self.last_step):
                self.late += 1
                continue
            if self.row_step is not None and record.step > self.row_step:
                self._log_row()
            self.row_step = record.step
            self.row.update(record.metrics)
            self.row_time = max(self.row_time, record.time)

    def _log_row(self) -> None:
        if self.row_step is not None and self.row:
            self.run.log({**self.row, "_timestamp": self.row_time}, step=self.row_step)
            self.last_step = self.row_step
        self.row, self.row_step, self.row_time = {}, None, 0.0

    def close(self, status: str, reason: str | None = None) -> None:
        if self.run is None:
            return
        try:
            self._close(status, reason)
        except Exception as exc:  # noqa: BLE001 - never the training's failure: one line, the export heals it
            self._give_up("close", exc)

    def _give_up(self, what: str, exc: BaseException) -> None:
        """W&B's SDK failed: one line, the live run dropped and left to ``lt export`` (from the folder)."""
        print(f"lightning_track: the wandb sink stopped ({what}: {one_line(exc)}); the run folder has every "
              "value: lt export RUN --to wandb writes the W&B run from it", file=sys.stderr)
        run, self.run = self.run, None
        if run is not None:
            try:
                with offline_env():
                    run.finish(exit_code=1)
            except Exception:  # noqa: BLE001, S110 - already failing; the segment is removed below
                pass
        self._drop()

    def _close(self, status: str, reason: str | None) -> None:
        run = self.run
        context = self.context
        assert context is not None
        layout = context.layout
        with offline_env():
            if self.late:
                self.run = None
                run.finish(exit_code=1)
                self._drop()
                return
            self._log_row()
            logs = SentFile(layout.logs_txt, None)
            if layout.logs_txt.exists():
                body = layout.logs_txt.read_bytes()
                end = body.rfind(b"\n") + 1
                if end:
                    self.feed("stdout", body[:end].decode("utf-8", errors="replace"))
                    logs.advance(end, body[:end].count(b"\n"))
            run.summary.update({"lt/status": status, **({"lt/reason": redact(reason)} if reason else {})})
            self.run = None
            run.finish(exit_code=exit_code(status))
        try:
            recorded = self._record(logs)
        except ExportError:  # an lt export of this run holds the record
            recorded = False
        if not recorded:
            self._drop()

    def _drop(self) -> None:
        """Leave the run to lt export: this sink's W&B run is removed, so it is never uploaded beside the
        one the export writes (the folder holds everything it held)."""
        if self.context is not None and self.segment:
            shutil.rmtree(self.context.layout.run_dir / RunLayout.WANDB / self.segment, ignore_errors=True)

    def _record(self, logs: SentFile) -> bool:
        """The run in the export record, with metrics.jsonl sent up to the records this sink took."""
        assert self.context is not None
        layout = self.context.layout
        metrics = SentFile(layout.metrics_jsonl, None)
        if self.records and layout.metrics_jsonl.exists():
            ends: list[int] = []
            taken, _ = read_metrics_since(layout.metrics_jsonl, 0, [], ends=ends)
            if len(taken) < self.records:
                return False  # the file holds fewer records than were written here
            metrics.advance(ends[self.records - 1], self.records)
        entry = {"tracker": WANDB, "run_id": self.run_id, "dir": str(layout.run_dir), "segments": [self.segment],
                 "sent": {layout.METRICS_JSONL: metrics.entry(), layout.LOGS: logs.entry()},
                 "project": self.context.dataset, "exported_at": iso_time(), "live": True}
        if self.last_step is not None:
            entry["last_step"] = self.last_step
        with export_lock(layout.run_dir):
            record = read_record(layout.run_dir)
            if WANDB in record["targets"]:
                return False
            record["targets"][WANDB] = entry
            write_record(layout.run_dir, record)
        return True


SINK = WandbSink
