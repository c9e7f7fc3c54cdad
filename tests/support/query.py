"""Helpers of the run-query tests."""

from __future__ import annotations

import json
from pathlib import Path


def edit_summary(run: Path, **fields) -> None:
    """Change a made run's ``summary.json`` the way a crash, an older version or a hand edit would."""
    path = run / "summary.json"
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data))
