"""The step convention (README: "One step convention in every file") as one pure rule, case by case."""

from __future__ import annotations

import pytest

from lightning_track.folder.records import record_step


@pytest.mark.parametrize(("case", "given", "expected"), [
    # Lightning hands training values one step lower than global_step: the batch's step replaces it
    ("the first training batch is step 1", dict(step=0, global_step=1, lightning_step=0), 1),
    ("a run of max_steps=30 ends at step 30", dict(step=29, global_step=30, lightning_step=29), 30),
    ("validation after 30 steps is step 30", dict(step=30, global_step=30, lightning_step=30), 30),
    # in flight before its optimizer step (LearningRateMonitor at on_train_batch_start): the batch it trains
    ("a value of a batch in flight", dict(step=5, global_step=5, lightning_step=5, stepped=False), 6),
    ("a step the caller chose is kept", dict(step=100, global_step=5, lightning_step=4), 100),
    ("the caller's step, in flight too", dict(step=3, global_step=5, lightning_step=5, stepped=False), 3),
    ("no step: the current batch's", dict(global_step=7), 7),
    ("a batch-tracking line after its optimizer step", dict(global_step=12, stepped=True), 12),
    ("a batch that failed before its optimizer step", dict(global_step=12, stepped=False), 13),
    ("no Trainer: the step given", dict(step=4), 4),
    ("no Trainer, no step: the run's latest step", dict(last_step=9), 9),
    ("nothing known: step 0", dict(), 0),
])
def test_record_step(case: str, given: dict, expected: int) -> None:
    assert record_step(**given) == expected, case
