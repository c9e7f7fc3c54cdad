"""HealthGuard: the Lightning callback that watches a fit and acts on the health checks.

Why: most wasted GPU hours are runs that were dead from the start (NaN loss, exploding loss, a
learning rate of 0, a hung step). The guard checks the warmup window closely, keeps only cheap
checks afterwards, and reports through :mod:`lightning_track.folder.signals` so ``lt-run``, a driver
script or a Slurm chain can act on it. The rules themselves are in :mod:`.checks`; this module
gathers their inputs from the Trainer at the right hooks and acts on their verdict.

Stopping: every rank takes the same decision at the same step (the flags are summed across ranks
in one small all-reduce per warmup step, :mod:`.collectives`), then every rank raises
:class:`~.checks.HealthCheckFailed`. ``trainer.should_stop`` is ignored before ``min_steps``, so an
exception is the only reliable stop. :class:`~.checks.HealthCheckFailed` derives from
``SystemExit`` (like Lightning's own ``SIGTERMException``): Lightning still runs its failure path
(``on_exception``, ``logger.finalize("failed")``), and when it propagates out of ``trainer.fit`` in
a plain ``python train.py`` the process exits with ``HEALTH_EXIT_CODE`` (86) without any extra
code in the script.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.apply_func import convert_tensors_to_scalars
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from ...derived import nodes as lost_nodes
from ...errors import ResumeError, one_line
from ...folder import signals
from ...run.distributed import destroy_process_group_at_exit
from ...run.logger import RunLogger
from ...run.meta import slurm_info
from ...vocabulary import DONE, EXIT_HEALTH, FAILED, HEALTHY
from ..targets import SignalTarget, find_run_logger, signal_target, training_starts
from . import checks
from .checks import Failure, HealthCheckFailed, WarmupLosses, classify_exception
from .collectives import any_rank, gather_objects
from .watchdog import StallWatchdog, stall_rule, stuck_in

__all__ = ["HealthGuard"]


class HealthGuard(Callback):
    """Guard the warmup window of a fit; write ``.healthy``, ``.failed`` and ``.done`` signals.

    Args:
        warmup_steps: optimizer steps (counted from where this fit started) that are checked
            closely; ``None`` to use ``health_time`` only.
        health_time: seconds of training after which warmup ends even if ``warmup_steps`` has not
            been reached (whichever comes first).
        loss_threshold: fail if the mean loss of the last ``loss_window`` warmup steps is still
            above this at the end of warmup (``None`` disables).
        explosion_abs: fail as soon as a loss exceeds this (``None`` disables).
        explosion_ratio: fail when a loss exceeds this times the baseline (mean of the first
            ``baseline_steps`` losses, only when the baseline is positive; ``None`` disables).
        stall_timeout: seconds without a finished step (train or validation batch) before the
            watchdog thread writes ``.failed`` ("stalled: no step for S s after step N"); ``"auto"``: the
            run's stall rule, ``max(stall_factor x the recent time per step, stall_floor)`` (the rule
            ``lt ls`` judges ``stalled`` by); ``None`` disables. The run is recorded ``failed`` and, when the
            step does not come back within ``stall_grace``, the process exits with ``exit_code`` (so a
            Slurm ``--requeue`` can take over).
        signals_dir: where signal files go. Default: ``$LIGHTNING_TRACK_SIGNALS_DIR`` (set by
            ``lt-run``), else ``<runs root>/signals`` with a RunLogger, else
            ``<default_root_dir>/signals`` (:func:`~lightning_track.callbacks.targets.signal_target`).
        exp_id: the signal file stem. Default: ``$LIGHTNING_TRACK_EXP_ID`` (set by ``lt-run``),
            else the run name with a RunLogger, else the name of ``default_root_dir``. With a
            RunLogger the guard writes ``<signals_dir>/<exp_id>.run`` (the run folder) at setup.
        stagnation_steps: fail when the loss has not improved by ``stagnation_min_delta`` for this
            many warmup steps (``None`` disables).
        check_grad_norm: check the total gradient norm for NaN/inf during warmup (skipped when a
            fp16 GradScaler is active: it handles inf gradients itself).
        check_lr: fail when every param group has learning rate 0 at the end of warmup.
        check_every_n_steps: after warmup, non-finite and exploding losses are accumulated on the
            device without a sync and looked at every this many steps.
        stall_factor, stall_floor: the ``"auto"`` rule's numbers; default: the RunLogger's (its
            ``stall_factor``, ``stall_floor``), else :data:`~lightning_track.vocabulary.STALL_FACTOR` and
            :data:`~lightning_track.vocabulary.STALL_FLOOR_S`.
        stall_grace: seconds the watchdog waits for the stuck step to come back (and raise) before
            it ends the process with ``os._exit(exit_code)``.
        exit_code: the process exit status on failure.
    """

    def __init__(
        self,
        warmup_steps: int | None = 100,
        health_time: float | None = None,
        loss_threshold: float | None = 10.0,
        explosion_abs: float | None = 1e10,
        explosion_ratio: float | None = 100.0,
        stall_timeout: float | str | None = None,
        signals_dir: str | os.PathLike[str] | None = None,
        exp_id: str | None = None,
        *,
        baseline_steps: int = 5,
        loss_window: int = 10,
        stagnation_steps: int | None = None,
        stagnation_min_delta: float = 0.0,
        check_grad_norm: bool = True,
        check_lr: bool = True,
        check_every_n_steps: int = 100,
        stall_grace: float = 30.0,
        stall_factor: float | None = None,
        stall_floor: float | None = None,
        exit_code: int = EXIT_HEALTH,
    ) -> None:
        if warmup_steps is None and health_time is None:
            raise ValueError("HealthGuard: give warmup_steps or health_time (both are None)")
        if isinstance(stall_timeout, str) and stall_timeout != "auto":
            raise ValueError(f"HealthGuard: stall_timeout must be seconds, 'auto' or None, got {stall_timeout!r}")
        for name, value in (("warmup_steps", warmup_steps), ("health_time", health_time),
                            ("stall_timeout", None if stall_timeout == "auto" else stall_timeout),
                            ("stagnation_steps", stagnation_steps), ("stall_factor", stall_factor),
                            ("stall_floor", stall_floor)):
            if value is not None and value <= 0:
                raise ValueError(f"HealthGuard: {name} must be positive, got {value!r}")
        if baseline_steps < 1 or loss_window < 1 or check_every_n_steps < 1:
            raise ValueError("HealthGuard: baseline_steps, loss_window and check_every_n_steps must be >= 1")
        if exp_id is not None:
            signals.check_exp_id(exp_id)
        self.warmup_steps = warmup_steps
        self.health_time = health_time
        self.loss_threshold = loss_threshold
        self.explosion_abs = explosion_abs
        self.explosion_ratio = explosion_ratio
        self.stall_timeout = stall_timeout
        self.baseline_steps = baseline_steps
        self.loss_window = loss_window
        self.stagnation_steps = stagnation_steps
        self.stagnation_min_delta = stagnation_min_delta
        self.check_grad_norm = check_grad_norm
        self.check_lr = check_lr
        self.check_every_n_steps = check_every_n_steps
        self.stall_grace = stall_grace
        self.stall_factor, self.stall_floor = stall_factor, stall_floor
        self.exit_code = exit_code
        self._signals_dir_arg = signals_dir
        self._exp_id_arg = exp_id
        self.target: SignalTarget | None = None  # where this run's signals go (set up by trainer.fit)
        self._reset()

    def _reset(self) -> None:
        """The state of one fit (the signal target survives: it is set up just before)."""
        self._start_step = 0
        self._t0 = time.monotonic()
        self._in_warmup = True
        self._judge_pending = False
        self._failed: HealthCheckFailed | None = None
        self._step_loss: torch.Tensor | None = None
        self._last_loss: torch.Tensor | None = None
        self._losses = WarmupLosses(
            explosion_abs=self.explosion_abs, explosion_ratio=self.explosion_ratio,
            baseline_steps=self.baseline_steps, stagnation_steps=self.stagnation_steps,
            stagnation_min_delta=self.stagnation_min_delta, loss_window=self.loss_window)
        self._dev_max: torch.Tensor | None = None
        self._post_steps = 0
        self._last_beat = time.monotonic()
        self._beats = 0
        self._thread_id: int | None = None  # the training thread (where a stall is stuck)
        self._watchdog: StallWatchdog | None = None
        self._stalled: HealthCheckFailed | None = None
        self._trainer: Any = None

    # -- where the signals go ------------------------------------------------------------------
    @property
    def signals_dir(self) -> Path | None:
        return self.target.signals_dir if self.target is not None else None

    @property
    def exp_id(self) -> str | None:
        return self.target.exp_id if self.target is not None else None

    @property
    def run_dir(self) -> Path | None:
        return self.target.run_dir if self.target is not None else None

    @override
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage != "fit":
            return
        # On every rank: find_layout inside is the RunLogger's sync point.
        self.target = signal_target(trainer, self._signals_dir_arg, self._exp_id_arg)
        if trainer.global_rank == 0:
            # lt-run learns the run folder now, not only from a health signal that may never come.
            try:
                self.target.write_run_note()
            except OSError as exc:
                print(f"HealthGuard: could not write {self.target.run_note}: {one_line(exc)}", file=sys.stderr)

    def signal_path(self, status: str) -> Path:
        """The text file of one of this run's signals (after ``setup``)."""
        if self.target is None:
            raise RuntimeError("HealthGuard: signal paths are known once trainer.fit has set the guard up")
        return self.target.path(status)

    def _write(self, trainer: Any, status: str, **fields: Any) -> None:
        assert self.target is not None
        fields.setdefault("run_dir", str(self.target.run_dir) if self.target.run_dir else None)
        fields.setdefault("rank", trainer.global_rank)
        self.target.write(status, **fields)

    def _record_failure(self, trainer: Any, failure: dict[str, Any]) -> None:
        """Put the failure into summary.json through the RunLogger (rank 0 owns the file)."""
        logger = find_run_logger(trainer)
        if logger is None or trainer.global_rank != 0:
            return
        try:
            logger.update_summary(status=FAILED, failure=failure)
        except (OSError, ValueError) as exc:
            print(f"HealthGuard: could not record the failure in summary.json: {exc}", file=sys.stderr)

    # -- lifecycle -------------------------------------------------------------------------------
    @override
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        training_starts(trainer)  # a refused resume raises here, before the signals are cleared
        self._reset()
        self._trainer = trainer
        self._start_step = trainer.global_step
        if trainer.global_rank == 0 and self.target is not None:
            self.target.clear()  # a resumed run starts without stale signals
        if self.stall_timeout is not None:
            self._thread_id = threading.get_ident()
            self._watchdog = StallWatchdog(self._stall_limit(trainer), self.stall_grace,
                                           last_beat=lambda: (self._last_beat, self._beats),
                                           on_stall=self._on_stall, on_grace_over=self._hard_exit)
            self._watchdog.start()

    def _stall_limit(self, trainer: Any) -> Callable[[float | None], float]:
        logger = find_run_logger(trainer)
        return stall_rule(self.stall_timeout, self.stall_factor or getattr(logger, "stall_factor", None),
                          self.stall_floor or getattr(logger, "stall_floor", None))

    def _beat(self) -> None:
        self._last_beat = time.monotonic()
        self._beats += 1
        if self._stalled is not None:
            raise self._stalled

    @override
    def on_validation_batch_end(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        self._beat()

    @override
    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._beat()

    @override
    def on_before_backward(self, trainer: Any, pl_module: Any, loss: torch.Tensor) -> None:
        # Automatic optimization hands over loss / accumulate_grad_batches: the sum over the
        # micro-batches of one optimizer step is the step's mean loss.
        loss = loss.detach()
        self._step_loss = loss if self._step_loss is None else self._step_loss + loss

    @override
    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        if self._stalled is not None:
            raise self._stalled
        loss_t, self._step_loss = self._step_loss, None
        if loss_t is not None:
            self._last_loss = loss_t
        if self._in_warmup:
            self._warmup_step(trainer, optimizer, loss_t)
        else:
            self._cheap_step(trainer, loss_t)

    def _warmup_step(self, trainer: Any, optimizer: Any, loss_t: torch.Tensor | None) -> None:
        step = trainer.global_step + 1  # the step this batch belongs to (its optimizer step is next)
        loss = float(loss_t) if loss_t is not None else None  # the one sync per warmup step
        grad_norm = None
        failure = self._losses.observe(loss) if loss is not None else None
        if failure is None and self.check_grad_norm and not self._grad_scaler_active(trainer):
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            if grads:
                grad_norm = float(torch.nn.utils.get_total_norm(grads, 2.0, error_if_nonfinite=False))
                failure = checks.grad_norm_failure(grad_norm)
        done = step - self._start_step
        time_up = self.health_time is not None and time.monotonic() - self._t0 >= self.health_time
        failed_any, time_up_any = any_rank(trainer, failure is not None, time_up)
        if failed_any:
            self._fail(trainer, failure, step=step, loss=loss, judged={"loss": loss, "grad_norm": grad_norm})
        if time_up_any or (self.warmup_steps is not None and done >= self.warmup_steps):
            self._judge_pending = True

    @staticmethod
    def _grad_scaler_active(trainer: Any) -> bool:
        return getattr(trainer.precision_plugin, "scaler", None) is not None

    def _cheap_step(self, trainer: Any, loss_t: torch.Tensor | None) -> None:
        # After warmup: no sync per step, one tiny device op. ``torch.maximum`` propagates NaN, so
        # the running max catches NaN, +inf and spikes alike; it is looked at every N steps.
        if loss_t is not None:
            self._dev_max = loss_t if self._dev_max is None else torch.maximum(self._dev_max, loss_t)
        self._post_steps += 1
        if self._post_steps % self.check_every_n_steps:
            return
        step = trainer.global_step + 1  # the step this batch belongs to (its optimizer step is next)
        peak = float(self._dev_max) if self._dev_max is not None else None
        self._dev_max = None
        failure = checks.peak_failure(peak, step - self.check_every_n_steps + 1, step, self.explosion_abs,
                                      self.explosion_ratio, self._losses.baseline)
        (failed_any,) = any_rank(trainer, failure is not None)
        if failed_any:
            self._fail(trainer, failure, step=step, loss=None,
                       judged={"loss": float(loss_t) if loss_t is not None else None})

    @override
    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._beat()
        if self._judge_pending:
            self._judge(trainer)

    @override
    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self._in_warmup and self._failed is None:
            self._judge(trainer)  # a fit shorter than warmup still gets a verdict

    def _judge(self, trainer: Any) -> None:
        """End of warmup: the loss must be below the threshold and some learning rate above 0."""
        self._judge_pending = False
        self._in_warmup = False
        step = trainer.global_step
        lrs = [float(group.get("lr", 0.0)) for opt in trainer.optimizers for group in opt.param_groups]
        mean, failure = self._losses.verdict(self.loss_threshold, lrs, self.check_lr)
        (failed_any,) = any_rank(trainer, failure is not None)
        if failed_any:
            last = float(self._last_loss) if self._last_loss is not None else None
            self._fail(trainer, failure, step=step, loss=mean, judged={"loss": last})
        if trainer.global_rank == 0:
            self._write(trainer, HEALTHY, step=step, loss=mean, learning_rates=lrs,
                        warmup_steps=step - self._start_step, warmup_seconds=round(time.monotonic() - self._t0, 3))

    @override
    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._stop_watchdog()
        if trainer.global_rank == 0 and self.target is not None:
            loss = float(self._last_loss) if self._last_loss is not None else None
            self._write(trainer, DONE, step=trainer.global_step, loss=loss)

    @override
    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._stop_watchdog()
        if isinstance(exception, (HealthCheckFailed, ResumeError)) or self.target is None:
            return  # already reported; or a refused resume, which must leave the run's signals as they were
        check, reason = classify_exception(exception)
        failure = {"check": check, "reason": reason, "step": trainer.global_step, "rank": trainer.global_rank}
        if trainer.global_rank == 0 and lost_nodes.peer_lost(reason):
            failure = self._with_lost_nodes(trainer, failure, wait=True)
        # Any rank may write: an exception on rank 1 alone would otherwise never be reported.
        self._write(trainer, FAILED, **failure)
        self._record_failure(trainer, failure)

    @override
    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._stop_watchdog()

    def _stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None

    # -- the decision ----------------------------------------------------------------------------
    def _fail(self, trainer: Any, failure: Failure | None, *, step: int, loss: float | None,
              judged: dict[str, float | None]) -> None:
        """Called on every rank at the same step: pick the root cause, record the evidence, report it, raise.

        ``judged``: this rank's values the checks looked at in this step (``loss``, ``grad_norm``).
        """
        if failure is not None:  # the loss of the rank that failed, not rank 0's
            failure = {**failure, "rank": trainer.global_rank, "step": step, "loss": loss}
        chosen, ranks = checks.root_cause(gather_objects(trainer, failure))
        exc = HealthCheckFailed.from_failure(chosen, step=step, exit_code=self.exit_code)
        self._failed = exc
        self._stop_watchdog()
        if trainer.global_rank == 0:
            self._log_failing_batch(trainer, judged, step)
            extra = {k: v for k, v in chosen.items() if k not in exc.as_dict()}
            self._write(trainer, FAILED, **exc.as_dict(), ranks=ranks, **extra)
            self._record_failure(trainer, {**exc.as_dict(), **extra})
        print(f"HealthGuard[rank {trainer.global_rank}]: {exc} (exit code {self.exit_code})", file=sys.stderr,
              flush=True)
        if trainer.world_size > 1:
            destroy_process_group_at_exit()  # the exit code must be ours, not gloo's teardown abort
        raise exc

    @staticmethod
    def _log_failing_batch(trainer: Any, judged: dict[str, float | None], step: int) -> None:
        """Log the failing batch's values, which the raise would otherwise lose.

        Lightning logs a training batch's values after its ``on_train_batch_end`` hooks, and every
        check raises before that: without this the failing step (the NaN itself) would be in no
        file and the curves would end on a healthy-looking step. Logged into every logger of the
        trainer (as Lightning would; the RunLogger at ``step``, the step the batch belongs to): what the
        module logged in this batch (``self.log``) plus what the guard judged (``health/loss``,
        ``health/grad_norm``).
        """
        values = _batch_logged_values(trainer)
        values.update({f"health/{name}": value for name, value in judged.items() if value is not None})
        if not values:
            return
        values.setdefault("epoch", trainer.current_epoch)
        lightning_step = getattr(getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None),
                                 "_batches_that_stepped", trainer.global_step)
        for logger in trainer.loggers:
            try:  # a RunLogger records the step the batch belongs to; other loggers get Lightning's own
                logger.log_metrics(values, step=step if isinstance(logger, RunLogger) else lightning_step)
            except Exception as exc:  # noqa: BLE001 - the failure itself must still be reported
                print(f"HealthGuard: could not log the failing step's values to {type(logger).__name__}: "
                      f"{one_line(exc)}", file=sys.stderr)

    # -- stall (called from the watchdog thread; never touches CUDA) -----------------------------
    def _on_stall(self, waited: float, limit: float) -> None:
        trainer = self._trainer
        step = trainer.global_step if trainer is not None else None
        where = stuck_in(self._thread_id, getattr(trainer, "world_size", 1) > 1)
        failure = {**checks.stall_failure(limit, waited, step, where),
                   "rank": trainer.global_rank if trainer is not None else None}
        exc = HealthCheckFailed.from_failure(failure, step=step, exit_code=self.exit_code)
        self._stalled = exc
        print(f"HealthGuard[rank {exc.rank}]: {exc}", file=sys.stderr, flush=True)
        if trainer is not None and trainer.global_rank == 0 and self.target is not None:
            record = self._with_lost_nodes(trainer, exc.as_dict(), wait=False)
            self._write(trainer, FAILED, **record)
            self._record_failure(trainer, record)

    def _with_lost_nodes(self, trainer: Any, failure: dict[str, Any], *, wait: bool) -> dict[str, Any]:
        """``failure`` naming the nodes (and ranks) that stopped writing into the run folder (multi-node runs)."""
        nodes, logger = int(getattr(trainer, "num_nodes", 1) or 1), find_run_logger(trainer)
        if nodes < 2 or logger is None:
            return failure
        return lost_nodes.name_lost_nodes(failure, logger.layout, nodes=nodes, wait=wait,
                                          ranks_per_node=max(1, trainer.world_size // nodes),
                                          system_interval=logger.system_interval,
                                          names=(slurm_info() or {}).get("nodes") or [])

    def _hard_exit(self) -> None:
        """The stuck step never came back: finish the run's files and end the process."""
        trainer = self._trainer
        logger = find_run_logger(trainer) if trainer is not None else None
        if logger is not None and trainer.global_rank == 0:
            try:
                logger.finalize(FAILED)
            except Exception as exc:  # noqa: BLE001 - exiting anyway; say why the files may lag
                print(f"HealthGuard: finalize after stall failed: {exc!r}", file=sys.stderr)
        print(f"HealthGuard[rank {getattr(trainer, 'global_rank', '?')}]: step still stuck after "
              f"{self.stall_grace:g} s grace; exiting with code {self.exit_code}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(self.exit_code)


def _batch_logged_values(trainer: Any) -> dict[str, float]:
    """What the module logged (``self.log``, per step) in the current training batch, as Lightning
    would hand it to the loggers after the batch. Lightning keeps it in its private logger connector
    (read on the step path only: no sync); an empty dict where that is not available."""
    try:
        logged = trainer._logger_connector.metrics["log"]
    except (AttributeError, KeyError, TypeError, AssertionError):
        return {}
    values: dict[str, float] = {}
    for name, value in convert_tensors_to_scalars(dict(logged)).items():
        try:
            values[name] = float(value)
        except (TypeError, ValueError):
            continue
    return values
