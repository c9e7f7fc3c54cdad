"""The sink hosts' work after the run, started once the run's files are final.

Why its own step: a tracker's last export (the ``"mlflow"`` sink) must see what finalize writes after
the sinks are closed (summary.json's status, metrics.csv, report_draft.md and the plot drawn on a
background thread), so the sink host lingers after closing its sinks until it is released here. The
release waits on a thread of its own, never on the training thread: ``fit()`` returns at once, and
only the interpreter's exit (or :meth:`RunLogger.wait`) waits for the host, which bounds its work.
"""

from __future__ import annotations

import threading
from pathlib import Path

from ..derived.plots import wait_for_plots
from .sinkhost import SinkHost

__all__ = ["AfterRun"]


class AfterRun:
    """The sink hosts of one run, released (each once) when its files are final."""

    def __init__(self) -> None:
        self.hosts: list[SinkHost] = []
        self.thread: threading.Thread | None = None

    def add(self, host: SinkHost) -> SinkHost:
        self.hosts.append(host)
        return host

    def release(self, run_dir: Path) -> None:
        """Release the lingering hosts once the plot of ``run_dir`` is drawn, on a thread that is not a
        daemon (the interpreter's exit waits for it)."""
        lingering, self.hosts = [host for host in self.hosts if host.lingering], []
        if not lingering:
            return

        def release() -> None:
            wait_for_plots(run_dir)
            for host in lingering:
                host.release()

        if not threading.main_thread().is_alive():  # the interpreter is shutting down: no new thread
            release()
            return
        self.join()  # an earlier attempt's hosts first
        self.thread = threading.Thread(target=release, name="lightning_track-after-run", daemon=False)
        self.thread.start()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the released hosts' work; False when ``timeout`` ran out first."""
        if self.thread is not None:
            self.thread.join(timeout)
            return not self.thread.is_alive()
        return True
