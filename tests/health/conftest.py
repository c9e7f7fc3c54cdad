"""Health tests: keep an outer lt-run's (or a developer shell's) signal settings out of the tests."""

from __future__ import annotations

import pytest

from lightning_track.vocabulary import ENV_EXP_ID, ENV_SIGNALS_DIR


@pytest.fixture(autouse=True)
def _no_lt_run_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's shell (or an outer lt-run) must not redirect the tests' signals."""
    monkeypatch.delenv(ENV_EXP_ID, raising=False)
    monkeypatch.delenv(ENV_SIGNALS_DIR, raising=False)
