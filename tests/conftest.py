"""Shared test setup: keep every tool's home-directory state inside the test's temp folders."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("SWANLAB_MODE", "offline")
os.environ.setdefault("PYTHONHASHSEED", "0")


@pytest.fixture(scope="session")
def session_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """lightning_track's cache (lt-migrate's loop-state template), shared by the session's tests:
    learned once per session, as once per machine for a user."""
    return str(tmp_path_factory.mktemp("lt-cache"))


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch,
                   session_cache_dir: str) -> None:
    """Tests must never read or write the real home directory (SwanLab, ssh, caches)."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("LIGHTNING_TRACK_CACHE_DIR", session_cache_dir)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    for key in list(os.environ):
        if key.startswith("LIGHTNING_TRACK_RUN_DIR"):
            monkeypatch.delenv(key)
