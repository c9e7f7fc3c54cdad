"""Where a run was exported, as ``lt show`` and ``lt ls`` tell it: one short entry per tracker target of
the run's export records (``export.json``, written by ``lt export``, and ``export.mirror.json``, written by
``lt-sync --export`` on a mirror; the format is :mod:`lightning_track.export.record`'s).

Why its own reader: a listing needs the target, the tracker's run id and link, not the record's byte
offsets and params; what it keeps is small enough for the runs catalog. Targets are written without
credentials; a user and password found in one all the same (a hand-edited file) are taken out.
"""

from __future__ import annotations

from typing import Any

from .fileio import read_json
from .layout import RunLayout

__all__ = ["read_exports", "short_target", "export_cell", "KEPT", "EXPORT_RECORDS"]

EXPORT_RECORDS = (RunLayout.EXPORT, RunLayout.MIRROR_EXPORT)  # lt export's, lt-sync --export's on a mirror

# what an entry keeps of a target (MLflow's experiment and status, W&B's project and state)
KEPT = ("tracker", "run_id", "link", "experiment", "project", "status", "state", "exported_at")


def read_exports(run_dir: Any, names: set[str] | None = None, problems: list[str] | None = None
                 ) -> list[dict[str, Any]]:
    """``{"target", "record", "tracker", "run_id", ...}`` for each target of each export record in the run
    folder (``names``: its file names, when the caller listed them); what cannot be read goes to ``problems``."""
    from pathlib import Path

    run_dir = Path(run_dir)
    entries: list[dict[str, Any]] = []
    problems = [] if problems is None else problems
    for name in EXPORT_RECORDS:
        if names is not None and name not in names:
            continue
        path = run_dir / name
        try:
            data = read_json(path)
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            problems.append(" ".join(str(exc).split()) if str(path) in str(exc) else f"{path}: {exc}")
            continue
        targets = data.get("targets") if isinstance(data, dict) else None
        if not isinstance(targets, dict):
            problems.append(f"{path}: not an export record (no 'targets' object); ignored")
            continue
        for uri, entry in targets.items():
            if not isinstance(entry, dict) or not entry.get("run_id"):
                continue  # an export that never got as far as the tracker's run
            found = {"target": _no_credentials(str(uri)), "record": name}
            found.update({key: entry[key] for key in KEPT if isinstance(entry.get(key), (str, int))})
            entries.append(found)
    return entries


def _no_credentials(uri: str) -> str:
    head, sep, rest = uri.partition("://")
    netloc, slash, path = rest.partition("/")
    return head + sep + netloc.rpartition("@")[2] + slash + path if sep else uri


def export_cell(entries: list[dict[str, Any]]) -> str | None:
    """``lt ls``'s cell: each target, short, with the first characters of the tracker's run id."""
    return ", ".join(f"{short_target(e['target'])} {str(e.get('run_id', ''))[:8]}" for e in entries) or None


def short_target(uri: str) -> str:
    """``127.0.0.1:5000`` for ``http://127.0.0.1:5000``, ``sqlite:mlflow.db`` for a database path."""
    head, sep, rest = uri.partition("://")
    if not sep:
        return uri
    if head == "sqlite":
        return "sqlite:" + rest.rstrip("/").rsplit("/", 1)[-1]
    return rest if head in ("http", "https") else uri
