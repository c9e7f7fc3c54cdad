"""Signal files: the text + JSON twin contract that drivers and lt-run rely on."""

from __future__ import annotations

import json
import math
import time

import pytest

from lightning_track.folder import signals
from lightning_track.vocabulary import iso_time


def test_write_signal_text_and_json_twin(tmp_path):
    path = signals.write_signal(tmp_path / "signals", "exp1", "healthy", step=100, loss=0.54321, check=None,
                                run_dir="/runs/x")
    assert path == tmp_path / "signals" / "exp1.healthy"
    lines = path.read_text().splitlines()
    assert lines[:3] == ["status: healthy", "step: 100", "loss: 0.543210"]
    twin = json.loads((tmp_path / "signals" / "exp1.healthy.json").read_text())
    assert lines[3] == f"timestamp: {iso_time(twin['time'])}"  # the one timestamp format of a run's files
    assert twin["status"] == "healthy" and twin["step"] == 100 and twin["loss"] == 0.54321
    assert twin["run_dir"] == "/runs/x" and "check" not in twin  # None fields are left out
    assert signals.read_signal(tmp_path / "signals", "exp1", "healthy")["run_dir"] == "/runs/x"


def test_failed_signal_keeps_check_value_threshold_and_nan(tmp_path):
    signals.write_signal(tmp_path, "e", "failed", step=5, loss=math.nan, check="nonfinite_loss",
                         reason="loss is nan", value=math.nan, threshold=None)
    text = (tmp_path / "e.failed").read_text()
    assert "loss: nan\n" in text and "check: nonfinite_loss\n" in text and "reason: loss is nan\n" in text
    json.loads((tmp_path / "e.failed.json").read_text())  # strict JSON despite the NaN
    record = signals.read_signal(tmp_path, "e", "failed")
    assert record["check"] == "nonfinite_loss" and math.isnan(record["value"]) and math.isnan(record["loss"])
    assert signals.format_signal(record) == "failed at step 5: loss is nan"


def test_text_only_signal_is_read(tmp_path):
    (tmp_path / "job.failed").write_text("status: failed\nreason: written by a shell script\n")
    assert signals.read_signal(tmp_path, "job", "failed") == {"status": "failed", "reason": "written by a shell script"}
    assert set(signals.read_signals(tmp_path, "job")) == {"failed"}


def test_newer_than_ignores_a_previous_attempt_and_clear_removes(tmp_path):
    signals.write_signal(tmp_path, "e", "done", step=3)
    assert signals.read_signal(tmp_path, "e", "done", newer_than=time.time() + 5) is None
    assert signals.read_signal(tmp_path, "e", "done", newer_than=time.time() - 60)["step"] == 3
    removed = signals.clear_signals(tmp_path, "e")
    assert sorted(p.name for p in removed) == ["e.done", "e.done.json"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad", ["a/b", "../x", "", "two words"])
def test_bad_exp_id_is_a_one_line_error(tmp_path, bad):
    with pytest.raises(ValueError, match="exp_id") as info:
        signals.write_signal(tmp_path, bad, "healthy")
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_unknown_status_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="signal status 'ok' is not one of healthy, done, failed"):
        signals.write_signal(tmp_path, "e", "ok")
