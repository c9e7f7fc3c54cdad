"""One run's checkpoints converted in order on a thread beside its tracking lines.

Why a thread: a checkpoint's bytes are copied by the kernel (or checksummed by zlib) with the GIL
released, so a run keeps a second core busy -- the one a worker that has finished leaves idle.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable
from typing import Any

from ..errors import CheckpointError
from ..folder.layout import RunLayout
from .checkpoints import ConvertedCheckpoint, LegacyCheckpoint, lightning_checkpoint, load_checkpoint, save_checkpoint
from .plan import MigrateOptions
from .readers import as_number
from .report import RunReport

__all__ = ["ProgressFn", "EpochIndex", "CheckpointConversion", "thread_safe"]

ProgressFn = Callable[[int], None]


class EpochIndex:
    """Which epoch a step belongs to, from batch tracking, in memory proportional to the epochs."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.epochs: list[int] = []
        self.last_step: dict[int, int] = {}

    def add(self, step: int, epoch: Any) -> None:
        number = as_number(epoch)
        if number is None:
            return
        value = int(number)
        if not self.epochs or self.epochs[-1] != value:
            self.starts.append(step)
            self.epochs.append(value)
        self.last_step[value] = step

    def epoch_of(self, step: int) -> int | None:
        i = bisect.bisect_right(self.starts, step) - 1
        return self.epochs[i] if i >= 0 else None


def thread_safe(on_bytes: ProgressFn) -> ProgressFn:
    """``on_bytes`` behind a lock: the checkpoint thread and the tracking both report progress."""
    lock = threading.Lock()

    def locked(n: int) -> None:
        with lock:
            on_bytes(n)

    return locked


class _NeedsTracking(Exception):
    """A checkpoint whose step or epoch only the batch tracking tells."""


def _needs_tracking(value: int) -> int | None:
    raise _NeedsTracking


class CheckpointConversion:
    """A run's checkpoints converted in order, on a thread while it can, then on the caller's.

    The thread stops at the first checkpoint whose step or epoch only the batch tracking tells;
    :meth:`finish` converts the rest once the tracking is read. The order, and so which of two
    checkpoints of one step wins, is that of a sequential conversion; so are the notes, which are
    recorded here for the caller to add after the tracking's.
    """

    def __init__(self, checkpoints: list[LegacyCheckpoint], layout: RunLayout, options: MigrateOptions,
                 report: RunReport, on_bytes: ProgressFn) -> None:
        self.checkpoints, self.layout, self.options, self.report, self.on_bytes = (checkpoints, layout, options,
                                                                                  report, on_bytes)
        self.notes: list[tuple[str, str]] = []
        self.converted: dict[int, ConvertedCheckpoint] = {}
        self._next = 0
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self) -> None:
        if not self.checkpoints:
            return
        self.layout.checkpoints_dir.mkdir(exist_ok=True)
        self._thread = threading.Thread(target=self._run_without_tracking, name="lt-migrate-checkpoints", daemon=True)
        self._thread.start()

    def _run_without_tracking(self) -> None:
        try:
            self._convert(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread by finish()
            self._error = exc

    def _join(self) -> None:
        if self._thread is not None and self._thread.ident is not None:  # None: interrupted before it started
            self._thread.join()
        self._thread = None

    def cancel(self) -> None:
        """Stop between checkpoints (or copy chunks) and wait: nothing is written after this returns."""
        self._cancel.set()
        self._join()

    def finish(self, epochs: EpochIndex) -> list[ConvertedCheckpoint]:
        self._join()
        if self._error is not None:
            raise self._error
        self._convert(epochs)
        return [self.converted[s] for s in sorted(self.converted)]

    def _convert(self, epochs: EpochIndex | None) -> None:
        while self._next < len(self.checkpoints) and not self._cancel.is_set():
            try:
                self._convert_one(self.checkpoints[self._next], epochs)
            except _NeedsTracking:
                if epochs is None:
                    return  # the caller's thread goes on from here once the tracking is read
                raise
            self._next += 1

    def _convert_one(self, ck: LegacyCheckpoint, epochs: EpochIndex | None) -> None:
        report, converted = self.report, self.converted
        try:
            loaded = load_checkpoint(ck, trust_pickle=self.options.trust_pickle,
                                     epoch_of_step=epochs.epoch_of if epochs else _needs_tracking,
                                     last_step_of_epoch=epochs.last_step.get if epochs else _needs_tracking)
        except CheckpointError as exc:
            self.notes.append((f"{exc}; checkpoint skipped", str(ck.path)))
            self.on_bytes(ck.size)
            return
        self.notes.extend((note, str(ck.path)) for note in loaded.notes)
        if loaded.step in converted:
            self.notes.append((f"{ck.path}: step {loaded.step} already converted from"
                               f" {converted[loaded.step].source.name}; checkpoint skipped", str(ck.path)))
            self.on_bytes(ck.size)
            return
        checkpoint = lightning_checkpoint(loaded, prefix=self.options.state_dict_prefix, source=str(ck.path))
        del loaded
        step = checkpoint["global_step"]
        size = save_checkpoint(checkpoint, self.layout.checkpoint_path(step), cancel=self._cancel)
        info = checkpoint["lt_migrate"]
        converted[step] = ConvertedCheckpoint(ck.path, step, checkpoint["epoch"], info["weights_only"],
                                              info["weights"], size)
        report.checkpoints += 1
        report.weights_only += int(info["weights_only"])
        self.on_bytes(ck.size)
