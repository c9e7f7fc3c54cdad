"""HealthGuard in real in-process CPU fits: each check fires (or stays quiet) where a user expects."""

from __future__ import annotations

import math

import pytest
from support.health import fit

from lightning_track import HEALTH_EXIT_CODE, HealthCheckFailed, HealthGuard
from lightning_track.folder import signals
from lightning_track.folder.fileio import read_json
from lightning_track.folder.layout import RunLayout


def only_run(root) -> RunLayout:
    (run,) = RunLayout.list_runs(root)
    return run


def failed_fit(root, guard, **kwargs) -> tuple[HealthCheckFailed, dict, dict]:
    with pytest.raises(HealthCheckFailed) as info:
        fit(root, guard, **kwargs)
    run = only_run(root)
    record = signals.read_signal(run.signals_dir, run.name, "failed")
    assert record is not None, "no .failed signal"
    assert not run.signals_dir.joinpath(f"{run.name}.done").exists()
    return info.value, record, read_json(run.summary_json)


def test_healthy_run_writes_healthy_then_done(tmp_path):
    guard = HealthGuard(warmup_steps=10)
    fit(tmp_path, guard, max_steps=25)
    run = only_run(tmp_path)
    assert guard.exp_id == run.name and guard.signals_dir == tmp_path / "signals"
    healthy = signals.read_signal(tmp_path / "signals", run.name, "healthy")
    done = signals.read_signal(tmp_path / "signals", run.name, "done")
    assert healthy["step"] == 10 and 0 < healthy["loss"] < 10 and healthy["learning_rates"] == [0.05]
    assert healthy["run_dir"] == str(run.run_dir.resolve())
    assert done["step"] == 25 and done["time"] >= healthy["time"]
    assert not (tmp_path / "signals" / f"{run.name}.failed").exists()
    assert read_json(run.summary_json)["status"] == "completed"


def test_nan_at_step_5_fails_names_check_and_step(tmp_path):
    # nan_at=5: the batch trained while global_step is 5, i.e. the one that would make step 6: every
    # file names a batch by the step it belongs to (trainer.global_step after its optimizer step)
    exc, record, summary = failed_fit(tmp_path, HealthGuard(warmup_steps=10), nan_at=5)
    assert exc.code == HEALTH_EXIT_CODE == 86 and exc.check == "nonfinite_loss" and exc.step == 6
    assert record["check"] == "nonfinite_loss" and record["step"] == 6 and math.isnan(record["value"])
    assert (only_run(tmp_path).signals_dir / f"{only_run(tmp_path).name}.failed").read_text().startswith(
        "status: failed\nstep: 6\nloss: nan\n")
    assert summary["status"] == "failed"
    assert summary["failure"]["check"] == "nonfinite_loss" and summary["failure"]["step"] == 6
    assert not (tmp_path / "signals" / f"{only_run(tmp_path).name}.healthy").exists()


def test_gradient_accumulation_checks_each_optimizer_step(tmp_path):
    guard = HealthGuard(warmup_steps=6)
    fit(tmp_path, guard, max_steps=8, accumulate_grad_batches=2)
    run = only_run(tmp_path)
    assert signals.read_signal(run.signals_dir, run.name, "healthy")["step"] == 6
    assert signals.read_signal(run.signals_dir, run.name, "done")["step"] == 8


def test_nan_gradient_with_finite_loss(tmp_path):
    exc, record, _ = failed_fit(tmp_path, HealthGuard(warmup_steps=10), nan_grad_at=4)
    assert (exc.check, exc.step) == ("nonfinite_grad_norm", 5)  # the batch trained at global_step 4
    assert record["reason"] == "gradient norm is nan"


def test_zero_lr_fails_at_end_of_warmup(tmp_path):
    exc, record, summary = failed_fit(tmp_path, HealthGuard(warmup_steps=8, loss_threshold=None), lr=0.0)
    assert (exc.check, exc.step) == ("zero_lr", 8)
    assert record["reason"] == "learning rate is 0 on every param group at the end of warmup"
    assert summary["failure"]["check"] == "zero_lr"


def test_lr_warmup_from_zero_is_healthy(tmp_path):
    guard = HealthGuard(warmup_steps=8, loss_threshold=None)  # only the learning-rate check matters here
    fit(tmp_path, guard, max_steps=12, lr_warmup=5)
    run = only_run(tmp_path)
    healthy = signals.read_signal(run.signals_dir, run.name, "healthy")
    assert healthy["learning_rates"][0] == pytest.approx(0.05)
    assert (run.signals_dir / f"{run.name}.done").exists()


def test_explosion_above_absolute_limit(tmp_path):
    exc, record, _ = failed_fit(tmp_path, HealthGuard(warmup_steps=10, explosion_abs=1e6), scale_at=3, scale=1e9)
    assert (exc.check, exc.step, exc.threshold) == ("loss_explosion", 4, 1e6)  # the batch trained at global_step 3
    assert record["value"] > 1e6 and "explosion_abs" in record["reason"]


def test_explosion_relative_to_baseline(tmp_path):
    exc, record, _ = failed_fit(tmp_path, HealthGuard(warmup_steps=20, baseline_steps=5, explosion_ratio=50.0),
                                scale_at=8, scale=1e4)
    assert (exc.check, exc.step) == ("loss_explosion", 9)  # the batch trained at global_step 8
    assert record["threshold"] == pytest.approx(50.0 * record["baseline"])
    assert record["value"] > record["threshold"] and "x baseline" in record["reason"]


def test_loss_still_above_threshold_at_end_of_warmup(tmp_path):
    exc, record, _ = failed_fit(tmp_path, HealthGuard(warmup_steps=6, loss_threshold=20.0), offset=100.0)
    assert (exc.check, exc.step, exc.threshold) == ("loss_threshold", 6, 20.0)
    assert record["value"] > 100 and "mean loss of the last 6 steps" in record["reason"]


def test_stagnation(tmp_path):
    exc, _, _ = failed_fit(tmp_path, HealthGuard(warmup_steps=30, stagnation_steps=5, loss_threshold=None),
                           frozen=True)
    assert exc.check == "stagnation" and exc.step == 6  # the 6th batch: 5 steps without improvement


def test_after_warmup_nan_is_caught_by_the_cheap_periodic_check(tmp_path):
    guard = HealthGuard(warmup_steps=10, check_every_n_steps=10)
    exc, record, _ = failed_fit(tmp_path, guard, nan_at=30, max_steps=60)
    run = only_run(tmp_path)
    assert (run.signals_dir / f"{run.name}.healthy").exists()  # warmup passed first
    assert (exc.check, exc.step) == ("nonfinite_loss", 40)  # batches of steps 31..40 checked together
    assert record["reason"] == "non-finite loss (nan) between steps 31 and 40"


def test_after_warmup_a_single_spike_is_still_seen(tmp_path):
    guard = HealthGuard(warmup_steps=10, check_every_n_steps=10, explosion_abs=1e6)
    exc, record, _ = failed_fit(tmp_path, guard, scale_at=31, scale=1e9, max_steps=60)
    assert (exc.check, exc.step, exc.threshold) == ("loss_explosion", 40, 1e6)
    assert record["reason"].startswith("loss ") and record["reason"].endswith("between steps 31 and 40")


def test_fit_shorter_than_warmup_still_gets_a_verdict(tmp_path):
    fit(tmp_path, HealthGuard(warmup_steps=100), max_steps=7)
    run = only_run(tmp_path)
    assert signals.read_signal(run.signals_dir, run.name, "healthy")["step"] == 7
    assert signals.read_signal(run.signals_dir, run.name, "done")["step"] == 7


def test_exception_in_training_is_classified(tmp_path):
    with pytest.raises(RuntimeError, match="device-side assert"):
        fit(tmp_path, HealthGuard(warmup_steps=10), raise_at=3,
            raise_exc=RuntimeError("CUDA error: device-side assert triggered"))
    run = only_run(tmp_path)
    record = signals.read_signal(run.signals_dir, run.name, "failed")
    assert record["check"] == "cuda_error" and record["step"] == 3
    summary = read_json(run.summary_json)
    assert summary["status"] == "failed" and summary["failure"]["check"] == "cuda_error"


def test_without_run_logger_signals_go_under_default_root_dir(tmp_path):
    fit(tmp_path, HealthGuard(warmup_steps=5), max_steps=6, run_logger=False)
    sig = tmp_path / "plain" / "signals"
    assert sorted(p.name for p in sig.iterdir()) == ["plain.done", "plain.done.json", "plain.healthy",
                                                      "plain.healthy.json"]
    assert "run_dir" not in signals.read_signal(sig, "plain", "done")


def test_lt_run_environment_chooses_exp_id_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(signals.ENV_EXP_ID, "job-7")
    monkeypatch.setenv(signals.ENV_SIGNALS_DIR, str(tmp_path / "elsewhere"))
    fit(tmp_path, HealthGuard(warmup_steps=5), max_steps=6)
    assert signals.read_signal(tmp_path / "elsewhere", "job-7", "done")["run_dir"] == str(only_run(tmp_path).run_dir
                                                                                            .resolve())


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="give warmup_steps or health_time"):
        HealthGuard(warmup_steps=None)
    with pytest.raises(ValueError, match="stall_timeout must be positive, got 0"):
        HealthGuard(stall_timeout=0)
    with pytest.raises(ValueError, match="exp_id 'a/b'"):
        HealthGuard(exp_id="a/b")


def test_the_run_note_names_the_run_folder_from_setup_on(tmp_path, monkeypatch):
    monkeypatch.setenv(signals.ENV_EXP_ID, "job-8")
    monkeypatch.setenv(signals.ENV_SIGNALS_DIR, str(tmp_path / "sig"))
    seen_at_start = []

    class Peek(HealthGuard):  # what lt-run would read once training runs, before any health signal
        def on_train_start(self, trainer, pl_module):
            super().on_train_start(trainer, pl_module)
            seen_at_start.append((tmp_path / "sig" / "job-8.run").read_text())

    fit(tmp_path, Peek(warmup_steps=5), max_steps=6)
    assert seen_at_start == [f"{only_run(tmp_path).run_dir.resolve()}\n"]
