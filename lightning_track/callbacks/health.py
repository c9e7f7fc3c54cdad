"""HealthGuard: stop a run that is broken in its first minutes, and say so in signal files.

Why: most wasted GPU hours are runs that were dead from the start (NaN loss, exploding loss, a
learning rate of 0, a hung step). The guard checks the warmup window closely, keeps only cheap
checks afterwards, and reports through :mod:`lightning_track.folder.signals` so ``lt-run``, a driver script
or a Slurm chain can act on it.

Stopping: every rank takes the same decision at the same step (the flags are summed across ranks
in one small all-reduce per warmup step), then every rank raises :class:`HealthCheckFailed`.
``trainer.should_stop`` is ignored before ``min_steps``, so an exception is the only reliable stop.
:class:`HealthCheckFailed` derives from ``SystemExit`` (like Lightning's own ``SIGTERMException``):
Lightning still runs its failure path (``on_exception``, ``logger.finalize("failed")``), and when
it propagates out of ``trainer.fit`` in a plain ``python train.py`` the process exits with
:data:`HEALTH_EXIT_CODE` (86) without any extra code in the script.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from ..folder import signals
from ..folder.layout import RunLayout, sanitize_name
from ..run.distributed import destroy_process_group_at_exit
from ._paths import find_layout, find_run_logger

__all__ = ["HealthGuard", "HealthCheckFailed", "HEALTH_EXIT_CODE", "classify_exception"]

HEALTH_EXIT_CODE = 86

# When several ranks fail at once, report the root cause: a NaN loss on rank 1 makes the
# all-reduced gradients NaN on every rank, but the loss check is what actually fired first.
_PRIORITY = ("nonfinite_loss", "loss_explosion", "nonfinite_grad_norm", "stagnation", "loss_threshold", "zero_lr",
             "stall")


class HealthCheckFailed(SystemExit):
    """A health check failed; ``exit_code`` (default 86) becomes the process exit status.

    A ``SystemExit`` so that ``except Exception`` in user code does not swallow the stop and an
    uncaught one ends the process with the guard's code. Fields: ``check``, ``reason``, ``step``,
    ``value``, ``threshold``, ``rank``.
    """

    def __init__(
        self,
        check: str,
        reason: str,
        *,
        step: int | None = None,
        value: float | None = None,
        threshold: float | None = None,
        rank: int | None = None,
        exit_code: int = HEALTH_EXIT_CODE,
    ) -> None:
        super().__init__(exit_code)
        self.check, self.reason, self.step = check, reason, step
        self.value, self.threshold, self.rank = value, threshold, rank
        self.exit_code = exit_code

    def __str__(self) -> str:
        where = f" at step {self.step}" if self.step is not None else ""
        rank = f" on rank {self.rank}" if self.rank else ""
        return f"health check {self.check!r} failed{where}{rank}: {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "reason": self.reason, "step": self.step, "value": self.value,
                "threshold": self.threshold, "rank": self.rank}


def classify_exception(exc: BaseException) -> tuple[str, str]:
    """``(check, reason)`` for an exception that ended a run: CUDA OOM, other CUDA errors, the rest."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    name = type(exc).__name__
    if isinstance(exc, torch.cuda.OutOfMemoryError) or "CUDA out of memory" in message:
        return "cuda_oom", f"CUDA out of memory: {message}"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", "KeyboardInterrupt (SIGINT)"
    if isinstance(exc, SIGTERMException):
        return "terminated", "SIGTERM received"
    accelerator_error = getattr(torch, "AcceleratorError", ())
    if (accelerator_error and isinstance(exc, accelerator_error)) or (
        isinstance(exc, RuntimeError) and ("CUDA" in message or "cuda" in message or "NCCL" in message)
    ):
        return "cuda_error", f"{name}: {message}"
    return "exception", f"{name}: {message}" if message else name


def _finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))


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
            watchdog thread writes ``.failed`` ("stalled: ..."); ``None`` disables.
        signals_dir: where signal files go. Default: ``$LIGHTNING_TRACK_SIGNALS_DIR`` (set by
            ``lt-run``), else ``<runs root>/signals`` with a RunLogger, else
            ``<default_root_dir>/signals``.
        exp_id: the signal file stem. Default: ``$LIGHTNING_TRACK_EXP_ID`` (set by ``lt-run``),
            else the run name with a RunLogger, else the name of ``default_root_dir``.
        stagnation_steps: fail when the loss has not improved by ``stagnation_min_delta`` for this
            many warmup steps (``None`` disables).
        check_grad_norm: check the total gradient norm for NaN/inf during warmup (skipped when a
            fp16 GradScaler is active: it handles inf gradients itself).
        check_lr: fail when every param group has learning rate 0 at the end of warmup.
        check_every_n_steps: after warmup, non-finite and exploding losses are accumulated on the
            device without a sync and looked at every this many steps.
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
        stall_timeout: float | None = None,
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
        exit_code: int = HEALTH_EXIT_CODE,
    ) -> None:
        if warmup_steps is None and health_time is None:
            raise ValueError("HealthGuard: give warmup_steps or health_time (both are None)")
        for name, value in (("warmup_steps", warmup_steps), ("health_time", health_time),
                            ("stall_timeout", stall_timeout), ("stagnation_steps", stagnation_steps)):
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
        self.exit_code = exit_code
        self._signals_dir_arg = signals_dir
        self._exp_id_arg = exp_id
        self.signals_dir: Path | None = None
        self.exp_id: str | None = None
        self.run_dir: Path | None = None
        self._reset()

    def _reset(self) -> None:
        self._layout: RunLayout | None = None
        self._start_step = 0
        self._t0 = time.monotonic()
        self._in_warmup = True
        self._judge_pending = False
        self._failed: HealthCheckFailed | None = None
        self._step_loss: torch.Tensor | None = None
        self._last_loss: torch.Tensor | None = None
        self._losses: deque[float] = deque(maxlen=self.loss_window)
        self._baseline_values: list[float] = []
        self._baseline: float | None = None
        self._best = math.inf
        self._since_best = 0
        self._dev_max: torch.Tensor | None = None
        self._post_steps = 0
        self._last_beat = time.monotonic()
        self._watchdog: _StallWatchdog | None = None
        self._stalled: HealthCheckFailed | None = None
        self._trainer: Any = None

    # -- where the signals go ------------------------------------------------------------------
    @override
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage != "fit":
            return
        layout = find_layout(trainer)  # on every rank: the RunLogger's sync point
        has_run_logger = find_run_logger(trainer) is not None
        self._layout = layout
        env_dir = os.environ.get(signals.ENV_SIGNALS_DIR)
        if self._signals_dir_arg is not None:
            self.signals_dir = Path(self._signals_dir_arg)
        elif env_dir:
            self.signals_dir = Path(env_dir)
        else:
            self.signals_dir = layout.signals_dir if has_run_logger else layout.run_dir / RunLayout.SIGNALS
        env_id = os.environ.get(signals.ENV_EXP_ID)
        if self._exp_id_arg is not None:
            self.exp_id = self._exp_id_arg
        elif env_id:
            self.exp_id = signals.check_exp_id(env_id)
        elif has_run_logger:
            self.exp_id = layout.name
        else:
            self.exp_id = sanitize_name(Path(trainer.default_root_dir).resolve().name or "run", what="exp_id")
        self.run_dir = layout.run_dir.resolve() if has_run_logger else None

    def signal_path(self, status: str) -> Path:
        """The text file of one of this run's signals (after ``setup``)."""
        if self.signals_dir is None or self.exp_id is None:
            raise RuntimeError("HealthGuard: signal paths are known once trainer.fit has set the guard up")
        return signals.signal_path(self.signals_dir, self.exp_id, status)

    def _write(self, trainer: Any, status: str, **fields: Any) -> None:
        assert self.signals_dir is not None and self.exp_id is not None
        fields.setdefault("run_dir", str(self.run_dir) if self.run_dir else None)
        fields.setdefault("rank", trainer.global_rank)
        signals.write_signal(self.signals_dir, self.exp_id, status, **fields)

    def _record_failure(self, trainer: Any, failure: dict[str, Any]) -> None:
        """Put the failure into summary.json through the RunLogger (rank 0 owns the file)."""
        logger = find_run_logger(trainer)
        if logger is None or trainer.global_rank != 0:
            return
        try:
            logger.update_summary(status="failed", failure=failure)
        except (OSError, ValueError) as exc:
            print(f"HealthGuard: could not record the failure in summary.json: {exc}", file=sys.stderr)

    # -- lifecycle -------------------------------------------------------------------------------
    @override
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        layout, signals_dir, exp_id, run_dir = self._layout, self.signals_dir, self.exp_id, self.run_dir
        self._reset()
        self._layout, self.signals_dir, self.exp_id, self.run_dir = layout, signals_dir, exp_id, run_dir
        self._trainer = trainer
        self._start_step = trainer.global_step
        if trainer.global_rank == 0 and self.signals_dir is not None and self.exp_id is not None:
            signals.clear_signals(self.signals_dir, self.exp_id)  # a resumed run starts without stale signals
        if self.stall_timeout is not None:
            self._watchdog = _StallWatchdog(self, self.stall_timeout, self.stall_grace)
            self._watchdog.start()

    def _beat(self) -> None:
        self._last_beat = time.monotonic()
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
        step = trainer.global_step
        loss = float(loss_t) if loss_t is not None else None  # the one sync per warmup step
        failure = self._loss_checks(step, loss)
        if failure is None and self.check_grad_norm and not self._grad_scaler_active(trainer):
            grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            if grads:
                norm = float(torch.nn.utils.get_total_norm(grads, 2.0, error_if_nonfinite=False))
                if not _finite(norm):
                    failure = {"check": "nonfinite_grad_norm", "reason": f"gradient norm is {norm}",
                               "value": norm, "threshold": None}
        done = step + 1 - self._start_step
        time_up = self.health_time is not None and time.monotonic() - self._t0 >= self.health_time
        failed_any, time_up_any = self._any(trainer, failure is not None, time_up)
        if failed_any:
            self._fail(trainer, failure, step=step, loss=loss)
        if loss is not None and _finite(loss):
            self._losses.append(loss)
        if time_up_any or (self.warmup_steps is not None and done >= self.warmup_steps):
            self._judge_pending = True

    def _loss_checks(self, step: int, loss: float | None) -> dict[str, Any] | None:
        if loss is None:
            return None
        if not _finite(loss):
            return {"check": "nonfinite_loss", "reason": f"loss is {loss}", "value": loss, "threshold": None}
        if self.explosion_abs is not None and loss > self.explosion_abs:
            return {"check": "loss_explosion", "reason": f"loss {loss:.6g} > explosion_abs {self.explosion_abs:g}",
                    "value": loss, "threshold": self.explosion_abs}
        if self._baseline is None:
            self._baseline_values.append(loss)
            if len(self._baseline_values) >= self.baseline_steps:
                self._baseline = sum(self._baseline_values) / len(self._baseline_values)
        elif self.explosion_ratio is not None and self._baseline > 0:
            limit = self.explosion_ratio * self._baseline
            if loss > limit:
                return {"check": "loss_explosion",
                        "reason": f"loss {loss:.6g} > {self.explosion_ratio:g} x baseline {self._baseline:.6g}",
                        "value": loss, "threshold": limit, "baseline": self._baseline}
        if self.stagnation_steps is not None:
            if loss < self._best - self.stagnation_min_delta:
                self._best, self._since_best = loss, 0
            else:
                self._since_best += 1
                if self._since_best >= self.stagnation_steps:
                    return {"check": "stagnation",
                            "reason": f"no improvement on best loss {self._best:.6g} for {self._since_best} steps",
                            "value": loss, "threshold": self._best}
        return None

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
        step = trainer.global_step
        first = step - self.check_every_n_steps + 1
        failure = None
        peak = float(self._dev_max) if self._dev_max is not None else None
        self._dev_max = None
        if peak is not None and not _finite(peak):
            failure = {"check": "nonfinite_loss", "value": peak, "threshold": None,
                       "reason": f"non-finite loss ({peak}) between steps {first} and {step}"}
        elif peak is not None:
            limits = []
            if self.explosion_abs is not None:
                limits.append((self.explosion_abs, f"explosion_abs {self.explosion_abs:g}"))
            if self.explosion_ratio is not None and self._baseline is not None and self._baseline > 0:
                limits.append((self.explosion_ratio * self._baseline,
                               f"{self.explosion_ratio:g} x baseline {self._baseline:.6g}"))
            for limit, what in limits:
                if peak > limit:
                    failure = {"check": "loss_explosion",
                               "reason": f"loss {peak:.6g} > {what} between steps {first} and {step}",
                               "value": peak, "threshold": limit}
                    break
        (failed_any,) = self._any(trainer, failure is not None)
        if failed_any:
            self._fail(trainer, failure, step=step, loss=None)

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
        mean = sum(self._losses) / len(self._losses) if self._losses else None
        failure = None
        if self.loss_threshold is not None and mean is not None and mean > self.loss_threshold:
            failure = {"check": "loss_threshold",
                       "reason": f"mean loss of the last {len(self._losses)} steps {mean:.6g} is above "
                                 f"loss_threshold {self.loss_threshold:g} at the end of warmup",
                       "value": mean, "threshold": self.loss_threshold}
        lrs = [float(group.get("lr", 0.0)) for opt in trainer.optimizers for group in opt.param_groups]
        if failure is None and self.check_lr and lrs and all(lr == 0.0 for lr in lrs):
            failure = {"check": "zero_lr", "reason": "learning rate is 0 on every param group at the end of warmup",
                       "value": 0.0, "threshold": 0.0}
        (failed_any,) = self._any(trainer, failure is not None)
        if failed_any:
            self._fail(trainer, failure, step=step, loss=mean)
        if trainer.global_rank == 0:
            self._write(trainer, signals.HEALTHY, step=step, loss=mean, learning_rates=lrs,
                        warmup_steps=step - self._start_step, warmup_seconds=round(time.monotonic() - self._t0, 3))

    @override
    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._stop_watchdog()
        if trainer.global_rank == 0 and self.signals_dir is not None:
            loss = float(self._last_loss) if self._last_loss is not None else None
            self._write(trainer, signals.DONE, step=trainer.global_step, loss=loss)

    @override
    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._stop_watchdog()
        if isinstance(exception, HealthCheckFailed) or self.signals_dir is None:
            return  # already reported
        check, reason = classify_exception(exception)
        failure = {"check": check, "reason": reason, "step": trainer.global_step, "rank": trainer.global_rank}
        # Any rank may write: an exception on rank 1 alone would otherwise never be reported.
        self._write(trainer, signals.FAILED, **failure)
        self._record_failure(trainer, failure)

    @override
    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._stop_watchdog()

    def _stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None

    # -- the decision ----------------------------------------------------------------------------
    @staticmethod
    def _any(trainer: Any, *flags: bool) -> list[bool]:
        """Each flag OR-ed across ranks in one all-reduce, so every rank decides alike."""
        if trainer.world_size <= 1:
            return list(flags)
        tensor = torch.tensor([float(f) for f in flags], device=trainer.strategy.root_device)
        tensor = trainer.strategy.reduce(tensor, reduce_op="sum")
        return [v > 0 for v in tensor.tolist()]

    @staticmethod
    def _gather(trainer: Any, obj: Any) -> list[Any]:
        import torch.distributed as dist

        if trainer.world_size <= 1 or not (dist.is_available() and dist.is_initialized()):
            return [obj]
        out: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out

    def _fail(self, trainer: Any, failure: dict[str, Any] | None, *, step: int, loss: float | None) -> None:
        """Called on every rank at the same step: pick the root cause, report it, raise."""
        if failure is not None:  # the loss of the rank that failed, not rank 0's
            failure = {**failure, "rank": trainer.global_rank, "step": step, "loss": loss}
        found = [f for f in self._gather(trainer, failure) if f is not None]
        found.sort(key=lambda f: (_PRIORITY.index(f["check"]) if f["check"] in _PRIORITY else len(_PRIORITY),
                                  f["rank"]))
        chosen = found[0] if found else {"check": "unknown", "reason": "another rank failed", "rank": None}
        exc = HealthCheckFailed(chosen["check"], chosen["reason"], step=step, value=chosen.get("value"),
                                threshold=chosen.get("threshold"), rank=chosen.get("rank"), exit_code=self.exit_code)
        self._failed = exc
        self._stop_watchdog()
        if trainer.global_rank == 0:
            extra = {k: v for k, v in chosen.items() if k not in exc.as_dict()}
            ranks = {str(f["rank"]): f["check"] for f in found} if len(found) > 1 else None
            self._write(trainer, signals.FAILED, **exc.as_dict(), ranks=ranks, **extra)
            self._record_failure(trainer, {**exc.as_dict(), **extra})
        print(f"HealthGuard[rank {trainer.global_rank}]: {exc} (exit code {self.exit_code})", file=sys.stderr,
              flush=True)
        if trainer.world_size > 1:
            destroy_process_group_at_exit()  # the exit code must be ours, not gloo's teardown abort
        raise exc

    # -- stall watchdog (runs in its own thread; never touches CUDA) -----------------------------
    def _on_stall(self, waited: float) -> None:
        trainer = self._trainer
        reason = f"stalled: no step finished within {self.stall_timeout:g} s"
        step = trainer.global_step if trainer is not None else None
        exc = HealthCheckFailed("stall", reason, step=step, value=round(waited, 3), threshold=self.stall_timeout,
                                rank=trainer.global_rank if trainer is not None else None, exit_code=self.exit_code)
        self._stalled = exc
        print(f"HealthGuard[rank {exc.rank}]: {exc}", file=sys.stderr, flush=True)
        if trainer is not None and trainer.global_rank == 0 and self.signals_dir is not None:
            self._write(trainer, signals.FAILED, **exc.as_dict())
            self._record_failure(trainer, exc.as_dict())

    def _hard_exit(self) -> None:
        """The stuck step never came back: finish the run's files and end the process."""
        trainer = self._trainer
        logger = find_run_logger(trainer) if trainer is not None else None
        if logger is not None and trainer.global_rank == 0:
            try:
                logger.finalize("failed")
            except Exception as exc:  # noqa: BLE001 - exiting anyway; say why the files may lag
                print(f"HealthGuard: finalize after stall failed: {exc!r}", file=sys.stderr)
        print(f"HealthGuard[rank {getattr(trainer, 'global_rank', '?')}]: step still stuck after "
              f"{self.stall_grace:g} s grace; exiting with code {self.exit_code}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(self.exit_code)


class _StallWatchdog(threading.Thread):
    """Fires when no step finished for ``timeout`` s; ends the process ``grace`` s later."""

    def __init__(self, guard: HealthGuard, timeout: float, grace: float) -> None:
        super().__init__(name="lightning_track-stall-watchdog", daemon=True)
        self.guard, self.timeout, self.grace = guard, timeout, grace
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        poll = min(1.0, self.timeout / 4)
        while not self._stop_event.wait(poll):
            waited = time.monotonic() - self.guard._last_beat
            if waited >= self.timeout:
                self.guard._on_stall(waited)
                if not self._stop_event.wait(self.grace):
                    self.guard._hard_exit()
                return
