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
from ..folder.layout import RunLayout, sanitize_name
from ..sinks import Sink, load_sink
from .config import normalize_config, redact
from .distributed import ENV_RUN_DIR, broadcast_from_rank0, global_rank, world_size_from_env
from .lifecycle import RunLifecycle

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
        self._auto_step = 0
        self._warned_keys: set[str] = set()
        self._needs_sync = False
        self._exit_hook = False
        self.layout = self._decide_layout()
        self._run: RunLifecycle | None = None
        if self._rank == 0:
            self._run = RunLifecycle(
                self.layout, dataset, method, config=self._config, sink_specs=self._sink_specs,
                resume=bool(resume), start_time=time.time(), metric_modes=self.metric_modes,
                flush_interval=flush_interval, heartbeat_interval=heartbeat_interval, sink_process=sink_process)
            self._register_exit_hook()
            self._run.start()

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
        return redact(self._run.config if self._run is not None else self._config)

    @override
    def log_hyperparams(self, params: dict[str, Any] | Namespace | Any, *args: Any, **kwargs: Any) -> None:
        if self._rank_zero():
            self._active_run().log_config(params)

    @override
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if not self._rank_zero():
            return
        run = self._active_run()
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
        run.log(int(step), time.time(), clean)

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
        if self._run is not None:
            self._run.check()

    @override
    def finalize(self, status: str) -> None:
        """Flush and close every sink, then write summary.json, metrics.csv and report_draft.md."""
        run = self._run
        if not self._rank_zero() or run is None or run.finalized and not run.active:
            return
        run.finalize(status, end_time=time.time())

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
    def update_summary(self, **fields: Any) -> None:
        """Merge ``fields`` into ``summary.json`` (rank 0; a no-op elsewhere).

        Goes through the same lock as the heartbeat, so callbacks (HealthGuard recording a failure)
        never race the writer thread's rewrites of the file.
        """
        if self._run is not None:
            self._run.update_summary(**fields)

    def _active_run(self) -> RunLifecycle:
        """This rank-0 process's run, with its writer running (reopened after a finalize)."""
        if self._run is None:  # a spawned worker that became rank 0 (ddp_spawn): pickled without one
            raise RuntimeError("RunLogger: this process has no run to write (not rank 0)")
        self._register_exit_hook()
        self._run.ensure_writer()
        return self._run

    def _register_exit_hook(self) -> None:
        if not self._exit_hook:
            self._exit_hook = True
            atexit.register(_finalize_at_exit, weakref.ref(self))

    # -- ddp_spawn: the Trainer (and this logger) is pickled into freshly spawned workers ---------
    def __getstate__(self) -> dict[str, Any]:
        """Hand the run over to spawned workers: they write, this (parent) process stops writing.

        The parent's writer has not opened any sink unless something was logged before ``fit``;
        it is stopped without creating files. The workers learn their rank from Lightning once
        their process group is up (``rank_zero_only.rank``).
        """
        if self._run is not None:
            self._run.hand_over()
        state = self.__dict__.copy()
        state.update(_rank=-1, _exit_hook=False)
        return state

    def _rank_zero(self) -> bool:
        if self._rank < 0:  # a spawned worker: Lightning has set its rank by the time it logs
            from lightning.pytorch.utilities.rank_zero import rank_zero_only

            self._rank = int(getattr(rank_zero_only, "rank", 0))
        return self._rank == 0

    def flush(self) -> None:
        """Block until everything logged so far is on disk (tests, notebooks)."""
        if self._run is not None:
            self._run.flush()

    def __repr__(self) -> str:
        return f"RunLogger({str(self.layout.run_dir)!r})"


def _finalize_at_exit(ref: weakref.ReferenceType[RunLogger]) -> None:
    logger = ref()
    if logger is not None and logger._run is not None and logger._run.active:
        try:
            logger.finalize("failed")
        except Exception:  # noqa: BLE001 - nothing to report to at interpreter exit
            pass

