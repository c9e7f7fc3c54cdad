"""One tracker call in flight while the export prepares the next one (:mod:`.mlflow`'s metric batches).

Why: MLflow's client blocks for the server's whole round trip, and an export's own work between two
batches (reading and parsing ``metrics.jsonl``, building the next batch, writing the record of the one
before) added to it. On one daemon thread, the calls run one at a time in the order submitted, so the
server gets the batches in the folder's order and the export record never runs ahead of what it confirmed.
Daemon: a call still in flight never holds up the process's exit (the record already says it was not sent).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

__all__ = ["Ahead"]


class Ahead:
    """Calls run in submission order on one thread; the thread starts with the first call."""

    def __init__(self, name: str = "lt-export-send") -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[tuple[Future, Callable[..., Any], tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def submit(self, call: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        self._jobs.put((future, call, args))
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
            self._thread.start()
        return future

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, call, args = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call(*args))
            except BaseException as exc:  # noqa: BLE001 - a KeyboardInterrupt a test raises in the call, too: the caller's
                future.set_exception(exc)

    def close(self) -> None:
        """End the thread after the calls already submitted (not waited for)."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread = None
