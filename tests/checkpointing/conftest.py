"""Fixtures for the checkpointing tests; shared helpers live in tests/support (conftest is not importable)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def run_logger_factory(tmp_path):
    from lightning_track import RunLogger

    def make(**kwargs: Any) -> RunLogger:
        kwargs.setdefault("root", tmp_path / "runs")
        kwargs.setdefault("sinks", ())
        return RunLogger(kwargs.pop("dataset", "lines"), kwargs.pop("method", "sgd"), **kwargs)

    return make
