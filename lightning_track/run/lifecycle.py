"""One run on disk, from start to finalize, knowing nothing of Lightning.

:class:`RunLogger` is the Lightning adapter (ranks, ``log_metrics``' value conversion, the Logger
API); this object owns what happens to the folder: ``summary.json`` (status, heartbeat, resumes),
``meta.json``, ``config.yaml``, the background writer and its sinks, and the derived files at the
end. Lightning's ``CSVLogger`` over its ``ExperimentWriter`` is the model. Only rank 0 has one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..derived.digest import Mode
from ..derived.summary import SummaryFile, post_process
from ..folder.fileio import atomic_write_json
from ..folder.layout import RunLayout
from ..sinks import Sink, SinkContext, load_sink
from ..sinks.jsonl import MetricsJsonlSink
from ..vocabulary import COMPLETED, FAILED, RUNNING, iso_time, run_status
from .config import config_digest, merge_config, normalize_config, redact, write_config_yaml
from .meta import collect_meta
from .writer import BackgroundWriter

__all__ = ["RunLifecycle"]


class RunLifecycle:
    """Start, log into, and finalize one run folder (rank 0 only).

    Args:
        layout: the run folder (already created, or the folder a resume continues).
        dataset, method: as given by the user (kept verbatim in the files).
        config: the normalised run config so far.
        sink_specs: sink names (run in the sink host when ``sink_process``) and ``Sink`` instances.
        resume: whether this attempt continues an existing run in ``layout``.
    """

    def __init__(
        self,
        layout: RunLayout,
        dataset: str,
        method: str,
        *,
        config: dict[str, Any],
        sink_specs: Sequence[str | Sink],
        resume: bool,
        start_time: float,
        metric_modes: Mapping[str, Mode | None],
        flush_interval: float,
        heartbeat_interval: float,
        sink_process: bool,
    ) -> None:
        self.layout = layout
        self.dataset = dataset
        self.method = method
        self.config = config
        self.sink_specs = list(sink_specs)
        self.resume = resume
        self.start_time = start_time
        self.metric_modes = dict(metric_modes)
        self.flush_interval = flush_interval
        self.heartbeat_interval = heartbeat_interval
        self.sink_process = sink_process
        self.summary = SummaryFile(layout.summary_json)
        self.resume_count = 0
        self.writer: BackgroundWriter | None = None
        self.finalized = False

    # -- start -------------------------------------------------------------------------------
    def start(self) -> None:
        """Write ``summary.json`` (running), ``meta.json``, ``config.yaml`` and start the writer."""
        layout = self.layout
        previous = self.summary.read() if self.resume else {}
        now = iso_time(self.start_time)
        fields: dict[str, Any] = {
            "run_name": layout.name,
            "dataset": self.dataset,
            "method": self.method,
            "status": RUNNING,
            "start_time": previous.get("start_time", now),
            "heartbeat": now,
        }
        if self.resume:
            resumes = list(previous.get("resumes", []))
            resumes.append({"time": now, "previous_status": previous.get("status")})
            self.resume_count = len(resumes)
            fields["resumes"] = resumes
            fields.pop("end_time", None)
            if layout.config_yaml.exists():
                from omegaconf import OmegaConf

                on_disk = OmegaConf.to_container(OmegaConf.load(layout.config_yaml), resolve=True)
                self.config = merge_config(on_disk, self.config)  # type: ignore[arg-type]
        if self.config:
            write_config_yaml(layout.config_yaml, self.config)
            fields["config_digest"] = config_digest(self.config)
        meta = collect_meta(self.dataset, self.method, layout.name, root=str(layout.root.resolve()))
        if self.resume and layout.meta_json.exists():
            atomic_write_json(layout.run_dir / f"meta.resume{self.resume_count}.json", meta)
        else:
            atomic_write_json(layout.meta_json, meta)
        self.summary.update(**fields)
        self.ensure_writer()

    # -- while training ----------------------------------------------------------------------
    def log_config(self, params: Any) -> None:
        """Merge ``params`` into the config, rewrite ``config.yaml`` and tell the sinks."""
        params = normalize_config(params)
        params.pop("_instantiator", None)  # Lightning's bookkeeping for LightningCLI, not a setting
        self.config = merge_config(self.config, params)
        write_config_yaml(self.layout.config_yaml, self.config)
        self.update_summary(config_digest=config_digest(self.config))
        self.ensure_writer().put_config(redact(self.config))

    def log(self, step: int, when: float, metrics: dict[str, float]) -> None:
        writer = self.ensure_writer()
        writer.check()
        writer.put(step, when, metrics)

    def check(self) -> None:
        """Raise a writer or sink error on the caller's (training) thread."""
        if self.writer is not None:
            self.writer.check()

    def update_summary(self, **fields: Any) -> None:
        """Merge ``fields`` into ``summary.json`` under the same lock as the heartbeat."""
        self.summary.update(**fields)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    # -- the writer and its sinks ------------------------------------------------------------
    def ensure_writer(self) -> BackgroundWriter:
        if self.writer is None:
            resuming = self.resume or self.finalized
            if self.finalized:
                # Logging after finalize (e.g. trainer.test after fit): reopen in append mode.
                self.resume_count += 1
                self.update_summary(status=RUNNING)
            context = SinkContext(layout=self.layout, dataset=self.dataset, method=self.method,
                                  config=redact(self.config), resume_count=self.resume_count)
            self.writer = BackgroundWriter(
                self._sinks(), context,
                resuming=resuming and not self.finalized,
                flush_interval=self.flush_interval,
                heartbeat_interval=self.heartbeat_interval,
                on_heartbeat=lambda: self.update_summary(heartbeat=iso_time()),
                on_open=self._on_sinks_open,
            )
            self.finalized = False
        return self.writer

    def _sinks(self) -> list[Sink]:
        sinks: list[Sink] = [MetricsJsonlSink()]
        named = [s for s in self.sink_specs if isinstance(s, str)]
        if named and self.sink_process:
            # Named sinks run in the sink host process; instances stay here (their class may not be
            # importable there). See lightning_track/run/sinkhost.py.
            from .sinkhost import SinkHost

            sinks.append(SinkHost(named))
            sinks += [s for s in self.sink_specs if not isinstance(s, str)]
        else:
            sinks += [load_sink(s) if isinstance(s, str) else s for s in self.sink_specs]
        return sinks

    def _on_sinks_open(self, context: SinkContext, sinks: list[Sink]) -> None:
        if context.resume_step is None:
            return
        resumes = list(self.summary.read().get("resumes", []))
        if resumes:
            resumes[-1].update({"from_step": context.resume_step,
                                "dropped_records": sum(s.moved_aside for s in sinks)})
            self.update_summary(resumes=resumes)

    # -- the end -----------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        """Whether the writer is running (logged into and not finalized since)."""
        return self.writer is not None

    def finalize(self, status: str, *, end_time: float) -> None:
        """Close every sink with our word for ``status``, then write summary.json, metrics.csv and
        report_draft.md. A sink's error is recorded in the summary and raised after it is written."""
        ours = run_status(status)
        error: BaseException | None = None
        if self.writer is not None:
            writer, self.writer = self.writer, None
            try:
                writer.close(ours)
            except BaseException as exc:  # noqa: BLE001 - still write the summary, then re-raise
                error = exc
                ours = FAILED
        self.finalized = True
        extra = {"status": ours, "end_time": iso_time(end_time), "duration_s": round(end_time - self.start_time, 3)}
        if error is not None:
            extra["error"] = repr(error)
        post_process(self.layout.run_dir, status=ours, metric_modes=self.metric_modes, extra=extra)
        if error is not None:
            raise error

    def hand_over(self) -> None:
        """Stop writing in this process (ddp_spawn pickles the run into its workers).

        A writer that has opened no sink is stopped without creating files.
        """
        if self.writer is not None:
            writer, self.writer = self.writer, None
            if writer.opened:
                writer.close(COMPLETED)
            else:
                writer.abandon()
