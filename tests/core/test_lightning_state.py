"""The logger's pure readings of Lightning's state (run/lightning_state.py)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from lightning_track.run.lightning_state import finalize_verdict, plain_numbers, progress_step


class SIGTERMException(SystemExit):  # the name Lightning's own exception has
    pass


def test_finalize_verdict_tells_an_interrupt_from_a_failure() -> None:
    assert finalize_verdict("success", None) == ("success", None)
    assert finalize_verdict("failed", None) == ("failed", None)
    assert finalize_verdict("failed", KeyboardInterrupt()) == ("interrupted", "KeyboardInterrupt (SIGINT)")
    assert finalize_verdict("failed", SIGTERMException()) == ("interrupted", "SIGTERM")
    assert finalize_verdict("failed", ValueError("bad\nbatch")) == ("failed", "ValueError: bad batch")
    assert finalize_verdict("success", ValueError("handled elsewhere")) == ("success", None)


def test_plain_numbers_and_progress_step() -> None:
    assert plain_numbers({"val/acc": torch.tensor(0.5), "n": 3, "name": "x", "v": torch.ones(2)}) == {
        "val/acc": 0.5, "n": 3.0}
    assert progress_step(SimpleNamespace(global_step=7), 9) == 9
    assert progress_step(None, 4) == 4 and progress_step(None, None) is None
