"""RunLogger: a Lightning ``Logger`` that gives every run the standard run folder.

Modelled on Lightning's ``CSVLogger``: a thin Logger over a writer (here a background thread that
feeds the sinks). Rank 0 writes; every other rank only knows where the folder is.
"""

from __future__ import annotations

import atexit
import os
import time
import warnings
import weakref
from argparse import Namespace
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers.logger import Logger
from typing_extensions import override

from ..derived.digest import Mode
from ..derived.summary import SummaryFile, post_process
from ..folder.fileio import atomic_write_json
from ..folder.layout import RunLayout, sanitize_name
from ..sinks import Sink, SinkContext, load_sink
from ..sinks.jsonl import MetricsJsonlSink
from ..vocabulary import COMPLETED, FAILED, RUNNING, iso_time, run_status
from .config import config_digest, merge_config, normalize_config, redact, write_config_yaml
from .distributed import ENV_RUN_DIR, broadcast_from_rank0, global_rank, world_size_from_env
from .meta import collect_meta
from .writer import BackgroundWriter

__all__ = ["RunLogger"]

_instances_in_process = 0


class RunLogger(Logger):
    """Write a run to ``<root>/<dataset>_<method>_<YYYYmmdd_HHMMSS>/``.

    Args:
        dataset: dataset name; kept verbatim in ``meta.json``, sanitised in the folder name.
        method: method name (e.g. ``"lora"``), likewise.
        root: the runs folder (default ``"runs"``).
        config: the run's config (dict, DictConfig, Namespace or dataclass) for ``config.yaml``.
        sinks: metric formats besides ``metrics.jsonl``: names of modules in
            ``lightning_track.sinks`` or ``Sink`` instances.
        resume: ``True`` continues the newest run of this dataset+method; a run name or path
            continues that one. Use with ``trainer.fit(..., ckpt_path="last")``.
        metric_modes: ``{"val/acc": "max"}`` overrides the min/max direction inferred from names.
        flush_interval: seconds between writes to disk (bounds what a SIGKILL can lose).
        heartbeat_interval: seconds between refreshes of ``summary.json``'s heartbeat.
        sink_process: run the sinks given by name (TensorBoard, SwanLab) in a separate sink host
            process (``lightning_track.run.sinkhost``) so their Python code does not hold the GIL the
            training thread needs. ``False`` runs them on the writer thread. ``Sink`` instances
            always run on the writer thread; ``metrics.jsonl`` always does.
    """

    def __init__(
        self,
        dataset: str,
        method: str,
        root: str | os.PathLike[str] = "runs",
        config: Any = None,
        sinks: Iterable[str | Sink] = ("tensorboard", "swanlab"),
        resume: bool | str | os.PathLike[str] = False,
        metric_modes: Mapping[str, Mode | None] | None = None,
        flush_interval: float = 0.5,
        heartbeat_interval: float = 5.0,
        sink_process: bool = True,
    ) -> None:
        super().__init__()
        global _instances_in_process
        self.dataset = dataset
        self.method = method
        # Validate everything before anything touches the disk: bad input leaves no folder behind.
        sanitize_name(dataset, what="dataset")
        sanitize_name(method, what="method")
        self._sink_specs = list(sinks)
        for spec in self._sink_specs:
            load_sink(spec)  # an unknown sink name fails here, before the folder exists
        self._config: dict[str, Any] = normalize_config(config)
        self.metric_modes = dict(metric_modes or {})
        self.flush_interval = flush_interval
        self.heartbeat_interval = heartbeat_interval
        self.sink_process = sink_process
        self._root = Path(root)
        self._resume = resume
        self._index = _instances_in_process
        _instances_in_process += 1
        self._rank = global_rank()
        self._writer: BackgroundWriter | None = None
        self._finalized = False
        self._auto_step = 0
        self._warned_keys: set[str] = set()
        self._start = time.time()
        self._needs_sync = False
        self._exit_hook = False
        self._summary: SummaryFile | None = None
        self._resume_count = 0
        self.layout = self._decide_layout()
        if self._rank == 0:
            self._start_run()

    # -- where the run lives -------------------------------------------------------------------
    @property
    def _env_key(self) -> str:
        return f"{ENV_RUN_DIR}_{self._index}"

    def _decide_layout(self) -> RunLayout:
        explicit = os.environ.get(ENV_RUN_DIR)
        if explicit:  # set by a launcher script for every rank (multi-node without a shared process group)
            if self._rank == 0:
                Path(explicit).mkdir(parents=True, exist_ok=True)
            return RunLayout(explicit)
        if self._rank > 0:
            inherited = os.environ.get(self._env_key)
            if inherited:
                return RunLayout(inherited)
            # Started independently (torchrun, srun): learn rank 0's folder through the process
            # group on first use; until then, a provisional path that is never written.
            self._needs_sync = True
            if self._resume:
                return RunLayout.resolve_resume(self._root, self.dataset, self.method, self._resume)
            return RunLayout(self._root / RunLayout.run_name(self.dataset, self.method, "pending"))
        if ("RANK" in os.environ or "SLURM_PROCID" in os.environ) and world_size_from_env() > 1:
            self._needs_sync = True
        if self._resume:
            layout = RunLayout.resolve_resume(self._root, self.dataset, self.method, self._resume)
        else:
            try:
                layout = RunLayout.create(self._root, self.dataset, self.method)
            except OSError as exc:
                raise OSError(f"cannot create a run folder under {self._root}: {exc.strerror or exc}") from None
        os.environ[self._env_key] = str(layout.run_dir)
        return layout

    def _sync_layout(self) -> None:
        if self._needs_sync:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                self._needs_sync = False
                run_dir = broadcast_from_rank0(str(self.layout.run_dir))
                self.layout = RunLayout(run_dir)

    @property
    def run_dir(self) -> Path:
        """The run folder (the same path on every rank once training has started)."""
        self._sync_layout()
        return self.layout.run_dir

    @property
    def run_name(self) -> str:
        return self.run_dir.name

    # -- Lightning's Logger API ----------------------------------------------------------------
    # save_dir/name/version make Lightning's ModelCheckpoint (no dirpath) write to
    # <run>/checkpoints (it joins save_dir/name/version/"checkpoints") and trainer.log_dir
    # (save_dir for loggers other than TensorBoard/CSV) be the run folder.
    @property
    @override
    def name(self) -> str:
        return ""

    @property
    @override
    def version(self) -> str:
        return ""

    @property
    @override
    def save_dir(self) -> str:
        return str(self.run_dir)

    @property
    @override
    def log_dir(self) -> str:
        return str(self.run_dir)

    @property
    @override
    def root_dir(self) -> str:
        return str(self.run_dir.parent)

    @property
    def experiment(self) -> RunLayout:
        """The run's layout. Lightning reads this on every rank during setup: the sync point."""
        self._sync_layout()
        return self.layout

    @property
    def config(self) -> dict[str, Any]:
        """The run config as written to ``config.yaml`` (secrets redacted)."""
        return redact(self._config)

    @override
    def log_hyperparams(self, params: dict[str, Any] | Namespace | Any, *args: Any, **kwargs: Any) -> None:
        if not self._rank_zero():
            return
        params = normalize_config(params)
        params.pop("_instantiator", None)  # Lightning's bookkeeping for LightningCLI, not a setting
        self._config = merge_config(self._config, params)
        write_config_yaml(self.layout.config_yaml, self._config)
        self.update_summary(config_digest=config_digest(self._config))
        self._ensure_writer().put_config(redact(self._config))

    @override
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if not self._rank_zero():
            return
        writer = self._ensure_writer()
        writer.check()
        clean: dict[str, float] = {}
        for key, value in metrics.items():
            if type(value) is float or type(value) is int:
                clean[key] = float(value)
                continue
            number = self._to_float(key, value)
            if number is not None:
                clean[key] = number
        if step is None:
            step = self._auto_step
        self._auto_step = step + 1
        writer.put(int(step), time.time(), clean)

    def _to_float(self, key: str, value: Any) -> float | None:
        item = getattr(value, "item", None)
        try:
            return float(item() if callable(item) else value)
        except (TypeError, ValueError, RuntimeError):
            if key not in self._warned_keys:
                self._warned_keys.add(key)
                warnings.warn(
                    f"RunLogger: metric {key!r} has non-numeric value {value!r} ({type(value).__name__});"
                    " it is not recorded",
                    stacklevel=3,
                )
            return None

    @override
    def save(self) -> None:
        # Called by the Trainer after every log: must stay cheap. The writer thread does the work.
        if self._writer is not None:
            self._writer.check()

    @override
    def finalize(self, status: str) -> None:
        """Flush and close every sink, then write summary.json, metrics.csv and report_draft.md."""
        if not self._rank_zero() or self._finalized and self._writer is None:
            return
        ours = run_status(status)
        error: BaseException | None = None
        if self._writer is not None:
            writer, self._writer = self._writer, None
            try:
                writer.close(ours)
            except BaseException as exc:  # noqa: BLE001 - still write the summary, then re-raise
                error = exc
                ours = FAILED
        self._finalized = True
        end = time.time()
        extra = {"status": ours, "end_time": iso_time(end), "duration_s": round(end - self._start, 3)}
        if error is not None:
            extra["error"] = repr(error)
        post_process(self.layout.run_dir, status=ours, metric_modes=self.metric_modes, extra=extra)
        if error is not None:
            raise error

    @override
    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        if not self._rank_zero():
            return
        path = getattr(checkpoint_callback, "_last_checkpoint_saved", "") or getattr(
            checkpoint_callback, "last_model_path", ""
        )
        if path:
            self.update_summary(last_checkpoint=str(path))

    # -- run lifecycle -------------------------------------------------------------------------
    def _start_run(self) -> None:
        layout = self.layout
        self._summary = SummaryFile(layout.summary_json)
        previous = self._summary.read() if self._resume else {}
        now = iso_time(self._start)
        fields: dict[str, Any] = {
            "run_name": layout.name,
            "dataset": self.dataset,
            "method": self.method,
            "status": RUNNING,
            "start_time": previous.get("start_time", now),
            "heartbeat": now,
        }
        if self._resume:
            resumes = list(previous.get("resumes", []))
            resumes.append({"time": now, "previous_status": previous.get("status")})
            self._resume_count = len(resumes)
            fields["resumes"] = resumes
            fields.pop("end_time", None)
            if layout.config_yaml.exists():
                from omegaconf import OmegaConf

                on_disk = OmegaConf.to_container(OmegaConf.load(layout.config_yaml), resolve=True)
                self._config = merge_config(on_disk, self._config)  # type: ignore[arg-type]
        if self._config:
            write_config_yaml(layout.config_yaml, self._config)
            fields["config_digest"] = config_digest(self._config)
        meta = collect_meta(self.dataset, self.method, layout.name, root=str(layout.root.resolve()))
        if self._resume and layout.meta_json.exists():
            meta_path = layout.run_dir / f"meta.resume{self._resume_count}.json"
            atomic_write_json(meta_path, meta)
        else:
            atomic_write_json(layout.meta_json, meta)
        self._summary.update(**fields)
        self._ensure_writer()

    def update_summary(self, **fields: Any) -> None:
        """Merge ``fields`` into ``summary.json`` (rank 0; a no-op elsewhere).

        Goes through the same lock as the heartbeat, so callbacks (HealthGuard recording a failure)
        never race the writer thread's rewrites of the file.
        """
        if self._summary is not None:
            self._summary.update(**fields)


    def _heartbeat(self) -> None:
        self.update_summary(heartbeat=iso_time())

    def _on_sinks_open(self, context: SinkContext, sinks: list[Sink]) -> None:
        if context.resume_step is None or self._summary is None:
            return
        purged = sum(s.moved_aside for s in sinks)
        data = self._summary.read()
        resumes = list(data.get("resumes", []))
        if resumes:
            resumes[-1].update({"from_step": context.resume_step, "dropped_records": purged})
            self._summary.update(resumes=resumes)

    def _ensure_writer(self) -> BackgroundWriter:
        if not self._exit_hook:
            self._exit_hook = True
            atexit.register(_finalize_at_exit, weakref.ref(self))
        if self._writer is None:
            resuming = bool(self._resume) or self._finalized
            if self._finalized:
                # Logging after finalize (e.g. trainer.test after fit): reopen in append mode.
                self._resume_count += 1
                self.update_summary(status=RUNNING)
            sinks: list[Sink] = [MetricsJsonlSink()]
            named = [s for s in self._sink_specs if isinstance(s, str)]
            if named and self.sink_process:
                # Named sinks run in the sink host process; instances stay here (their class may not
                # be importable there). See lightning_track/sinkhost.py.
                from .sinkhost import SinkHost

                sinks.append(SinkHost(named))
                sinks += [s for s in self._sink_specs if not isinstance(s, str)]
            else:
                sinks += [load_sink(s) if isinstance(s, str) else s for s in self._sink_specs]
            context = SinkContext(
                layout=self.layout,
                dataset=self.dataset,
                method=self.method,
                config=redact(self._config),
                resume_count=self._resume_count,
            )
            self._writer = BackgroundWriter(
                sinks,
                context,
                resuming=resuming and not self._finalized,
                flush_interval=self.flush_interval,
                heartbeat_interval=self.heartbeat_interval,
                on_heartbeat=self._heartbeat,
                on_open=self._on_sinks_open,
            )
            self._finalized = False
        return self._writer

    # -- ddp_spawn: the Trainer (and this logger) is pickled into freshly spawned workers ---------
    def __getstate__(self) -> dict[str, Any]:
        """Hand the run over to spawned workers: they write, this (parent) process stops writing.

        The parent's writer has not opened any sink unless something was logged before ``fit``;
        it is stopped without creating files. The workers learn their rank from Lightning once
        their process group is up (``rank_zero_only.rank``).
        """
        if self._writer is not None:
            writer, self._writer = self._writer, None
            if writer.opened:
                writer.close(COMPLETED)
            else:
                writer.abandon()
        state = self.__dict__.copy()
        state.update(_writer=None, _summary=None, _rank=-1, _exit_hook=False)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._summary = SummaryFile(self.layout.summary_json)

    def _rank_zero(self) -> bool:
        if self._rank < 0:  # a spawned worker: Lightning has set its rank by the time it logs
            from lightning.pytorch.utilities.rank_zero import rank_zero_only

            self._rank = int(getattr(rank_zero_only, "rank", 0))
        return self._rank == 0

    def flush(self) -> None:
        """Block until everything logged so far is on disk (tests, notebooks)."""
        if self._writer is not None:
            self._writer.flush()

    def __repr__(self) -> str:
        return f"RunLogger({str(self.layout.run_dir)!r})"


def _finalize_at_exit(ref: weakref.ReferenceType[RunLogger]) -> None:
    logger = ref()
    if logger is not None and logger._writer is not None:
        try:
            logger.finalize("failed")
        except Exception:  # noqa: BLE001 - nothing to report to at interpreter exit
            pass

