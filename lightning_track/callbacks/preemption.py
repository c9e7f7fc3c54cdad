"""PreemptionHandler: on SIGTERM/SIGINT, stop at a step boundary, checkpoint, mark the run, exit.

Why: Slurm (and most schedulers) announce preemption or the end of a time limit with SIGTERM and
kill the job a little later; a Ctrl+C on a remote session is the same event by hand. The run should
then leave a resumable checkpoint, a ``summary.json`` that says ``interrupted`` (not ``failed``), a
signal file a driver can read, and a non-zero exit status so ``sbatch --dependency=afterok`` does
not post-process a half-trained model.

How it builds on Lightning 2.6 (``trainer/connectors/signal_connector.py``), not against it:

* One process: SIGTERM keeps Lightning's own handler, which sets ``trainer.received_sigterm``; the
  training loop then raises ``SIGTERMException`` at the next batch boundary, so the model and
  optimizer are consistent. SIGINT (Lightning leaves it alone: a ``KeyboardInterrupt`` can land in
  the middle of an optimizer step) is routed into the same handler, so Ctrl+C also stops cleanly.
  A second Ctrl+C raises ``KeyboardInterrupt`` at once. A process started with SIGINT ignored (a
  script's ``python train.py &``: the terminal's Ctrl+C must spare it) keeps it ignored; SIGTERM stops it.
* Several processes (DDP, torchrun, Slurm): Lightning's handler runs a ``broadcast`` *inside the
  signal handler*; when the signal reaches the ranks at different moments (torchrun forwards it
  rank by rank) that collective pairs with another rank's gradient all-reduce and the job hangs
  until it is killed (seen here with torchrun on gloo). So under DDP the handler only records the
  signal, and every rank agrees at the end of each training step (one tiny all-reduce, like
  Lightning's own per-batch broadcast): if any rank got a signal, all set Lightning's flag at the
  same step and stop together.
* In ``on_exception`` (every rank) the trainer's checkpoint callback saves through Lightning's own
  ``save_on_exception`` path, so a :class:`StepCheckpoint` names the file
  ``checkpoint-step-NNN.ckpt``, updates ``last.ckpt`` and tells ``BatchTracker``;
  ``trainer.fit(ckpt_path="last")`` then resumes from it. Without a ModelCheckpoint the file is
  saved to the run layout's step checkpoint path.
* Rank 0 finalizes the RunLogger as ``interrupted`` before Lightning finalizes it as ``failed`` (the
  logger ignores the second call), records the details under ``summary.json["interrupted"]`` and
  writes the ``.failed`` signal with ``check: interrupted`` and ``resumable: true``.
* ``SIGTERMException`` is a ``SystemExit``; its code is set to ``128 + signal number`` (143 for
  SIGTERM, 130 for SIGINT), the shell convention, instead of Lightning's 0.

The callback moves itself to the end of ``trainer.callbacks`` at setup so that its ``on_exception``
runs after every other callback's (e.g. HealthGuard's, which reports the same event as a failure).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from typing_extensions import override

from ..derived.summary import SummaryFile
from ..folder import signals as signal_files
from ..folder.fileio import atomic_write_json
from ..folder.layout import RunLayout
from ..run.distributed import destroy_process_group_at_exit
from ..vocabulary import FAILED, INTERRUPTED, exit_status, iso_time, stop_signals
from .health.checks import STOP_CHECKS
from .health.guard import HealthGuard
from .targets import find_layout, find_run_logger, signal_target, training_starts

__all__ = ["PreemptionHandler", "interrupt_reason"]


def _signal_number(name: str | int) -> int:
    if isinstance(name, int):
        return int(signal.Signals(name))
    key = name.upper() if name.upper().startswith("SIG") else f"SIG{name.upper()}"
    try:
        return int(signal.Signals[key])
    except KeyError:
        raise ValueError(
            f"PreemptionHandler: unknown signal {name!r} (use e.g. 'SIGTERM', 'SIGINT', 'SIGUSR1')"
        ) from None


def interrupt_reason(details: dict[str, Any]) -> str:
    """The one line ``summary.json["reason"]``, the attempt and the signal file give for a stop."""
    text = f"{details['signal']} at step {details['step']}"
    if details.get("checkpoint"):
        return f"{text}, checkpoint {details['checkpoint']} saved: resume with trainer.fit(ckpt_path='last')"
    if details.get("error"):
        return f"{text}, no checkpoint ({details['error']})"
    return f"{text}, no checkpoint saved"


class _DropExceptionLine(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_LIGHTNING_EXCEPTION_LINE)


# ModelCheckpoint.on_exception's line: "An SIGTERMException was raised with message: <blank>, saved ..."
_LIGHTNING_EXCEPTION_LINE = "An SIGTERMException was raised with message:"


@contextmanager
def _without_lightning_exception_line() -> Iterator[None]:
    from lightning_utilities.core import rank_zero

    log = rank_zero.log  # where Lightning's rank_zero_info writes
    dropper = _DropExceptionLine()
    log.addFilter(dropper)
    try:
        yield
    finally:
        log.removeFilter(dropper)


class PreemptionHandler(Callback):
    """Turn SIGTERM/SIGINT into: checkpoint at a step boundary, ``interrupted`` status, signal, exit.

    Args:
        signals: signals handled (names or numbers). SIGTERM always goes through Lightning's own
            handler; the others are routed into it.
        save_checkpoint: save a resumable checkpoint before exiting.
        exit_code: the process exit status; ``None`` uses ``128 + signal number``.
        signals_dir: where the signal file goes; default: a HealthGuard's in the same trainer, else
            as for a HealthGuard (``$LIGHTNING_TRACK_SIGNALS_DIR``, ``<runs root>/signals``; one rule,
            :func:`~lightning_track.callbacks.targets.signal_target`).
        exp_id: the signal file stem; default: the HealthGuard's, else ``$LIGHTNING_TRACK_EXP_ID``,
            the run name.
        write_signal: write the ``.failed`` signal (``check: interrupted``, ``resumable: true``).

    Resume with ``RunLogger(..., resume=True)`` (or the run name) and ``trainer.fit(ckpt_path="last")``.
    """

    def __init__(
        self,
        signals: Sequence[str | int] = ("SIGTERM", "SIGINT"),
        save_checkpoint: bool = True,
        exit_code: int | None = None,
        signals_dir: str | os.PathLike[str] | None = None,
        exp_id: str | None = None,
        write_signal: bool = True,
    ) -> None:
        if isinstance(signals, (str, int)):
            signals = [signals]
        self.signals = [_signal_number(s) for s in signals]
        if signal.SIGKILL in self.signals or signal.SIGSTOP in self.signals:
            raise ValueError("PreemptionHandler: SIGKILL and SIGSTOP cannot be handled")
        if exit_code is not None and not (isinstance(exit_code, int) and 0 <= exit_code <= 255):
            raise ValueError(f"PreemptionHandler: exit_code must be None or an integer 0..255, got {exit_code!r}")
        if exp_id is not None:
            signal_files.check_exp_id(exp_id)
        self.save_checkpoint = save_checkpoint
        self.exit_code = exit_code
        self.write_signal = write_signal
        self._signals_dir_arg = signals_dir
        self._exp_id_arg = exp_id
        self.received: int | None = None  # the signal number that stopped the run
        self.checkpoint_path: str | None = None  # where the preemption checkpoint went
        self._installed: dict[int, Any] = {}
        self._distributed = False

    # -- setup -------------------------------------------------------------------------------------
    @override
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self.received = None
        self.checkpoint_path = None
        callbacks = list(trainer.callbacks)
        if callbacks and callbacks[-1] is not self:
            # Replace the list (never mutate it): Lightning is iterating the old one right now.
            trainer.callbacks = [c for c in callbacks if c is not self] + [self]

    @override
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        training_starts(trainer)  # a refused resume raises here, before any handler is installed
        # Lightning registers its SIGTERM handler just before the loops start and restores every
        # handler of the process (ours included) in its teardown, on success and on failure alike.
        if threading.current_thread() is not threading.main_thread():
            return
        lightning_term = signal.getsignal(signal.SIGTERM)
        self._distributed = trainer.world_size > 1 and dist.is_available() and dist.is_initialized()
        self._installed = {}
        for signum in stop_signals(tuple(self.signals)):  # an inherited ignored SIGINT stays ignored
            previous = signal.getsignal(signum)
            signal.signal(signum, self._make_handler(trainer, signum, lightning_term))
            self._installed[signum] = previous

    def _make_handler(self, trainer: Any, signum: int, lightning_term: Any) -> Any:
        def handler(received: int, frame: Any) -> None:
            if self.received is not None and received == signal.SIGINT:
                raise KeyboardInterrupt  # second Ctrl+C: the user wants out now
            if self.received is None:
                self.received = received
            if self._distributed:
                return  # no collective inside a signal handler: the ranks agree at the step end
            if callable(lightning_term):
                lightning_term(received, frame)
            else:  # no Lightning handler (not the main thread when it registered): set its flag
                trainer._signal_connector.received_sigterm = True  # noqa: SLF001

        return handler

    @override
    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self._distributed:
            return
        # The same point of the same step on every rank: the loop checks the flag right after this hook.
        flag = torch.tensor([self.received or 0], device=trainer.strategy.root_device, dtype=torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        received = int(flag.item())
        if received:
            if self.received is None:
                self.received = received
            trainer._signal_connector.received_sigterm = True  # noqa: SLF001 - Lightning's own stop path

    @override
    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        logger = find_run_logger(trainer)
        if logger is not None:
            logger.before_checkpoint()  # the records up to the checkpoint's step reach disk first

    # -- the stop ----------------------------------------------------------------------------------
    @override
    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            signum = self.received if self.received is not None else int(signal.SIGTERM)
        elif isinstance(exception, KeyboardInterrupt) and signal.SIGINT in self.signals:
            signum = int(signal.SIGINT)  # raw Ctrl+C (a second one, or before training started)
        else:
            return
        self.received = signum
        name = signal.Signals(signum).name
        code = self.exit_code if self.exit_code is not None else exit_status(-signum)  # the shell's 128 + N
        layout = find_layout(trainer)
        step = int(trainer.global_step)
        error: str | None = None
        # A raw KeyboardInterrupt may have landed inside an optimizer step: no checkpoint then.
        if self.save_checkpoint and isinstance(exception, SIGTERMException):
            try:
                self.checkpoint_path = self._save(trainer, pl_module, exception, layout)
            except Exception as exc:  # noqa: BLE001 - still mark the run and exit
                error = f"checkpoint failed: {type(exc).__name__}: {exc}"
                print(f"PreemptionHandler: {error}", file=sys.stderr)
        if isinstance(exception, SystemExit):
            exception.code = code
        if trainer.world_size > 1:
            destroy_process_group_at_exit()  # the exit code must be ours, not gloo's teardown abort
        if not trainer.is_global_zero:
            return
        details = {
            "signal": name,
            "step": step,
            "time": iso_time(),
            "checkpoint": layout.relative(self.checkpoint_path) if self.checkpoint_path else None,
            "resumable": self.checkpoint_path is not None,
            "exit_code": code,
        }
        if error:
            details["error"] = error
        reason = interrupt_reason(details)
        # Before the logger finalizes, so the line is in logs.txt too (Lightning's own is held back in _save)
        print(f"PreemptionHandler: {reason}; exit {code}", file=sys.stderr)
        logger = find_run_logger(trainer)
        if logger is not None:
            logger.finalize(INTERRUPTED)  # Lightning's finalize("failed") that follows is ignored
            self._mark_summary(layout, details, reason)
        if self.write_signal:
            self._write_signal(trainer, layout, details, reason)

    @staticmethod
    def _mark_summary(layout: RunLayout, details: dict[str, Any], reason: str) -> None:
        summary = SummaryFile(layout.summary_json)
        data = summary.read()
        # A HealthGuard reports the same stop as a failure ("terminated"/"interrupted"): it was not one.
        if isinstance(data.get("failure"), dict) and data["failure"].get("check") in STOP_CHECKS:
            data.pop("failure")
        data.update(status=INTERRUPTED, interrupted=details, reason=reason)
        attempts = data.get("attempts")
        if isinstance(attempts, list) and attempts and isinstance(attempts[-1], dict):
            attempt = attempts[-1]
            if isinstance(attempt.get("failure"), dict) and attempt["failure"].get("check") in STOP_CHECKS:
                attempt.pop("failure")
            attempt.update(status=INTERRUPTED, reason=reason)
        atomic_write_json(layout.summary_json, data)

    def _save(self, trainer: Any, pl_module: Any, exception: BaseException, layout: RunLayout) -> str:
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is not None:
                # Lightning's own exception checkpoint: the callback's names, last.ckpt, pruning,
                # logger.after_save_checkpoint and (StepCheckpoint) the BatchTracker hooks.
                saved_before = callback._last_checkpoint_saved  # noqa: SLF001
                if callback._last_global_step_saved != trainer.global_step:  # noqa: SLF001
                    flag, callback.save_on_exception = callback.save_on_exception, True
                    try:
                        with _without_lightning_exception_line():  # ours says the signal, not a blank message
                            callback.on_exception(trainer, pl_module, exception)
                    finally:
                        callback.save_on_exception = flag
                return str(callback._last_checkpoint_saved or saved_before)  # noqa: SLF001
        path = layout.checkpoint_path(trainer.global_step)
        trainer.save_checkpoint(str(path))
        return str(path)

    def _write_signal(self, trainer: Any, layout: RunLayout, details: dict[str, Any], reason: str) -> None:
        # The same file a HealthGuard of this trainer (and lt-run) uses: the guard's choice comes
        # before the environment, this handler's own arguments before both.
        guard = next((c for c in trainer.callbacks if isinstance(c, HealthGuard)), None)
        target = signal_target(trainer, self._signals_dir_arg, self._exp_id_arg,
                               inherit=guard.target if guard is not None else None, layout=layout)
        try:
            target.write(FAILED, check=INTERRUPTED, reason=reason, run_dir=str(layout.run_dir.resolve()),
                         rank=trainer.global_rank, **details)
        except (OSError, ValueError) as exc:
            print(f"PreemptionHandler: could not write the signal: {exc}", file=sys.stderr)
