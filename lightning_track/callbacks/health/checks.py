"""The health checks as plain decisions: numbers in, a failure record (or ``None``) out.

Why apart from the callback: every rule that says "this run is broken" (a loss that is not finite
or too high, a broken gradient norm, a learning rate of 0, which failure is the root cause when
ranks disagree) is a function of a few floats. Kept free of the Trainer (and of torch, which
:func:`classify_exception` imports only when it is called), the rules read in one place and are
tested in microseconds; :class:`~lightning_track.callbacks.health.guard.HealthGuard` only gathers
the numbers (one sync per warmup step), agrees with the other ranks and acts on the verdict.

A failure is a dict ``{"check", "reason", "value", "threshold"}`` (sometimes with details such as
``baseline``): exactly the fields the ``.failed`` signal and ``summary.json`` receive.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from ...vocabulary import EXIT_HEALTH, INTERRUPTED

__all__ = [
    "HealthCheckFailed", "Failure", "PRIORITY", "STOP_CHECKS",
    "NONFINITE_LOSS", "LOSS_EXPLOSION", "NONFINITE_GRAD_NORM", "STAGNATION", "LOSS_THRESHOLD", "ZERO_LR", "STALL",
    "CUDA_OOM", "CUDA_ERROR", "TERMINATED", "EXCEPTION", "UNKNOWN",
    "finite", "loss_failure", "baseline_failure", "grad_norm_failure", "warmup_verdict", "peak_failure",
    "stall_failure", "waiting_in", "root_cause", "classify_exception", "WarmupLosses",
]


Failure = dict[str, Any]

# -- check names: the ``check`` field of a signal, of summary.json's ``failure`` and of HealthCheckFailed
NONFINITE_LOSS = "nonfinite_loss"
LOSS_EXPLOSION = "loss_explosion"
NONFINITE_GRAD_NORM = "nonfinite_grad_norm"
STAGNATION = "stagnation"
LOSS_THRESHOLD = "loss_threshold"
ZERO_LR = "zero_lr"
STALL = "stall"
# exceptions that ended the fit (classify_exception)
CUDA_OOM = "cuda_oom"
CUDA_ERROR = "cuda_error"
# INTERRUPTED (Ctrl+C) is the run status word itself, so the signal and summary.json say the same
TERMINATED = "terminated"  # Lightning's SIGTERMException
EXCEPTION = "exception"
UNKNOWN = "unknown"  # this rank saw nothing; another rank failed

# A deliberate stop, not a failure: PreemptionHandler replaces a HealthGuard's report of these.
STOP_CHECKS = (INTERRUPTED, TERMINATED)

# When several ranks fail at once, report the root cause: a NaN loss on rank 1 makes the
# all-reduced gradients NaN on every rank, but the loss check is what actually fired first.
PRIORITY = (NONFINITE_LOSS, LOSS_EXPLOSION, NONFINITE_GRAD_NORM, STAGNATION, LOSS_THRESHOLD, ZERO_LR, STALL)


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
        exit_code: int = EXIT_HEALTH,
    ) -> None:
        super().__init__(exit_code)
        self.check, self.reason, self.step = check, reason, step
        self.value, self.threshold, self.rank = value, threshold, rank
        self.exit_code = exit_code

    @classmethod
    def from_failure(cls, failure: Failure, *, step: int | None, exit_code: int) -> HealthCheckFailed:
        return cls(failure["check"], failure["reason"], step=step, value=failure.get("value"),
                   threshold=failure.get("threshold"), rank=failure.get("rank"), exit_code=exit_code)

    def __str__(self) -> str:
        where = f" at step {self.step}" if self.step is not None else ""
        rank = f" on rank {self.rank}" if self.rank else ""
        return f"health check {self.check!r} failed{where}{rank}: {self.reason}"

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "reason": self.reason, "step": self.step, "value": self.value,
                "threshold": self.threshold, "rank": self.rank}


def finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))


def loss_failure(loss: float, explosion_abs: float | None) -> Failure | None:
    """A warmup step's loss on its own: not finite, or above the absolute limit."""
    if not finite(loss):
        return {"check": NONFINITE_LOSS, "reason": f"loss is {loss}", "value": loss, "threshold": None}
    if explosion_abs is not None and loss > explosion_abs:
        return {"check": LOSS_EXPLOSION, "reason": f"loss {loss:.6g} > explosion_abs {explosion_abs:g}",
                "value": loss, "threshold": explosion_abs}
    return None


def baseline_failure(loss: float, baseline: float | None, explosion_ratio: float | None) -> Failure | None:
    """A loss above ``explosion_ratio`` x the baseline (only a positive baseline is a scale)."""
    if baseline is None or explosion_ratio is None or baseline <= 0:
        return None
    limit = explosion_ratio * baseline
    if loss > limit:
        return {"check": LOSS_EXPLOSION, "reason": f"loss {loss:.6g} > {explosion_ratio:g} x baseline {baseline:.6g}",
                "value": loss, "threshold": limit, "baseline": baseline}
    return None


def grad_norm_failure(norm: float) -> Failure | None:
    """The total gradient norm of a warmup step: NaN or inf is a failure."""
    if finite(norm):
        return None
    return {"check": NONFINITE_GRAD_NORM, "reason": f"gradient norm is {norm}", "value": norm, "threshold": None}


def warmup_verdict(losses: Sequence[float], loss_threshold: float | None, learning_rates: Sequence[float],
                   check_lr: bool) -> tuple[float | None, Failure | None]:
    """End of warmup: ``(mean of the last losses, failure)``.

    The mean must not be above ``loss_threshold``, and some learning rate must be above 0 (a
    scheduler that starts at 0 and warms up passes: it is above 0 by the end of warmup).
    """
    mean = sum(losses) / len(losses) if losses else None
    if loss_threshold is not None and mean is not None and mean > loss_threshold:
        return mean, {"check": LOSS_THRESHOLD,
                      "reason": f"mean loss of the last {len(losses)} steps {mean:.6g} is above "
                                f"loss_threshold {loss_threshold:g} at the end of warmup",
                      "value": mean, "threshold": loss_threshold}
    if check_lr and learning_rates and all(lr == 0.0 for lr in learning_rates):
        return mean, {"check": ZERO_LR, "reason": "learning rate is 0 on every param group at the end of warmup",
                      "value": 0.0, "threshold": 0.0}
    return mean, None


def peak_failure(peak: float | None, first: int, step: int, explosion_abs: float | None,
                 explosion_ratio: float | None, baseline: float | None) -> Failure | None:
    """After warmup: the running maximum of the losses of steps ``first`` to ``step``.

    The maximum propagates NaN, so one number covers NaN, +inf and spikes; -inf is not seen.
    """
    if peak is None:
        return None
    if not finite(peak):
        return {"check": NONFINITE_LOSS, "value": peak, "threshold": None,
                "reason": f"non-finite loss ({peak}) between steps {first} and {step}"}
    limits = []
    if explosion_abs is not None:
        limits.append((explosion_abs, f"explosion_abs {explosion_abs:g}"))
    if explosion_ratio is not None and baseline is not None and baseline > 0:
        limits.append((explosion_ratio * baseline, f"{explosion_ratio:g} x baseline {baseline:.6g}"))
    for limit, what in limits:
        if peak > limit:
            return {"check": LOSS_EXPLOSION, "reason": f"loss {peak:.6g} > {what} between steps {first} and {step}",
                    "value": peak, "threshold": limit}
    return None


def stall_failure(limit: float, waited: float, step: int | None = None, waiting_in: str | None = None) -> Failure:
    """No step finished for ``waited`` >= ``limit`` seconds after ``step``; ``waiting_in``: the call the
    training thread is stuck in, where it is known (:func:`waiting_in`)."""
    after = f" after step {step}" if step is not None else ""
    where = f" (waiting in {waiting_in})" if waiting_in else ""
    return {"check": STALL, "reason": f"stalled: no step for {waited:.0f} s{after}{where}", "value": round(waited, 3),
            "threshold": round(limit, 3)}


# torch.distributed's collectives, by the name of the Python function a stuck thread is in
_COLLECTIVES = ("all_reduce", "all_gather", "all_gather_object", "all_to_all", "broadcast", "broadcast_object_list",
                "reduce_scatter", "reduce", "gather", "scatter", "barrier", "monitored_barrier", "send", "recv")


def waiting_in(frames: Sequence[tuple[str, str]], distributed: bool) -> str | None:
    """The call a stuck training thread waits in, from its stack (``(file, function)``, innermost first):
    a ``torch.distributed`` collective by name; in a multi-process run, ``backward`` (DDP all-reduces the
    gradients inside it) as ``"backward (the gradient all_reduce)"``; else None (not known)."""
    for filename, function in frames:
        if function in _COLLECTIVES and "distributed" in filename.replace("\\", "/"):
            return function
    if distributed and any(function == "backward" and "torch" in filename for filename, function in frames):
        return "backward (the gradient all_reduce)"
    return None


def root_cause(failures: Iterable[Failure | None]) -> tuple[Failure, dict[str, str] | None]:
    """The failure to report out of every rank's (``None``: that rank saw nothing), and each
    rank's check when more than one rank failed. Ordered by :data:`PRIORITY`, then rank."""
    found = sorted((f for f in failures if f is not None),
                   key=lambda f: (PRIORITY.index(f["check"]) if f["check"] in PRIORITY else len(PRIORITY), f["rank"]))
    chosen = found[0] if found else {"check": UNKNOWN, "reason": "another rank failed", "rank": None}
    ranks = {str(f["rank"]): f["check"] for f in found} if len(found) > 1 else None
    return chosen, ranks


def classify_exception(exc: BaseException) -> tuple[str, str]:
    """``(check, reason)`` for an exception that ended a run: CUDA OOM, other CUDA errors, the rest."""
    import torch
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    name = type(exc).__name__
    if isinstance(exc, torch.cuda.OutOfMemoryError) or "CUDA out of memory" in message:
        return CUDA_OOM, f"CUDA out of memory: {message}"
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED, "KeyboardInterrupt (SIGINT)"
    if isinstance(exc, SIGTERMException):
        return TERMINATED, "SIGTERM received"
    accelerator_error = getattr(torch, "AcceleratorError", ())
    if (accelerator_error and isinstance(exc, accelerator_error)) or (
        isinstance(exc, RuntimeError) and ("CUDA" in message or "cuda" in message or "NCCL" in message)
    ):
        return CUDA_ERROR, f"{name}: {message}"
    return EXCEPTION, f"{name}: {message}" if message else name


class WarmupLosses:
    """The per-step loss checks of the warmup window and the history they need.

    One :meth:`observe` per optimizer step, in order: a non-finite or too high loss fails at once;
    the first ``baseline_steps`` losses make the baseline (no ratio check on them); later losses
    are checked against ``explosion_ratio`` x baseline; with ``stagnation_steps``, a best loss
    that has not improved by ``stagnation_min_delta`` for that many steps fails. The last
    ``loss_window`` finite losses that passed feed :func:`warmup_verdict`.
    """

    def __init__(self, *, explosion_abs: float | None = None, explosion_ratio: float | None = None,
                 baseline_steps: int = 5, stagnation_steps: int | None = None, stagnation_min_delta: float = 0.0,
                 loss_window: int = 10) -> None:
        self.explosion_abs, self.explosion_ratio = explosion_abs, explosion_ratio
        self.baseline_steps = baseline_steps
        self.stagnation_steps, self.stagnation_min_delta = stagnation_steps, stagnation_min_delta
        self.window: deque[float] = deque(maxlen=loss_window)
        self.baseline: float | None = None
        self._baseline_values: list[float] = []
        self.best = math.inf
        self.since_best = 0

    def observe(self, loss: float) -> Failure | None:
        """Check one step's loss; on success it joins the history."""
        failure = loss_failure(loss, self.explosion_abs)
        if failure is not None:
            return failure
        if self.baseline is None:
            self._baseline_values.append(loss)
            if len(self._baseline_values) >= self.baseline_steps:
                self.baseline = sum(self._baseline_values) / len(self._baseline_values)
        else:
            failure = baseline_failure(loss, self.baseline, self.explosion_ratio)
            if failure is not None:
                return failure
        if self.stagnation_steps is not None:
            if loss < self.best - self.stagnation_min_delta:
                self.best, self.since_best = loss, 0
            else:
                self.since_best += 1
                if self.since_best >= self.stagnation_steps:
                    return {"check": STAGNATION,
                            "reason": f"no improvement on best loss {self.best:.6g} for {self.since_best} steps",
                            "value": loss, "threshold": self.best}
        self.window.append(loss)
        return None

    def verdict(self, loss_threshold: float | None, learning_rates: Sequence[float], check_lr: bool
                ) -> tuple[float | None, Failure | None]:
        """:func:`warmup_verdict` over the losses kept."""
        return warmup_verdict(self.window, loss_threshold, learning_rates, check_lr)
