"""A SwanLab run, always offline: no network, no prompt, settings kept under the runs root.

Upload later with ``swanlab sync <run>/swanlab_logs/run-*``.
"""

from __future__ import annotations

import os
import re
from typing import Any

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


class SwanLabSink(Sink):
    name = "swanlab"

    def __init__(self, project: str | None = None) -> None:
        self.project = project
        self._run: Any = None
        self.run_dir: str | None = None

    @staticmethod
    def warm_up() -> None:
        """Import SwanLab (~1 s) ahead of the first record (the sink host calls this at start)."""
        import swanlab  # noqa: F401

    def open(self, context: SinkContext) -> None:
        import swanlab

        layout = context.layout
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

    def log_config(self, config: dict[str, Any]) -> None:
        self._run.config.update(config)

    def write(self, records: list[MetricRecord]) -> None:
        log = self._run.log
        for record in records:
            log(dict(record.metrics), step=record.step)

    def close(self, status: str, reason: str | None = None) -> None:
        if self._run is not None:
            run, self._run = self._run, None
            run.finish(state=_STATE.get(status, "crashed"))


SINK = SwanLabSink
