"""Signal files: ``<signals_dir>/<exp_id>.healthy|.done|.failed`` and their ``.json`` twins.

Why: a driver script, ``lt-run`` or a Slurm chain must learn a run's health without importing
anything or parsing logs. The text file is ``key: value`` lines a shell can ``grep``; the JSON twin
holds the same fields plus the details (the check that fired, its value and threshold, the run
folder). Both are replaced atomically, the twin first, so whoever sees the text file also finds
the twin. Writers: :class:`~lightning_track.callbacks.health.HealthGuard` (in the training process),
:mod:`lightning_track.launch.runner` (``lt-run``, when the child could not write them itself).

Example text file::

    status: healthy
    step: 100
    loss: 0.543210
    timestamp: 2025-12-04T10:30:00.000000+01:00
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError, one_line
from ..vocabulary import ENV_EXP_ID, ENV_SIGNALS_DIR, SIGNAL_STATUSES, env_value, iso_time
from .fileio import atomic_write_json, atomic_write_text, read_json, restore_nonfinite
from .layout import RunLayout, sanitize_name

__all__ = [
    "check_exp_id",
    "signal_path",
    "write_signal",
    "read_signal",
    "read_signals",
    "clear_signals",
    "run_note_path",
    "write_run_note",
    "read_run_note",
    "tell_launcher",
]

# Fields of the text file, in this order; the JSON twin holds every field.
_TEXT_FIELDS = ("status", "step", "loss", "timestamp", "check", "reason", "exit_code", "duration_s")


def check_exp_id(exp_id: str) -> str:
    """Return ``exp_id`` if it is a safe file-name part, else raise a one-line ``ValueError``."""
    if not isinstance(exp_id, str) or not exp_id:
        raise ConfigError(f"exp_id must be a non-empty string, got {exp_id!r}")
    safe = sanitize_name(exp_id, what="exp_id")
    if safe != exp_id:
        raise ConfigError(f"exp_id {exp_id!r} is not usable as a file name; use e.g. {safe!r}")
    return exp_id


def signal_path(signals_dir: str | Path, exp_id: str, status: str, *, json: bool = False) -> Path:
    """Where the ``status`` signal of ``exp_id`` lives (the ``.json`` twin with ``json=True``)."""
    return RunLayout.signal_file(signals_dir, check_exp_id(exp_id), status, json=json)


def _text_value(key: str, value: Any) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return f"{value:.6f}" if key == "loss" else f"{value:.6g}"
    return " ".join(str(value).split())  # one line, whatever the value holds


def write_signal(signals_dir: str | Path, exp_id: str, status: str, **fields: Any) -> Path:
    """Write the ``status`` signal (text + JSON twin) atomically and return the text file's path.

    ``fields`` may hold anything JSON-able: ``step``, ``loss``, ``check``, ``value``,
    ``threshold``, ``reason``, ``run_dir`` ... ``status``, ``timestamp`` (:func:`~lightning_track.vocabulary.iso_time`),
    ``time`` (epoch seconds) and ``pid`` are filled in.
    """
    text_path = signal_path(signals_dir, exp_id, status)
    Path(signals_dir).mkdir(parents=True, exist_ok=True)
    now = time.time()
    record: dict[str, Any] = {"status": status, "exp_id": exp_id}
    record.update({k: v for k, v in fields.items() if v is not None})
    record.setdefault("timestamp", iso_time(now))
    record.setdefault("time", now)
    record.setdefault("pid", os.getpid())
    lines = [f"{key}: {_text_value(key, record[key])}" for key in _TEXT_FIELDS if key in record]
    atomic_write_json(signal_path(signals_dir, exp_id, status, json=True), record)
    atomic_write_text(text_path, "\n".join(lines) + "\n")
    return text_path


def _parse_text(path: Path) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            record[key.strip()] = value.strip()
    return record


def read_signal(signals_dir: str | Path, exp_id: str, status: str, *, newer_than: float | None = None
                ) -> dict[str, Any] | None:
    """The fields of one signal (from the JSON twin, else the text file), or None if absent.

    ``newer_than`` (epoch seconds) ignores a signal left by an earlier run of the same exp_id.
    """
    text_path = signal_path(signals_dir, exp_id, status)
    json_path = signal_path(signals_dir, exp_id, status, json=True)
    try:
        mtime = text_path.stat().st_mtime
    except FileNotFoundError:
        return None
    if newer_than is not None and mtime < newer_than:
        return None
    record: dict[str, Any] | None = None
    if json_path.exists():
        try:
            data = read_json(json_path)
            record = data if isinstance(data, dict) else None
        except (OSError, ValueError):
            record = None
    if record is None:  # written by hand or by a shell script: the text file is the contract
        try:
            record = _parse_text(text_path)
        except FileNotFoundError:
            return None
    for key in ("loss", "value", "threshold"):
        if key in record:
            record[key] = restore_nonfinite(record[key])
    return record


def read_signals(signals_dir: str | Path, exp_id: str, *, newer_than: float | None = None) -> dict[str, dict]:
    """Every signal of ``exp_id`` present, keyed by status."""
    found = {}
    for status in SIGNAL_STATUSES:
        record = read_signal(signals_dir, exp_id, status, newer_than=newer_than)
        if record is not None:
            found[status] = record
    return found


def clear_signals(signals_dir: str | Path, exp_id: str) -> list[Path]:
    """Remove the signals of ``exp_id`` (a new attempt under the same id starts clean)."""
    removed = []
    for status in SIGNAL_STATUSES:
        for json in (False, True):
            path = signal_path(signals_dir, exp_id, status, json=json)
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            removed.append(path)
    return removed


def format_signal(record: Mapping[str, Any]) -> str:
    """One line for a console: ``failed at step 5: nonfinite_loss: loss is nan``."""
    parts = [str(record.get("status", "?"))]
    if record.get("step") is not None:
        parts.append(f"at step {record['step']}")
    text = " ".join(parts)
    if record.get("reason"):
        text += f": {record['reason']}"
    return text


# -- the run note: which run folder a launched command writes to -------------------------------------


def run_note_path(signals_dir: str | Path, exp_id: str) -> Path:
    """``<signals_dir>/<exp_id>.run``: where a command launched by lt-run names its run folder, as
    soon as the folder exists (before any health signal), so lt-run can post-process it whatever
    happens next."""
    return Path(signals_dir) / f"{check_exp_id(exp_id)}{RunLayout.RUN_NOTE_SUFFIX}"


def write_run_note(signals_dir: str | Path, exp_id: str, run_dir: str | Path) -> Path:
    """Write the absolute ``run_dir`` into the run note, atomically (one line)."""
    path = run_note_path(signals_dir, exp_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, f"{Path(run_dir).resolve()}\n")
    return path


def read_run_note(signals_dir: str | Path, exp_id: str) -> Path | None:
    """The run folder the command named in its run note, or None (no note yet, or not a path)."""
    try:
        text = run_note_path(signals_dir, exp_id).read_text(encoding="utf-8").strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    return Path(text) if text and Path(text).is_absolute() else None


def tell_launcher(run_dir: str | Path, environ: Mapping[str, str] | None = None) -> Path | None:
    """Under lt-run (which exports the exp_id and signals folder), name the run folder in the run note
    as soon as it is decided, so lt-run can post-process the run whatever happens next. A note that
    cannot be written is a warning, never a failure of the run."""
    exp_id, signals_dir = env_value(ENV_EXP_ID, environ), env_value(ENV_SIGNALS_DIR, environ)
    if not (exp_id and signals_dir):
        return None
    try:
        return write_run_note(signals_dir, exp_id, run_dir)
    except (ValueError, OSError) as exc:
        warnings.warn(f"lightning_track: cannot tell lt-run the run folder ({one_line(exc)})", stacklevel=3)
        return None
