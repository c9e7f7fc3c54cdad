"""The health rules as plain functions: no Trainer, no fit, no process."""

from __future__ import annotations

import math

import pytest

from lightning_track import HEALTH_EXIT_CODE, HealthCheckFailed
from lightning_track.callbacks.health import checks, classify_exception
from lightning_track.vocabulary import EXIT_HEALTH, INTERRUPTED

NAN, INF = float("nan"), float("inf")


def test_exit_code_is_the_vocabularys():
    assert HEALTH_EXIT_CODE == EXIT_HEALTH == 86


@pytest.mark.parametrize("loss", [NAN, INF, -INF])
def test_nonfinite_loss_fails_before_anything_else(loss):
    failure = checks.loss_failure(loss, explosion_abs=1e10)
    assert failure["check"] == "nonfinite_loss" and failure["threshold"] is None
    assert failure["reason"] == f"loss is {loss}"


def test_absolute_explosion_limit():
    assert checks.loss_failure(1e6, explosion_abs=1e6) is None  # at the limit is fine
    failure = checks.loss_failure(2e6, explosion_abs=1e6)
    assert failure == {"check": "loss_explosion", "reason": "loss 2e+06 > explosion_abs 1e+06", "value": 2e6,
                       "threshold": 1e6}
    assert checks.loss_failure(1e30, explosion_abs=None) is None


def test_baseline_ratio_only_with_a_positive_baseline():
    failure = checks.baseline_failure(600.0, baseline=10.0, explosion_ratio=50.0)
    assert failure["check"] == "loss_explosion" and failure["threshold"] == 500.0 and failure["baseline"] == 10.0
    assert failure["reason"] == "loss 600 > 50 x baseline 10"
    assert checks.baseline_failure(400.0, baseline=10.0, explosion_ratio=50.0) is None
    assert checks.baseline_failure(1e9, baseline=0.0, explosion_ratio=50.0) is None
    assert checks.baseline_failure(1e9, baseline=-1.0, explosion_ratio=50.0) is None
    assert checks.baseline_failure(1e9, baseline=None, explosion_ratio=50.0) is None
    assert checks.baseline_failure(1e9, baseline=1.0, explosion_ratio=None) is None


def test_grad_norm():
    assert checks.grad_norm_failure(3.5) is None
    assert checks.grad_norm_failure(NAN)["reason"] == "gradient norm is nan"
    assert checks.grad_norm_failure(INF)["check"] == "nonfinite_grad_norm"


def test_warmup_losses_baseline_is_built_before_the_ratio_applies():
    losses = checks.WarmupLosses(explosion_abs=None, explosion_ratio=10.0, baseline_steps=3)
    assert [losses.observe(x) for x in (1.0, 2.0, 3.0)] == [None, None, None]
    assert losses.baseline == 2.0
    assert losses.observe(19.0) is None
    failure = losses.observe(21.0)
    assert failure["check"] == "loss_explosion" and failure["threshold"] == 20.0
    assert list(losses.window) == [1.0, 2.0, 3.0, 19.0]  # the failing loss is not kept


def test_warmup_losses_a_huge_first_loss_is_part_of_the_baseline():
    losses = checks.WarmupLosses(explosion_abs=None, explosion_ratio=2.0, baseline_steps=2)
    assert losses.observe(1000.0) is None and losses.observe(1.0) is None
    assert losses.baseline == 500.5


def test_warmup_losses_nonfinite_is_not_kept_and_does_not_feed_the_baseline():
    losses = checks.WarmupLosses(baseline_steps=1)
    assert losses.observe(NAN)["check"] == "nonfinite_loss"
    assert losses.baseline is None and list(losses.window) == []


def test_stagnation_counts_steps_without_improvement():
    losses = checks.WarmupLosses(stagnation_steps=3, stagnation_min_delta=0.1)
    assert losses.observe(1.0) is None  # first best
    assert losses.observe(0.95) is None  # not better by 0.1: 1 step
    assert losses.observe(0.8) is None  # better: counter restarts
    assert losses.observe(0.75) is None and losses.observe(0.8) is None
    failure = losses.observe(0.71)
    assert failure == {"check": "stagnation", "reason": "no improvement on best loss 0.8 for 3 steps",
                       "value": 0.71, "threshold": 0.8}


def test_window_keeps_the_last_losses():
    losses = checks.WarmupLosses(loss_window=2, explosion_ratio=None)
    for x in (5.0, 6.0, 7.0):
        losses.observe(x)
    assert list(losses.window) == [6.0, 7.0]
    assert losses.verdict(None, [0.1], check_lr=True) == (6.5, None)


def test_warmup_verdict_threshold_then_lr():
    mean, failure = checks.warmup_verdict([20.0, 30.0], 10.0, [0.0], check_lr=True)
    assert mean == 25.0 and failure["check"] == "loss_threshold" and failure["threshold"] == 10.0
    assert failure["reason"] == "mean loss of the last 2 steps 25 is above loss_threshold 10 at the end of warmup"
    assert checks.warmup_verdict([20.0], 20.0, [0.1], check_lr=True) == (20.0, None)  # at the threshold is fine
    mean, failure = checks.warmup_verdict([1.0], 10.0, [0.0, 0.0], check_lr=True)
    assert failure == {"check": "zero_lr", "reason": "learning rate is 0 on every param group at the end of warmup",
                       "value": 0.0, "threshold": 0.0}
    assert checks.warmup_verdict([1.0], 10.0, [0.0, 1e-5], check_lr=True)[1] is None  # one group learns
    assert checks.warmup_verdict([1.0], 10.0, [0.0], check_lr=False)[1] is None
    assert checks.warmup_verdict([1.0], 10.0, [], check_lr=True)[1] is None  # no optimizer: nothing to judge
    assert checks.warmup_verdict([], 10.0, [0.1], check_lr=True) == (None, None)


def test_peak_after_warmup():
    assert checks.peak_failure(None, 1, 10, 1e6, 100.0, 1.0) is None
    assert checks.peak_failure(50.0, 1, 10, 1e6, 100.0, 1.0) is None
    failure = checks.peak_failure(NAN, 30, 39, 1e6, 100.0, 1.0)
    assert failure["check"] == "nonfinite_loss" and failure["reason"] == "non-finite loss (nan) between steps 30 and 39"
    failure = checks.peak_failure(2e6, 30, 39, 1e6, None, None)
    assert (failure["check"], failure["threshold"]) == ("loss_explosion", 1e6)
    assert failure["reason"] == "loss 2e+06 > explosion_abs 1e+06 between steps 30 and 39"
    failure = checks.peak_failure(500.0, 1, 10, 1e6, 100.0, 2.0)  # the baseline limit is the lower one
    assert failure["threshold"] == 200.0 and failure["reason"] == "loss 500 > 100 x baseline 2 between steps 1 and 10"
    assert checks.peak_failure(500.0, 1, 10, None, 100.0, -2.0) is None  # no scale from a negative baseline


def test_stall_failure():
    assert checks.stall_failure(1.5, 2.34567) == {"check": "stall", "reason": "stalled: no step for 2 s",
                                                 "value": 2.346, "threshold": 1.5}
    failure = checks.stall_failure(300.0, 412.3, step=40, waiting_in="all_reduce")
    assert failure["reason"] == "stalled: no step for 412 s after step 40 (waiting in all_reduce)"
    assert (failure["value"], failure["threshold"]) == (412.3, 300.0)


def test_waiting_in_names_the_collective_a_stuck_thread_is_in():
    dist = "/x/torch/distributed/distributed_c10d.py"
    stack = [(dist, "all_reduce"), (dist, "wrapper"), ("/x/train.py", "training_step")]
    assert checks.waiting_in(stack, distributed=True) == "all_reduce"
    assert checks.waiting_in([("/x/threading.py", "wait"), ("/x/train.py", "training_step")], distributed=True) is None
    ddp = [("/x/torch/autograd/graph.py", "_engine_run_backward"), ("/x/torch/autograd/__init__.py", "backward")]
    assert checks.waiting_in(ddp, distributed=True) == "backward (the gradient all_reduce)"
    assert checks.waiting_in(ddp, distributed=False) is None  # one process: backward waits on nobody
    assert checks.waiting_in([("/x/mine.py", "all_reduce")], distributed=True) is None  # not torch.distributed's


def test_root_cause_prefers_the_loss_over_the_gradients_it_broke():
    failures = [{"check": "nonfinite_grad_norm", "reason": "g", "rank": 0}, None,
                {"check": "nonfinite_loss", "reason": "l", "rank": 2}]
    chosen, ranks = checks.root_cause(failures)
    assert chosen["rank"] == 2 and chosen["check"] == "nonfinite_loss"
    assert ranks == {"2": "nonfinite_loss", "0": "nonfinite_grad_norm"}


def test_root_cause_same_check_lowest_rank_unknown_last():
    chosen, ranks = checks.root_cause([None, {"check": "weird", "reason": "w", "rank": 1},
                                       {"check": "stall", "reason": "s", "rank": 3}])
    assert chosen["check"] == "stall" and set(ranks) == {"1", "3"}
    chosen, ranks = checks.root_cause([{"check": "zero_lr", "reason": "z", "rank": 1},
                                       {"check": "zero_lr", "reason": "z", "rank": 0}])
    assert chosen["rank"] == 0
    chosen, ranks = checks.root_cause([{"check": "zero_lr", "reason": "z", "rank": 0}])
    assert chosen["check"] == "zero_lr" and ranks is None  # one rank: no per-rank list


def test_root_cause_when_only_another_rank_failed():
    assert checks.root_cause([None]) == ({"check": "unknown", "reason": "another rank failed", "rank": None}, None)


def test_priority_lists_every_check_the_guard_raises():
    assert checks.PRIORITY[:3] == ("nonfinite_loss", "loss_explosion", "nonfinite_grad_norm")
    assert set(checks.PRIORITY) == {"nonfinite_loss", "loss_explosion", "nonfinite_grad_norm", "stagnation",
                                    "loss_threshold", "zero_lr", "stall"}


def test_health_check_failed_is_a_system_exit_with_the_code():
    exc = HealthCheckFailed.from_failure({"check": "nonfinite_loss", "reason": "loss is nan", "value": NAN,
                                          "threshold": None, "rank": 1}, step=5, exit_code=86)
    assert isinstance(exc, SystemExit) and not isinstance(exc, Exception) and exc.code == 86
    assert str(exc) == "health check 'nonfinite_loss' failed at step 5 on rank 1: loss is nan"
    assert math.isnan(exc.as_dict().pop("value"))
    assert str(HealthCheckFailed("stall", "stalled", rank=0, exit_code=3)) == "health check 'stall' failed: stalled"
    assert HealthCheckFailed("stall", "stalled", exit_code=3).code == 3


def test_classify_exception():
    import torch

    oom = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
    assert classify_exception(oom) == ("cuda_oom", "CUDA out of memory: CUDA out of memory. Tried to allocate 2 GiB")
    assert classify_exception(RuntimeError("NCCL communicator was aborted"))[0] == "cuda_error"
    assert classify_exception(ValueError("bad shape")) == ("exception", "ValueError: bad shape")
    assert classify_exception(KeyboardInterrupt())[0] == "interrupted"


def test_classify_exception_more_cases():
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    assert classify_exception(SIGTERMException()) == ("terminated", "SIGTERM received")
    assert classify_exception(KeyboardInterrupt()) == (INTERRUPTED, "KeyboardInterrupt (SIGINT)")
    assert classify_exception(ValueError()) == ("exception", "ValueError")
    assert classify_exception(ValueError("first line\nsecond")) == ("exception", "ValueError: first line")
    assert classify_exception(RuntimeError("x" * 500))[1] == "RuntimeError: " + "x" * 300
    assert classify_exception(RuntimeError("CUDA error: device-side assert triggered"))[0] == "cuda_error"
    assert classify_exception(OSError("no CUDA here"))[0] == "exception"  # only RuntimeErrors name the device
    assert set(checks.STOP_CHECKS) == {"interrupted", "terminated"}
