"""RunLogger: a Lightning ``Logger`` that gives every run the standard run folder.

Modelled on Lightning's ``CSVLogger``: a thin Logger over :class:`RunLifecycle` (what happens to the
folder). Rank 0 writes; every other rank only knows where the folder is.

Nothing exists on disk until the run starts: the folder when its path is first asked for (the Trainer
asks during setup, or you do), ``summary.json``, ``meta.json``, the writer and the sink host when
training starts. A logger that is built and never used leaves nothing.

How every rank agrees on the folder, without any hand-over through the environment: see
:mod:`lightning_track.run.distributed`.
"""

from __future__ import annotations

import atexit
import os
import sys
import time
import warnings
import weakref
from argparse import Namespace
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers.logger import DummyExperiment, Logger
from typing_extensions import override

from ..derived.digest import Mode
from ..folder.layout import RunLayout, sanitize_name
from ..redaction import redact
from ..sinks import Sink, check_sinks
from ..sinks.swanlab import check_swanlab_mode
from ..vocabulary import STALL_FACTOR, STALL_FLOOR_S
from .callback_hooks import CallbackHooks
from .config import normalize_config
from .distributed import global_rank, rank_zero_method
from .experiment import MediaLogging, RunExperiment
from .folder_choice import RunFolderChoice
from .lifecycle import RunLifecycle
from .lightning_state import batch_step, finalize_verdict, progress_step, saved_checkpoint
from .media import MediaItem
from .progress import ProgressClock
from .system import start_rank_records

__all__ = ["RunLogger"]


class RunLogger(CallbackHooks, Logger):
    """Write a run to ``<root>/<dataset>_<method>_<YYYYmmdd_HHMMSS>/``.

    Args:
        dataset: dataset name; kept verbatim in ``meta.json``, sanitised in the folder name.
        method: method name (e.g. ``"lora"``), likewise.
        root: the runs folder (default ``"runs"``).
        config: the run's config (dict, DictConfig, Namespace or dataclass) for ``config.yaml``.
        sinks: metric formats besides ``metrics.jsonl``: names of modules in
            ``lightning_track.sinks`` or ``Sink`` instances. ``"swanlab"`` is opt-in (its SDK beside training
            costs more than the rest of the logger); ``lt board`` shows any run on SwanLab's board without it.
        resume: ``True`` continues the newest run of this dataset+method; a run name or path
            continues that one. Use with ``trainer.fit(..., ckpt_path="last")``. A resume whose
            training restarts before the run's last checkpoint is refused (nothing is written).
        allow_rewind: accept such a resume on purpose: the run continues from the earlier step,
            the records logged after it are moved aside (``metrics.dropped-at-attempt-N.jsonl``).
        metric_modes: ``{"val/acc": "max"}`` overrides the min/max direction inferred from names.
        flush_interval: seconds between writes to disk (bounds what a SIGKILL can lose).
        heartbeat_interval: seconds between refreshes of ``summary.json``'s heartbeat.
        sink_process: run the sinks given by name (TensorBoard, SwanLab, MLflow) in a sink host process
            (``lightning_track.run.sinkhost``) so their Python code does not hold the GIL the training thread
            needs. ``False`` runs them on the writer thread; ``Sink`` instances and ``metrics.jsonl`` always are.
        tags: words to find the run by (``lt ls --filter tag=baseline``), in ``summary.json``; ``lt tag`` changes them.
        notes: free text about the run, in ``summary.json``; ``lt note`` changes it later.
        console: capture everything the process prints (stdout and stderr at the file-descriptor level,
            subprocesses included) into ``logs.txt`` from the start of training until the process ends;
            other ranks into ``logs.rank<N>.txt``. The terminal shows the same as without it.
        system_interval: seconds between samples of GPU/CPU/memory into ``system.jsonl`` (one more at the start
            and at the end; TensorBoard and SwanLab under ``system/``), taken off the training thread; 0 switches
            it off. Another node's local rank 0 samples its own machine into ``system.node<k>.jsonl``.
        swanlab_mode: how the opt-in ``"swanlab"`` sink writes its run: ``"local"`` also for SwanLab's board
            (``swanlab watch <run>/swanlab_logs``; needs ``pip install "swanlab[dashboard]"``), ``"offline"`` the
            record only; ``"auto"``: local where the board is installed. Both upload with ``swanlab sync``.
        mlflow_uri: the MLflow tracker the ``"mlflow"`` sink feeds (None: ``$MLFLOW_TRACKING_URI``); docs/export.md.
        stall_factor, stall_floor: a running run whose step has not advanced for
            ``max(stall_factor x its recent time per step, stall_floor s)`` is ``stalled`` (``lt ls``, ``lt show``,
            ``lt sync --notify``); kept in ``summary.json``'s ``stall_rule`` so every reader judges alike.
    """

    def __init__(
        self,
        dataset: str,
        method: str,
        root: str | os.PathLike[str] = "runs",
        config: Any = None,
        sinks: Iterable[str | Sink] = ("tensorboard",),
        resume: bool | str | os.PathLike[str] = False,
        metric_modes: Mapping[str, Mode | None] | None = None,
        flush_interval: float = 0.5,
        heartbeat_interval: float = 5.0,
        sink_process: bool = True,
        allow_rewind: bool = False,
        tags: Iterable[str] = (),
        notes: str | None = None,
        console: bool = True,
        system_interval: float = 10.0,
        swanlab_mode: str = "auto",
        mlflow_uri: str | None = None,
        stall_factor: float = STALL_FACTOR,
        stall_floor: float = STALL_FLOOR_S,
    ) -> None:
        super().__init__()
        self.dataset, self.method = dataset, method
        # Validate everything before anything touches the disk: bad input leaves no folder behind.
        sanitize_name(dataset, what="dataset")
        sanitize_name(method, what="method")
        self._sink_specs = list(sinks)
        self.swanlab_mode = check_swanlab_mode(swanlab_mode)  # "local" without the board fails here, not later
        self._sink_options = {"swanlab": {"mode": self.swanlab_mode}, "mlflow": {"uri": mlflow_uri}}
        check_sinks(self._sink_specs, self._sink_options, hosted=sink_process)  # before the folder exists
        self._config: dict[str, Any] = normalize_config(config)
        self.metric_modes = dict(metric_modes or {})
        self.flush_interval = flush_interval
        self.heartbeat_interval = heartbeat_interval
        self.sink_process = sink_process
        self.allow_rewind = allow_rewind
        self.tags, self.notes = [tags] if isinstance(tags, str) else [str(t) for t in tags], notes
        self.console = bool(console)
        if not isinstance(system_interval, (int, float)) or system_interval < 0:
            raise ValueError(f"system_interval must be a number of seconds >= 0 (0: off), got {system_interval!r}")
        self.system_interval = float(system_interval)
        for name, value in (("stall_factor", stall_factor), ("stall_floor", stall_floor)):
            if not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        self.stall_factor, self.stall_floor = float(stall_factor), float(stall_floor)
        self._rank_records = False  # a rank > 0 keeps its console (and another node's local rank 0 its system)
        self._experiment: RunExperiment | None = None
        self._auto_step = 0
        self._warned_keys: set[str] = set()
        self._exit_hook = False
        self._durable_on_next_save = False
        self._trainer: weakref.ReferenceType[Any] | None = None
        self._run: RunLifecycle | None = None  # rank 0's run, made when the folder is decided
        self._media = MediaLogging(self._step, self._queue_media)
        self._folder = RunFolderChoice(Path(root), dataset, method, resume, rank=global_rank(),
                                       on_decided=self._run_for)

    @property
    def attempt(self) -> int | None:
        """The number of the current attempt in the run's ``summary.json`` (None before it starts)."""
        return self._run.attempt if self._run is not None and self._run.started else None

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
    def experiment(self) -> RunExperiment | DummyExperiment:
        """The run's layout with ``SummaryWriter``'s ``add_*`` methods (:mod:`.experiment`) on rank 0;
        Lightning's ``DummyExperiment`` (any call returns None) on the other ranks, as every Lightning
        logger's. Lightning reads this on every rank during setup: the folder's sync point (``layout``)."""
        layout = self._folder.resolve()
        if not self._rank_zero():
            return DummyExperiment()
        if self._experiment is None or self._experiment.run_dir != layout.run_dir:
            self._experiment = RunExperiment(layout.run_dir, self)
        return self._experiment

    @property
    def config(self) -> dict[str, Any]:
        """The run config as written to ``config.yaml`` (secrets redacted)."""
        return redact(self._run.config if self._run is not None else self._config)

    @override
    @rank_zero_method
    def log_hyperparams(self, params: dict[str, Any] | Namespace | Any, *args: Any, **kwargs: Any) -> None:
        self._rank_zero_run().log_config(params)

    @override
    @rank_zero_method
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        run = self._rank_zero_run()
        clean: dict[str, float] = {}
        for key, value in metrics.items():
            if type(value) is float or type(value) is int:
                clean[key] = float(value)
                continue
            number = self._to_float(key, value)
            if number is not None:
                clean[key] = number
        step = self._step(self._auto_step if step is None else int(step))
        self._auto_step = step + 1
        run.log(step, time.time(), clean)

    # -- images, text, histograms (MediaLogging): rank 0 only, like every method that writes ----------
    @rank_zero_method
    def log_image(self, key: str, images: Any, step: int | None = None, caption: str | Sequence[str] | None = None,
                  dataformats: str | None = None) -> None:
        """Log one image or several; see :meth:`MediaLogging.log_image <.experiment.MediaLogging.log_image>`."""
        self._media.log_image(key, images, step, caption, dataformats)

    @rank_zero_method
    def log_text(self, key: str, text: Any = None, step: int | None = None, *, columns: Sequence[Any] | None = None,
                 rows: Sequence[Sequence[Any]] | None = None) -> None:
        """Log a string or a table; see :meth:`MediaLogging.log_text <.experiment.MediaLogging.log_text>`."""
        self._media.log_text(key, text, step, columns=columns, rows=rows)

    @rank_zero_method
    def log_histogram(self, key: str, values: Any, step: int | None = None) -> None:
        """Log the distribution of ``values`` (a tensor or array of any shape; TensorFlow's buckets)."""
        self._media.log_histogram(key, values, step)

    def _queue_media(self, items: list[MediaItem]) -> None:
        self._rank_zero_run().log_media(items)

    def _step(self, step: int | None) -> int:
        """The step a value logged now belongs to (:func:`.lightning_state.batch_step`)."""
        run = self._run
        return batch_step(self._trainer and self._trainer(), step, run.last_step if run is not None else None)

    def _progress_step(self) -> int | None:
        """The heartbeat's step (read on the writer thread, never on the training thread)."""
        run = self._run
        return progress_step(self._trainer and self._trainer(), run.last_step if run is not None else None)

    def attach(self, trainer: Any) -> None:
        """Know the Trainer, for the step convention (Lightning gives a Logger none; our callbacks hand it over)."""
        self._trainer = weakref.ref(trainer)

    @override
    def log_graph(self, model: Any, input_array: Any = None) -> None:
        # Lightning calls this with the module at the start of every fit: the module knows its trainer.
        trainer = getattr(model, "_trainer", None)
        if trainer is not None:
            self.attach(trainer)
            self.continue_from_checkpoint(trainer.ckpt_path, trainer)  # without StepCheckpoint too

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
                    stacklevel=4,  # the caller of log_metrics (past rank_zero_method's wrapper)
                )
            return None

    @override
    def save(self) -> None:
        # Called by the Trainer after every log (and once before training): must stay cheap.
        run = self._run
        if run is None or not run.started:
            folder = self._folder
            if self._rank_zero():
                if not folder.resume:
                    self._rank_zero_run().start()  # Lightning's first save() is the start of fit
            elif not self._rank_records and folder.agreed and folder.current is not None:
                self._rank_records = True
                start_rank_records(folder.current, folder.rank, console=self.console,
                                   system_interval=self.system_interval,
                                   step=lambda: getattr(self._trainer and self._trainer(), "global_step", None))
            return
        run.check()
        if self._durable_on_next_save:
            # The batch whose end saved a checkpoint logs its metrics just after the save (Lightning's
            # loop order): a resume from that checkpoint starts after that record, so it must reach
            # disk now, not at the next flush.
            self._durable_on_next_save = False
            run.make_durable()

    @override
    @rank_zero_method
    def finalize(self, status: str) -> None:
        """Close every sink, then write summary.json, metrics.csv and report_draft.md.

        Lightning says "failed" for an interrupt too; the exception being handled tells them apart
        (Ctrl+C, Lightning's SIGTERM), and gives a failure its one-line reason.
        """
        run = self._rank_zero_run(reopen=False)  # an explicit finalize of an unused logger records the run
        if run.finalized and not run.active:
            return
        status, reason = finalize_verdict(status, sys.exc_info()[1])
        if not run.started:
            if run.refused:  # a refused resume writes nothing, not even its failure
                return
            run.start()
        run.finalize(status, reason=reason)

    @override
    @rank_zero_method
    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        if self._run is None:
            return
        saved = saved_checkpoint(checkpoint_callback, self._trainer() if self._trainer is not None else None)
        if saved is not None:
            self._run.checkpoint_saved(**saved)
        if self._run.active:
            self._run.make_durable()  # what was logged before the checkpoint (before_checkpoint leaves no gap)
            self._durable_on_next_save = True

    # -- run lifecycle -------------------------------------------------------------------------
    def _rank_zero_run(self, reopen: bool = True) -> RunLifecycle:
        """This rank-0 process's run (its folder decided); ``reopen``: logging after a finalize
        (a test score after ``fit`` returned, ``trainer.test``) appends to the same attempt."""
        run = self._run
        if run is not None and run.started and not run.finalized:
            return run  # the hot path (every log_metrics): the folder was decided when the run started
        self._folder.resolve()
        if self._run is None:
            raise RuntimeError("RunLogger: this process has no run to write (not rank 0)")
        if reopen and self._run.finalized:
            self._run.reopen()
        return self._run

    def _run_for(self, layout: RunLayout) -> None:
        """Rank 0's run in the folder just decided (a new one when the folder changed)."""
        if self._run is not None and self._run.layout.run_dir == layout.run_dir:
            return
        self._run = RunLifecycle(
            layout, self.dataset, self.method, config=self._config, sink_specs=self._sink_specs,
            resume=bool(self._folder.resume), allow_rewind=self.allow_rewind, metric_modes=self.metric_modes,
            flush_interval=self.flush_interval, heartbeat_interval=self.heartbeat_interval,
            sink_process=self.sink_process, tags=self.tags, notes=self.notes, console=self.console,
            system_interval=self.system_interval, sink_options=self._sink_options,
            progress=ProgressClock(self._progress_step, self.stall_factor, self.stall_floor))
        if not self._exit_hook:
            self._exit_hook = True
            atexit.register(_finalize_at_exit, weakref.ref(self))

    # -- where the run lives (RunFolderChoice) ---------------------------------------------------
    @property
    def layout(self) -> RunLayout:
        """The run's :class:`RunLayout` (deciding the folder if it is not decided yet)."""
        return self._folder.resolve()

    @property
    def run_dir(self) -> Path:
        """The run folder (the same path on every rank once training has started)."""
        return self._folder.resolve().run_dir

    @property
    def run_name(self) -> str:
        return self.run_dir.name

    def continue_from_checkpoint(self, ckpt_path: str | os.PathLike[str] | None, trainer: Any = None) -> bool:
        """Continue the run ``ckpt_path`` belongs to, when it is one of this logger's dataset and method
        (:meth:`RunFolderChoice.continue_from_checkpoint <.folder_choice.RunFolderChoice.continue_from_checkpoint>`).
        True when the logger switched folders."""
        return self._folder.continue_from_checkpoint(ckpt_path, trainer)

    # -- ddp_spawn: the Trainer (and this logger) is pickled into freshly spawned workers ---------
    def __getstate__(self) -> dict[str, Any]:
        """Hand the run over to spawned workers (``ddp_spawn``): they write, this process stops.

        The folder is decided here, so the workers hold it without any collective; a writer this
        process started is closed (opened sinks) or stopped without creating files.
        """
        if self._rank_zero():
            self._folder.resolve()
            self._folder.agreed = True
            if self._run is not None:
                self._run.hand_over()
        state = self.__dict__.copy()  # the folder choice pickles itself without its rank
        state.update(_exit_hook=False, _trainer=None, _experiment=None)
        return state

    def _rank_zero(self) -> bool:
        folder = self._folder  # the hot path (every log_metrics) reads the known rank; a worker's is resolved once
        return folder.rank == 0 or folder.rank_zero()

    def flush(self) -> None:
        """Block until everything logged so far is on disk (tests, notebooks)."""
        if self._run is not None:
            self._run.flush()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until what finishes after ``fit()`` returns (the sink host's TensorBoard and SwanLab files,
        ``plots/metrics.png``) is done, as a script's exit does by itself. False when ``timeout`` ran out first."""
        return True if self._run is None else self._run.wait(timeout)

    def __repr__(self) -> str:
        folder = self._folder
        where = folder.current.run_dir if folder.current is not None else folder.root / "<not started>"
        return f"RunLogger({str(where)!r})"


def _finalize_at_exit(ref: weakref.ReferenceType[RunLogger]) -> None:
    logger = ref()
    if logger is None or logger._run is None:
        return
    run = logger._run
    try:
        if run.active:
            logger.finalize("failed")
        elif not run.started and logger._folder.created_here:
            run.layout.run_dir.rmdir()  # asked for, never used: leave nothing behind
    except Exception:  # noqa: BLE001 - nothing to report to at interpreter exit
        pass

