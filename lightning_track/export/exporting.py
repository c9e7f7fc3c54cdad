"""What every tracker's export shares: resolve the run, hold its lock, read and save its export record, and
call the tracker's exporter (:mod:`.mlflow`, :mod:`.wandb`) picked from ``--to``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ExportError, RunFolderError
from ..folder.layout import RunLayout
from ..query.catalog_rows import CatalogRun
from ..query.runs import RunInfo, read_run
from .record import export_lock, not_sent, read_record, write_record
from .target import Target, parse_target

__all__ = ["ExportResult", "export_run", "open_exporter"]


@dataclass
class ExportResult:
    """What one export of one run sent, and the lines worth telling the user."""

    run: str
    target: str
    run_id: str | None = None
    link: str | None = None
    values: int = 0  # metric values of metrics.jsonl
    system: int = 0  # system/... values of system.jsonl
    params: int = 0
    tags: int = 0  # set or removed
    files: int = 0
    status: str | None = None  # the tracker's status word, when it changed
    notes: list[str] = field(default_factory=list)

    @property
    def nothing_new(self) -> bool:
        return not (self.values or self.system or self.params or self.tags or self.files or self.status)

    def line(self) -> str:
        """One line for the terminal."""
        where = f"{self.target} run {self.run_id}"
        if self.nothing_new:
            return f"{self.run}: up to date in {where}"
        parts = [f"{self.values} values", f"{self.system} system values", f"{self.params} params",
                 f"{self.tags} tags", f"{self.files} files"]
        sent = ", ".join(p for p in parts if not p.startswith("0 "))
        status = f", status {self.status}" if self.status else ""
        return f"{self.run}: sent {sent or 'no new values'}{status} -> {where}"


@contextmanager
def open_exporter(target: Target | str | None) -> Iterator[Any]:
    """The tracker's exporter for ``target`` (reached once; :class:`ExportError` when it cannot be)."""
    target = target if isinstance(target, Target) else parse_target(target)
    if target.tracker == "wandb":
        from .wandb import WandbExporter

        exporter: Any = WandbExporter(target)
    else:
        from .mlflow import MlflowExporter

        exporter = MlflowExporter(target)
    try:
        yield exporter
    finally:
        exporter.close()


def export_run(run: RunInfo | str | Path, to: Target | str | None = None, *, experiment: str | None = None,
               with_model: bool = False, with_checkpoints: bool = False, artifacts: bool = True,
               exporter: Any = None, record_name: str = RunLayout.EXPORT) -> ExportResult:
    """Export one run folder (or bring its earlier export up to date) and return what was sent.

    ``to`` is ``--to`` (``None``: ``$MLFLOW_TRACKING_URI``); pass ``exporter`` from :func:`open_exporter`
    to export many runs over one connection; ``record_name`` is the run file that keeps the record
    (``RunLayout.MIRROR_EXPORT`` for a mirror's own exports: lt-sync --export). ``artifacts=False`` leaves
    the files for a later export (the live mlflow sink's passes while ``logs.txt`` still grows). Raises
    :class:`ExportError` (tracker down, run locked by another export) or :class:`RunFolderError` (no run
    there); the record then holds only what the tracker confirmed.
    """
    if exporter is None:
        with open_exporter(to) as opened:
            return export_run(run, experiment=experiment, with_model=with_model, with_checkpoints=with_checkpoints,
                              artifacts=artifacts, exporter=opened, record_name=record_name)
    info = run if isinstance(run, RunInfo) else run.info if isinstance(run, CatalogRun) else read_run(run)
    if not info.summary and not info.layout.metrics_jsonl.exists():
        raise RunFolderError(f"{info.path}: not a run folder (no summary.json or metrics.jsonl); nothing sent")
    target = exporter.target
    result = ExportResult(info.name, target.uri, notes=list(info.problems))  # a torn summary.json: said, not fatal
    with export_lock(info.path):
        record = read_record(info.path, record_name)
        entry = record["targets"].setdefault(target.uri, {"tracker": target.tracker})
        entry.pop("not_sent", None)  # said again below when this export ends early too

        def save() -> None:
            write_record(info.path, record, record_name)

        try:
            exporter.export(info, entry, save, experiment=experiment, with_model=with_model,
                            with_checkpoints=with_checkpoints, result=result,
                            **({} if artifacts else {"artifacts": False}))  # only MLflow's live sink leaves them
        except (ExportError, KeyboardInterrupt) as exc:
            if entry.get("run_id"):  # what the tracker confirmed, up to the last batch, and what it lacks
                try:
                    entry["not_sent"] = not_sent(info.path, entry, str(exc) or "interrupted")
                except (OSError, ValueError):
                    pass  # the files cannot be read now: the next export finds out again
                save()
            raise
    return result
