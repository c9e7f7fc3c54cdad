"""The environment of every process a test starts: the repository and ``tests/`` importable (so a
script can ``import support.*``), none of lightning_track's variables leaking from the test run, and
SIGINT as in a terminal however the suite was started."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent


def script_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIGHTNING_TRACK_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), str(TESTS), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def sigint_as_in_a_terminal() -> None:
    """Give this process Python's Ctrl+C handler where it inherited SIGINT ignored (``pytest &`` in a
    script). Every process the tests start then gets SIGINT's default action (``exec`` resets a caught
    signal, never an ignored one), so a test that presses Ctrl+C means the same started in the background."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def ignore_sigint() -> None:
    """``preexec_fn`` of a process started as a script's ``cmd &`` starts it: SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def sigint_ignored() -> Iterator[None]:
    """This process (and what it starts meanwhile) with SIGINT ignored, as a script's ``cmd &`` has it."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
