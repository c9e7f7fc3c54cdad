"""Fixtures for the cluster tests (helpers in tests/support/cluster.py: conftest modules are not importable)."""

from __future__ import annotations

from pathlib import Path

import pytest
import support.cluster  # noqa: F401 - its warning filters apply to every test here


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    root.mkdir()
    return root
