"""``lt sync --notify URL``: after each sync pass, tell someone what changed in the mirrored runs.

Why on the viewer's side: a training process killed by the kernel's OOM killer, or a node that was
lost, says nothing more; its mirror still shows ``running`` with a heartbeat that stops moving. The
watcher reads each run's ``summary.json`` (and its exp_id's signal files) on the local side of the sync
after every pass and sends, through :class:`~lightning_track.launch.notify.Notifier`, one notification
per event:

``healthy``      the run's ``<root>/signals/<exp_id>.healthy`` appeared (HealthGuard's verdict)
``completed``    ``failed`` ``interrupted``: ``summary.json``'s status became final (with final/best
                 metrics, or the failing check, value and step)
``stale``        status ``running`` but the heartbeat older than ``stale_after`` seconds (``lt ls``'s
                 ``crashed``, :func:`lightning_track.query.runs.judge_status`)
``stalled``      alive (fresh heartbeat) but no step for longer than the run's stall rule (``lt ls``'s
                 ``stalled``): a hung collective, a partitioned node; with the step it stopped after

Each event is keyed by run, attempt and event, and remembered in a small JSON file beside the sync
state, so a restarted watcher never sends one twice. The first pass with no such file sends only the
events of runs alive within the last ``stale_after`` seconds; older ones are recorded as known (no
flood of "completed" for last month's runs). Delivery is the notifier's: a notification that cannot be
delivered is one line in the log and never fails the sync.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..folder.fileio import atomic_write_json, read_json
from ..folder.layout import RunLayout
from ..query.discover import find_run_dirs
from ..query.runs import STALE_AFTER_S, judge_status
from ..vocabulary import COMPLETED, CRASHED, FAILED, HEALTHY, INTERRUPTED, STALE, STALLED, parse_iso_time

__all__ = ["RunWatch", "run_events", "notified_path"]



def notified_path(state_path: str | Path) -> Path:
    """``<sync state>.notified.json`` beside the sync's resume journal."""
    path = Path(state_path)
    return path.with_name(path.stem + ".notified.json")


def _values(block: Any) -> dict[str, Any] | None:
    if not isinstance(block, dict):
        return None
    return {k: (v.get("value") if isinstance(v, dict) else v) for k, v in block.items()}


def _beat(summary: dict[str, Any]) -> float | None:
    for key in ("heartbeat", "end_time", "start_time"):
        try:
            return parse_iso_time(summary[key])
        except (KeyError, TypeError, ValueError):
            continue
    return None


def run_events(summary: dict[str, Any], *, healthy: bool, now: float, stale_after: float
               ) -> list[tuple[str, str, dict[str, Any]]]:
    """``[(event, line, fields)]`` the run's files show now (pure): what a watcher may notify."""
    events: list[tuple[str, str, dict[str, Any]]] = []
    exp_id = summary.get("exp_id")
    if healthy:
        events.append((HEALTHY, "healthy", {"exp_id": exp_id}))
    status, why = judge_status(summary, now=now, stale_after=stale_after)
    failure = summary.get("failure") if isinstance(summary.get("failure"), dict) else {}
    if status == COMPLETED:
        events.append((COMPLETED, f"completed at step {summary.get('last_step')}",
                       {"final": _values(summary.get("final")), "best": _values(summary.get("best"))}))
    elif status in (FAILED, INTERRUPTED):
        brief = {k: failure.get(k) for k in ("check", "value", "step", "threshold") if failure.get(k) is not None}
        events.append((status, f"{status}: {why}" if why else status, {"exp_id": exp_id, **brief}))
    elif status == CRASHED:
        events.append((STALE, why, {"exp_id": exp_id, "heartbeat": summary.get("heartbeat")}))
    elif status == STALLED:
        progress = summary.get("progress") if isinstance(summary.get("progress"), dict) else {}
        events.append((STALLED, f"stalled: {why}", {"exp_id": exp_id, "step": progress.get("step"),
                                                    "last_step_time": progress.get("time")}))
    return events


class RunWatch:
    """Watches the runs under ``root`` (the local side of the sync); :meth:`check` after every pass."""

    def __init__(self, root: str | Path, notifier: Any, *, state_path: str | Path | None = None,
                 stale_after: float = STALE_AFTER_S, log: Callable[[str], None] = print) -> None:
        self.root, self.notifier, self.stale_after, self.log = Path(root), notifier, stale_after, log
        self.state_path = Path(state_path) if state_path else None
        self.sent: dict[str, str] = {}  # "<run>#<attempt>#<event>" -> when it was sent (or recorded as known)
        self.first = True
        if self.state_path is not None and self.state_path.exists():
            try:
                data = read_json(self.state_path)
                self.sent = dict(data.get("sent") or {}) if isinstance(data, dict) else {}
                self.first = False
            except (OSError, ValueError, TypeError):
                self.log(f"{self.state_path}: unreadable notification state; starting a new one")
        self._seen: dict[str, tuple[int, int, dict[str, Any]]] = {}  # run -> summary.json (mtime, size, data)

    def _summary(self, rel: str, path: Path) -> dict[str, Any] | None:
        try:
            st = path.stat()
            cached = self._seen.get(rel)
            if cached and cached[:2] == (st.st_mtime_ns, st.st_size):
                return cached[2]
            data = read_json(path)
        except (OSError, ValueError):
            return None  # not there yet, or torn by a copy in flight (the next pass sees it whole)
        if not isinstance(data, dict):
            return None
        self._seen[rel] = (st.st_mtime_ns, st.st_size, data)
        return data

    def check(self, now: float | None = None) -> list[tuple[str, str]]:
        """Send what is new; returns ``[(run, event)]`` sent this pass."""
        now = time.time() if now is None else now
        sent: list[tuple[str, str]] = []
        if not self.root.is_dir():
            return sent
        before = len(self.sent)
        for path, _, _ in find_run_dirs(self.root, []):
            rel = path.relative_to(self.root).as_posix() if path != self.root else path.name
            summary = self._summary(rel, path / RunLayout.SUMMARY)
            if summary is None:
                continue
            exp_id = summary.get("exp_id")
            healthy = bool(exp_id) and RunLayout.signal_file(path.parent / "signals", str(exp_id), HEALTHY).exists()
            attempt = len(summary.get("attempts") or []) or 1
            beat = _beat(summary)
            quiet = self.first and (beat is None or now - beat > self.stale_after)
            for event, line, fields in run_events(summary, healthy=healthy, now=now, stale_after=self.stale_after):
                key = f"{rel}#{attempt}#{event}"
                if key in self.sent:
                    continue
                self.sent[key] = "known" if quiet else time.strftime("%Y-%m-%dT%H:%M:%S")
                if quiet:
                    continue
                name = summary.get("run_name") or path.name
                self.notifier.send(event, f"{name}: {event}", f"{name}: {line}",
                                   {"run": rel, "attempt": attempt, **fields})
                sent.append((rel, event))
        self.first = False
        if len(self.sent) != before:
            self._save()
        return sent

    def _save(self) -> None:
        if self.state_path is None:
            return
        try:
            atomic_write_json(self.state_path, {"root": str(self.root), "sent": self.sent})
        except OSError as exc:
            self.log(f"{self.state_path}: notification state not saved ({exc.strerror or exc}); "
                     "a restart may send some notifications again")
