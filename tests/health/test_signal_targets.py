"""signal_target: the one rule for where HealthGuard's and PreemptionHandler's signals go (no fit)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from lightning_track.callbacks.targets import SignalTarget, signal_target
from lightning_track.folder.layout import RunLayout
from lightning_track.folder.signals import read_run_note
from lightning_track.vocabulary import ENV_EXP_ID, ENV_SIGNALS_DIR, HEALTHY


def plain_trainer(root: Path) -> SimpleNamespace:
    """What the resolver reads of a Trainer without a RunLogger."""
    return SimpleNamespace(loggers=[], default_root_dir=str(root / "plain"))


def test_without_run_logger_defaults_come_from_default_root_dir(tmp_path):
    target = signal_target(plain_trainer(tmp_path), environ={})
    assert target == SignalTarget(tmp_path / "plain" / "signals", "plain", None)
    assert target.path(HEALTHY) == tmp_path / "plain" / "signals" / "plain.healthy"


def test_environment_set_by_lt_run_comes_before_the_layout(tmp_path):
    env = {ENV_EXP_ID: "job-7", ENV_SIGNALS_DIR: str(tmp_path / "sig")}
    assert signal_target(plain_trainer(tmp_path), environ=env) == SignalTarget(tmp_path / "sig", "job-7", None)
    assert signal_target(plain_trainer(tmp_path), environ={ENV_EXP_ID: ""}).exp_id == "plain"  # empty is unset


def test_arguments_then_inherited_then_environment(tmp_path):
    env = {ENV_EXP_ID: "env-id", ENV_SIGNALS_DIR: str(tmp_path / "env")}
    guard = SignalTarget(tmp_path / "guard", "guard-id")
    trainer = plain_trainer(tmp_path)
    assert signal_target(trainer, inherit=guard, environ=env) == SignalTarget(tmp_path / "guard", "guard-id")
    assert signal_target(trainer, tmp_path / "mine", inherit=guard, environ=env) == SignalTarget(
        tmp_path / "mine", "guard-id")
    assert signal_target(trainer, exp_id="mine", inherit=guard, environ=env) == SignalTarget(
        tmp_path / "guard", "mine")
    assert signal_target(trainer, exp_id="mine", environ=env) == SignalTarget(tmp_path / "env", "mine")


def test_an_unsafe_exp_id_from_the_environment_is_refused(tmp_path):
    with pytest.raises(ValueError, match="exp_id 'a/b' is not usable as a file name"):
        signal_target(plain_trainer(tmp_path), environ={ENV_EXP_ID: "a/b"})


def test_an_unusable_folder_name_gives_a_safe_exp_id(tmp_path):
    trainer = SimpleNamespace(loggers=[], default_root_dir=str(tmp_path / "my run"))
    exp_id = signal_target(trainer, environ={}).exp_id
    assert exp_id != "my run" and "/" not in exp_id and " " not in exp_id


def test_write_and_clear_through_the_target(tmp_path):
    target = SignalTarget(tmp_path, "e")
    assert target.write(HEALTHY, step=3) == tmp_path / "e.healthy"
    assert sorted(p.name for p in target.clear()) == ["e.healthy", "e.healthy.json"]


def test_the_run_note_names_the_folder_and_survives_clear(tmp_path):
    target = SignalTarget(tmp_path / "sig", "e", tmp_path / "runs" / "r")
    assert target.write_run_note() == tmp_path / "sig" / "e.run"
    assert (tmp_path / "sig" / "e.run").read_text() == f"{tmp_path / 'runs' / 'r'}\n"
    assert read_run_note(tmp_path / "sig", "e") == tmp_path / "runs" / "r"  # lt-run's side reads it back
    target.clear()
    assert target.run_note.exists()  # the folder did not change with the signals
    assert SignalTarget(tmp_path / "sig", "plain").write_run_note() is None  # no RunLogger, no folder to name
    assert RunLayout.RUN_NOTE_SUFFIX == ".run" and read_run_note(tmp_path / "sig", "none") is None
