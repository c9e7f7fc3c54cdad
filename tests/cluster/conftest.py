"""Fixtures for the cluster tests (helpers in cluster_support.py: conftest modules are not importable)."""

from __future__ import annotations

from pathlib import Path

import cluster_support  # noqa: F401 - its warning filters apply to every test here
import pytest


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    root.mkdir()
    return root
