"""Where a callback's files go: the run folder, and the signal files of the run.

Callbacks never build run paths themselves. With a RunLogger anywhere in ``trainer.loggers`` they
use its :class:`RunLayout`; with any other logger (or none) they use a layout rooted at
``trainer.default_root_dir`` so every file still lands in one predictable folder.

Signals (:mod:`lightning_track.folder.signals`) are written by more than one callback
(HealthGuard, PreemptionHandler) and watched by ``lt-run``; they only meet if every writer picks
the same ``<signals_dir>/<exp_id>``, so that choice is made by one function,
:func:`signal_target`.

The run note ``<signals_dir>/<exp_id>.run`` (one line: the absolute run folder) tells ``lt-run``
which folder the run writes as soon as the folder exists: a command stopped before its first
health signal (a health timeout) is still post-processed, and a signal name leads to its run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..folder import signals
from ..folder.layout import RunLayout, sanitize_name
from ..run.logger import RunLogger
from ..vocabulary import ENV_EXP_ID, ENV_SIGNALS_DIR, env_value

__all__ = ["find_layout", "find_run_logger", "run_logger_first", "training_starts", "SignalTarget", "signal_target"]



def find_run_logger(trainer: Any) -> RunLogger | None:
    """The first RunLogger in ``trainer.loggers`` (any position), or None."""
    for logger in getattr(trainer, "loggers", None) or []:
        if isinstance(logger, RunLogger):
            return logger
    return None


def training_starts(trainer: Any) -> None:
    """Tell the RunLogger where training (re)starts, before a callback writes anything for the new
    attempt: a resume that would rewind the run is refused here (ResumeError), with nothing written.
    Every lightning_track callback calls it first in ``on_train_start``; the logger acts once."""
    logger = find_run_logger(trainer)
    if logger is not None:
        logger.training_starts(trainer.global_step, trainer)


def find_layout(trainer: Any) -> RunLayout:
    """The run layout: the RunLogger's (synced across ranks), else ``trainer.default_root_dir``."""
    logger = find_run_logger(trainer)
    if logger is not None:
        return logger.layout  # the sync point: the same folder on every rank
    return RunLayout(trainer.default_root_dir)


def run_logger_first(trainer: Any) -> None:
    """Move the RunLogger to the front of ``trainer.loggers``.

    Lightning's ModelCheckpoint (and ``trainer.log_dir``) resolve folders from ``trainer.loggers[0]``;
    putting the RunLogger first keeps checkpoints in the run folder whatever order the user gave.
    """
    loggers = list(getattr(trainer, "loggers", None) or [])
    logger = find_run_logger(trainer)
    if logger is None or loggers[0] is logger:
        return
    loggers.remove(logger)
    trainer.loggers = [logger, *loggers]


@dataclass(frozen=True)
class SignalTarget:
    """Where one run's signals go: ``<signals_dir>/<exp_id>.<status>``."""

    signals_dir: Path
    exp_id: str
    run_dir: Path | None = None  # the RunLogger's run folder (absolute), written into every signal

    def path(self, status: str) -> Path:
        """The text file of the ``status`` signal."""
        return signals.signal_path(self.signals_dir, self.exp_id, status)

    def write(self, status: str, **fields: Any) -> Path:
        """:func:`~lightning_track.folder.signals.write_signal` to this target."""
        return signals.write_signal(self.signals_dir, self.exp_id, status, **fields)

    def clear(self) -> list[Path]:
        """Remove this run's signals (not the run note: it names the folder, which has not changed)."""
        return signals.clear_signals(self.signals_dir, self.exp_id)

    @property
    def run_note(self) -> Path:
        """``<signals_dir>/<exp_id>.run``: the run folder, for lt-run and drivers (see the module doc)."""
        return signals.run_note_path(self.signals_dir, self.exp_id)

    def write_run_note(self) -> Path | None:
        """Write :attr:`run_dir` into :attr:`run_note` atomically; ``None`` without a run folder."""
        if self.run_dir is None:
            return None
        return signals.write_run_note(self.signals_dir, self.exp_id, self.run_dir)


def signal_target(
    trainer: Any,
    signals_dir: str | os.PathLike[str] | None = None,
    exp_id: str | None = None,
    *,
    inherit: SignalTarget | None = None,
    layout: RunLayout | None = None,
    environ: Mapping[str, str] | None = None,
) -> SignalTarget:
    """Where the signals of ``trainer``'s run go; each part from the first source that has it.

    * ``signals_dir``: the argument; ``inherit`` (what another callback of the same trainer already
      chose, e.g. a HealthGuard's); ``$LIGHTNING_TRACK_SIGNALS_DIR`` (set by ``lt-run``);
      ``<runs root>/signals`` with a RunLogger; ``<default_root_dir>/signals`` without one.
    * ``exp_id``: the argument; ``inherit``; ``$LIGHTNING_TRACK_EXP_ID`` (checked: it must be a safe
      file name); the run folder's name with a RunLogger; the name of ``default_root_dir``.
    * ``run_dir``: the RunLogger's run folder, absolute; ``None`` without a RunLogger.

    The arguments are the callbacks' own, checked when the callback was made. ``layout`` saves a
    second :func:`find_layout` when the caller has it.
    """
    has_run_logger = find_run_logger(trainer) is not None
    layout = find_layout(trainer) if layout is None else layout
    if signals_dir is None and inherit is not None:
        signals_dir = inherit.signals_dir
    if exp_id is None and inherit is not None:
        exp_id = inherit.exp_id
    if signals_dir is not None:
        chosen_dir = Path(signals_dir)
    else:
        env_dir = env_value(ENV_SIGNALS_DIR, environ)
        if env_dir:
            chosen_dir = Path(env_dir)
        else:
            chosen_dir = layout.signals_dir if has_run_logger else layout.run_dir / RunLayout.SIGNALS
    if exp_id is None:
        env_id = env_value(ENV_EXP_ID, environ)
        if env_id:
            exp_id = signals.check_exp_id(env_id)
        elif has_run_logger:
            exp_id = layout.name
        else:
            exp_id = sanitize_name(Path(trainer.default_root_dir).resolve().name or "run", what="exp_id")
    return SignalTarget(chosen_dir, exp_id, layout.run_dir.resolve() if has_run_logger else None)
