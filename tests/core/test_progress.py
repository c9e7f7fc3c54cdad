"""The stall rule and the progress clock: plain numbers in, a verdict out."""

from __future__ import annotations

import pytest

from lightning_track.run.progress import ProgressClock
from lightning_track.vocabulary import STALL_FACTOR, STALL_FLOOR_S, parse_iso_time, stall_limit, stalled_for


def test_stall_limit_is_n_times_the_step_time_but_never_below_the_floor() -> None:
    assert stall_limit(None) == STALL_FLOOR_S  # pace not known yet
    assert stall_limit(0.5) == STALL_FLOOR_S
    assert stall_limit(60.0) == 60.0 * STALL_FACTOR
    assert stall_limit(2.0, factor=5, floor_s=1) == 10.0
    assert stall_limit(0.0, factor=5, floor_s=3) == 3.0


def test_stalled_for_says_how_long_only_beyond_the_limit() -> None:
    assert stalled_for(100.0, 105.0, 0.1, factor=10, floor_s=2) == 5.0
    assert stalled_for(100.0, 101.5, 0.1, factor=10, floor_s=2) is None
    assert stalled_for(100.0, 150.0, 10.0, factor=10, floor_s=2) is None  # within 10 x a 10 s step
    assert stalled_for(None, 1e9, None) is None  # nothing recorded: nothing to judge


def test_progress_clock_tracks_the_step_and_its_pace() -> None:
    clock = ProgressClock(window=4)
    clock.start(0, 1000.0)
    assert (clock.step, clock.time, clock.step_time) == (0, 1000.0, None)
    assert clock.observe(0, 1005.0) is False  # no advance: the time stays the last step's
    assert clock.time == 1000.0
    assert clock.observe(10, 1010.0) and clock.step_time is None  # one advance: start-up is not a pace
    assert clock.observe(30, 1012.0) and clock.step_time == pytest.approx(0.1)
    for step, now in ((50, 1014.0), (70, 1016.0), (90, 1018.0), (100, 1028.0)):
        clock.observe(step, now)
    assert clock.step_time == pytest.approx((1028.0 - 1012.0) / 70)  # the window: the last 4 advances
    record = clock.record()
    assert record["step"] == 100 and record["step_time_s"] == pytest.approx(0.228571, abs=1e-6)
    assert parse_iso_time(record["time"]) == 1028.0
    assert clock.observe(5, 1030.0) and clock.step_time is None  # went back (a rewind): pace forgotten
    assert clock.observe(None, 1031.0) is False
