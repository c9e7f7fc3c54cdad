"""A SwanLab run, always offline: no network, no prompt, settings kept under the runs root.

Upload later with ``swanlab sync <run>/swanlab_logs/run-*``.

What the run says matches ``metrics.jsonl``: every value carries the time it was logged (not the time
the sink got to it, up to a flush interval or a slow start later), and a failed or interrupted run is
finished with the reason the writer was given.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..folder.media import IMAGE, TEXT, MediaRecord
from ..folder.records import MetricRecord
from ..vocabulary import COMPLETED, FAILED, INTERRUPTED
from .base import Sink, SinkContext

# SwanLab accepts only these characters in a project name.
_PROJECT_UNSAFE = re.compile(r"[^0-9a-zA-Z_\-+.]+")


def swanlab_project_name(dataset: str) -> str:
    """SwanLab project for a dataset: its name reduced to the characters SwanLab accepts."""
    return _PROJECT_UNSAFE.sub("-", dataset).strip("-") or "lightning_track"


# Our final statuses -> SwanLab's finish states.
_STATE = {COMPLETED: "success", FAILED: "crashed", INTERRUPTED: "aborted"}


@contextmanager
def _unwrapped_console() -> Iterator[None]:
    """SwanLab's messages on one line each while inside.

    SwanLab prints through a rich console that wraps at the terminal's width, or at 80 columns in a
    log file, so the ``swanlab sync <path>`` it suggests arrives in pieces nobody can paste. Soft wrap
    leaves the wrapping to the terminal; a log keeps the line whole. Scoped to our init and finish,
    so a user's own SwanLab messages in the same process print as they always did.
    """
    try:
        from swanlab.sdk.internal.pkg import console
    except ImportError:  # another SwanLab layout: its messages print as SwanLab makes them
        yield
        return
    rich_console = getattr(console, "c", None)
    if rich_console is None or not hasattr(rich_console, "soft_wrap"):
        yield
        return
    before = rich_console.soft_wrap
    rich_console.soft_wrap = True
    try:
        yield
    finally:
        rich_console.soft_wrap = before


class _TimedLog:
    """Logs values with the time they were logged, through the event SwanLab's own ``Run.log`` emits.

    ``Run.log`` has no time argument: it stamps each value with the time of the call, which here is
    when the batch reached this sink (a flush interval, or SwanLab's start-up, after the training step).
    The record SwanLab stores and syncs (``ScalarRecord.timestamp``) comes from the ``MetricLogEvent``
    that ``log`` puts on the run's event bus; emitting that event with the record's own time is all
    ``log`` does besides checks our records pass anyway (a dict, a step >= 0; a negative step still
    goes through ``log``, which refuses it as it always did). Where this SwanLab has no such bus,
    values go through ``Run.log`` (times of writing), with one warning.
    """

    def __init__(self, run: Any) -> None:
        self.run = run
        try:
            from google.protobuf.timestamp_pb2 import Timestamp
            from swanlab.sdk.internal.bus import MetricLogEvent
            from swanlab.sdk.internal.run import fmt

            self._emit = run._components.emitter.emit
            self._next_step = run._ctx.next_step
            self._lock = run._api_lock
        except (ImportError, AttributeError) as exc:
            import swanlab

            warnings.warn(f"SwanLab {getattr(swanlab, '__version__', '')}: cannot give logged values their own"
                          f" time ({exc!r}); SwanLab records the time they reached it instead",
                          RuntimeWarning, stacklevel=2)
            self.write = self._write_untimed  # type: ignore[method-assign]
            return
        self._timestamp, self._event, self._flatten = Timestamp, MetricLogEvent, fmt.flatten_dict

    def write(self, records: list[MetricRecord]) -> None:
        timestamp, event, flatten, emit, next_step = (self._timestamp, self._event, self._flatten, self._emit,
                                                      self._next_step)
        with self._lock:
            if not self.run.alive:
                raise RuntimeError("the SwanLab run is no longer active")
            for record in records:
                step = int(record.step)
                if step < 0:
                    self.run.log(dict(record.metrics), step=step)
                    continue
                if not record.metrics:
                    continue
                seconds = math.floor(record.time)
                stamp = timestamp(seconds=seconds, nanos=min(round((record.time - seconds) * 1e9), 999_999_999))
                emit(event(data=flatten(dict(record.metrics)), step=next_step(step), timestamp=stamp))

    def _write_untimed(self, records: list[MetricRecord]) -> None:
        log = self.run.log
        for record in records:
            log(dict(record.metrics), step=record.step)


class SwanLabSink(Sink):
    name = "swanlab"

    def __init__(self, project: str | None = None) -> None:
        self.project = project
        self._run: Any = None
        self._log: _TimedLog | None = None
        self._layout: Any = None
        self.run_dir: str | None = None

    @staticmethod
    def warm_up() -> None:
        """Import SwanLab (~1 s) ahead of the first record (the sink host calls this at start)."""
        import swanlab  # noqa: F401

    def open(self, context: SinkContext) -> None:
        import swanlab

        layout = self._layout = context.layout
        layout.swanlab_workspace.mkdir(parents=True, exist_ok=True)
        layout.swanlab_dir.mkdir(parents=True, exist_ok=True)
        config = dict(context.config)
        name = layout.name
        if context.resume_count:
            # A resumed run becomes a new SwanLab run in the same folder, linked by name and config.
            name = f"{layout.name}-resume{context.resume_count}"
            config["lightning_track_resumed"] = {"run": layout.name, "attempt": context.resume_count,
                                                 "from_step": context.resume_step}
        settings = swanlab.Settings(
            mode="offline",
            interactive=False,
            terminal=swanlab.Settings.Terminal(proxy_type="none"),
            probe=swanlab.Settings.Probe(hardware=False, requirements=False, git=False),
        )
        if swanlab.has_run():
            # SwanLab holds one run per process. Finishing someone else's run from this thread is
            # not ours to do (and SwanLab can only do it from the main thread).
            raise RuntimeError(
                "another SwanLab run is active in this process; finish it (swanlab.finish()) before this"
                " RunLogger logs, or leave 'swanlab' out of RunLogger(sinks=...)"
            )
        saved = {k: os.environ.get(k) for k in ("SWANLAB_ROOT", "SWANLAB_MODE")}
        os.environ["SWANLAB_ROOT"] = str(layout.swanlab_workspace)
        os.environ["SWANLAB_MODE"] = "offline"
        try:
            with _unwrapped_console():
                self._run = swanlab.init(
                    project=self.project or swanlab_project_name(context.dataset),
                    name=name,
                    description=f"lightning_track run {layout.name} ({context.method})",
                    mode="offline",
                    log_dir=str(layout.swanlab_dir),
                    config=config,
                    settings=settings,
                )
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        self.run_dir = str(getattr(self._run, "_ctx", None) and self._run._ctx.run_dir or "")
        self._log = _TimedLog(self._run)

    def log_config(self, config: dict[str, Any]) -> None:
        self._run.config.update(config)

    def write(self, records: list[MetricRecord]) -> None:
        assert self._log is not None, "sink not opened"
        self._log.write(records)

    def write_media(self, records: list[MediaRecord]) -> None:
        """Images and text as SwanLab's own types, read from the files under ``media/`` (written first).
        SwanLab 0.10 has no histogram type: histograms are in ``media/`` and TensorBoard."""
        import swanlab

        assert self._run is not None and self._layout is not None, "sink not opened"
        for record in records:
            if record.kind == IMAGE:
                key = record.key if not record.info.get("many") else f"{record.key}/{record.info.get('index', 0)}"
                value: Any = swanlab.Image(str(self._layout.run_dir / record.file), caption=record.caption)
            elif record.kind == TEXT:
                key, value = record.key, swanlab.Text(record.info.get("text", ""), caption=record.caption)
            else:
                continue
            self._run.log({key: value}, step=int(record.step))

    def close(self, status: str, reason: str | None = None) -> None:
        if self._run is not None:
            run, self._run, self._log = self._run, None, None
            state = _STATE.get(status, "crashed")
            if reason is None and state == "crashed":
                # SwanLab would record "unknown" (and warn); our status is what we do know.
                reason = f"lightning_track recorded the run as {status}; no reason was given"
            with _unwrapped_console():
                run.finish(state=state, error=reason)


SINK = SwanLabSink
