"""What a launched command's notifications say: one set of rules for a pipeline's steps and ``lt run --notify URL
-- CMD`` (a single command), so a person or a script behind a webhook reads the same events and fields from both.

Events: ``healthy`` (the ``.healthy`` signal), ``done`` (exit 0: the run folder, final and best metrics),
``failed`` (the check, value, step and threshold of the failure), ``interrupted`` (Ctrl+C or SIGTERM), ``stale``
(a running command's heartbeat in ``summary.json`` stopped: the training died without a word), ``stalled`` (its
heartbeat is fresh but its step stopped beyond the run's stall rule: a hung collective, a lost node). Sending
is :mod:`.notify`'s; these are the fields.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..folder import signals
from ..folder.fileio import read_json
from ..folder.layout import RunLayout
from ..vocabulary import DONE, FAILED, HEALTHY, INTERRUPTED, STALE, STALLED
from .notify import Notifier

__all__ = ["metric_values", "failure_brief", "stale_notice", "CommandNotices", "WATCH_INTERVAL"]

WATCH_INTERVAL = 2.0  # seconds between heartbeat checks of a running command


def metric_values(entries: Any) -> Any:
    """``{metric: value}`` from summary.json's final or best entries (which also hold the step)."""
    if not isinstance(entries, dict):
        return None
    return {k: (v.get("value") if isinstance(v, dict) else v) for k, v in entries.items()}


def failure_brief(result: Any) -> tuple[str, dict[str, Any]]:
    """``(reason, {check, value, step, threshold})`` of a failed command, from its result and ``.failed`` signal."""
    failure = dict(result.signals.get(FAILED) or {})
    reason = result.reason or failure.get("reason") or f"exit code {result.exit_code}"
    brief = {k: failure.get(k) for k in ("check", "value", "step", "threshold") if failure.get(k) is not None}
    return reason, brief


def stale_notice(signals_dir: Path, exp_id: str, stale_after: float, now: float | None = None
                 ) -> tuple[str, str, dict[str, Any]] | None:
    """``(event, why, fields)`` when the run a running command named (its run note) has gone silent (``stale``)
    or stopped stepping while alive (``stalled``), else None."""
    from ..query.runs import CRASHED, judge_status

    run_dir = signals.read_run_note(signals_dir, exp_id)
    if run_dir is None:
        return None
    try:
        summary = read_json(RunLayout(run_dir).summary_json)
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict):
        return None
    status, why = judge_status(summary, now=time.time() if now is None else now, stale_after=stale_after)
    if status == CRASHED:
        return STALE, why, {"run_dir": str(run_dir), "heartbeat": summary.get("heartbeat")}
    if status == STALLED:
        return STALLED, f"stalled: {why}", {"run_dir": str(run_dir), "progress": summary.get("progress")}
    return None


class CommandNotices:
    """``lt run --notify URL -- CMD``: the events of one command, titled ``<exp_id>: <event>``.

    Use: ``on_event`` as run_command's event callback (``healthy``), the object as a context around the run
    (``stale``, once), ``finished(result)`` after it (``done``, ``failed`` or ``interrupted``).
    """

    def __init__(self, notifier: Notifier, exp_id: str, signals_dir: str | Path, *, stale_after: float = 120.0,
                 log: Callable[[str], None] | None = None) -> None:
        self.notifier, self.exp_id = notifier, exp_id
        self.signals_dir = Path(signals_dir).resolve()
        self.stale_after = stale_after
        self.log = log or (lambda text: None)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def send(self, event: str, line: str, /, **fields: Any) -> None:
        self.notifier.send(event, f"{self.exp_id}: {event}", f"{self.exp_id}: {line}", {"exp_id": self.exp_id,
                                                                                       **fields})

    def on_event(self, kind: str, message: str) -> None:
        if kind == HEALTHY:
            self.send(HEALTHY, message)

    def finished(self, result: Any) -> None:
        run_dir = str(result.run_dir) if result.run_dir else None
        if result.interrupted:
            reason, _ = failure_brief(result)
            self.send(INTERRUPTED, f"interrupted: {reason}", run_dir=run_dir)
        elif result.exit_code == 0:
            summary: Mapping[str, Any] = result.summary or {}
            self.send(DONE, f"done in {result.duration_s:.1f} s", run_dir=run_dir,
                      final=metric_values(summary.get("final")), best=metric_values(summary.get("best")))
        else:
            reason, brief = failure_brief(result)
            self.send(FAILED, reason, run_dir=run_dir, **brief)

    def __enter__(self) -> CommandNotices:
        """The heartbeat watch runs on a thread while the command does (off with stale_after 0)."""
        if self.stale_after > 0 and self.notifier.enabled:
            self._thread = threading.Thread(target=self._watch, name="lightning_track-stale-watch", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)

    def _watch(self) -> None:
        told: set[str] = set()
        while not self._stop.wait(min(WATCH_INTERVAL, self.stale_after)):
            found = stale_notice(self.signals_dir, self.exp_id, self.stale_after)
            if found is not None and found[0] not in told:
                event, why, fields = found
                told.add(event)  # each event told once
                self.log(why)
                self.send(event, why, **fields)
                if event == STALE:
                    return
