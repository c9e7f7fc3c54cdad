"""A run stopped by HealthGuard keeps its evidence: the failing step's values (metrics.jsonl and
TensorBoard), the failing batch's data lines (batch_tracking.jsonl) and a report that leads with why."""

from __future__ import annotations

import json
import math

import lightning as L
import pytest
import torch
from support.readers import tensorboard_scalars
from torch.utils.data import DataLoader, TensorDataset

from lightning_track import BatchTracker, HealthCheckFailed, HealthGuard, RunLogger, TrackedDataset, read_metrics
from lightning_track.derived.report import render_report
from lightning_track.folder.fileio import read_json
from lightning_track.folder.layout import RunLayout
from lightning_track.training.toy import ToyRegression

BATCH = 8
NAN_AT = 20  # ToyModule's loss is NaN in the batch trained at global_step 20
NAN_STEP = NAN_AT + 1  # the step that batch belongs to in every file (global_step after its optimizer step)


def tracked_data(n: int = 512) -> DataLoader:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.tensor([[0.5], [-0.3], [0.2], [0.4]]) + 0.1 * torch.randn(n, 1, generator=g)
    return DataLoader(TrackedDataset(TensorDataset(x, y)), batch_size=BATCH)  # no shuffle: batch k = lines 8k..8k+7


def nan_fit(root, callbacks: list, **module_kwargs) -> RunLayout:
    trainer = L.Trainer(
        max_steps=40, accelerator="cpu", devices=1, callbacks=callbacks,
        logger=RunLogger("toy", "evidence", root=root, sinks=("tensorboard",), sink_process=False),
        enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False, log_every_n_steps=1,
    )
    with pytest.raises(HealthCheckFailed):
        trainer.fit(ToyRegression(**module_kwargs), tracked_data())
    (run,) = RunLayout.list_runs(root)
    return run


@pytest.mark.parametrize("tracker_first", [True, False], ids=["tracker-first", "guard-first"])
def test_nan_step_values_batch_and_report_are_recorded(tmp_path, tracker_first):
    guard, tracker = HealthGuard(warmup_steps=30), BatchTracker()
    run = nan_fit(tmp_path, [tracker, guard] if tracker_first else [guard, tracker], nan_at=NAN_AT)

    # metrics.jsonl: the NaN step is there, spelled "NaN" (strict JSON), beside the healthy steps before it
    raw = [json.loads(line) for line in run.metrics_jsonl.read_text().splitlines()]
    at_nan = [r for r in raw if r["step"] == NAN_STEP]
    assert at_nan and any(r["metrics"].get("train/loss") == "NaN" for r in at_nan), raw[-3:]
    losses = {r.step: r.metrics["train/loss"] for r in read_metrics(run.metrics_jsonl) if "train/loss" in r.metrics}
    assert sorted(losses) == list(range(1, NAN_STEP + 1))
    assert math.isnan(losses[NAN_STEP]) and all(math.isfinite(v) for s, v in losses.items() if s < NAN_STEP)
    health = [r.metrics["health/loss"] for r in read_metrics(run.metrics_jsonl) if "health/loss" in r.metrics]
    assert len(health) == 1 and math.isnan(health[0])  # the value the guard judged, at the same step

    # TensorBoard, read with tensorboard's own reader: the curve ends with the NaN step
    curve = tensorboard_scalars(run.tensorboard_dir)["train/loss"]
    assert [s for s, _, _ in curve] == list(range(1, NAN_STEP + 1)) and math.isnan(curve[-1][1])

    # batch_tracking.jsonl: the failing batch's lines are recorded, marked as never applied
    tracked = [json.loads(line) for line in run.batch_tracking_jsonl.read_text().splitlines()]
    assert [t["line_indices"] for t in tracked] == [list(range(BATCH * k, BATCH * k + BATCH))
                                                    for k in range(NAN_AT + 1)]
    last = tracked[-1]
    assert last["step"] == tracked[-2]["step"] + 1 == NAN_STEP and last["batch_idx"] == NAN_AT
    assert [t["step"] for t in tracked] == sorted(losses)  # the same step for a batch's values and its lines
    assert last["failed"] is True and "nonfinite_loss" in last["reason"] and math.isnan(float(last["loss"]))
    assert all("failed" not in t for t in tracked[:-1])

    # report_draft.md leads with the failure: check, value, threshold, step
    summary = read_json(run.summary_json)
    assert summary["status"] == "failed" and summary["failure"]["check"] == "nonfinite_loss"
    head = run.report_md.read_text().splitlines()[:6]
    text = "\n".join(head)
    assert head[0] == f"# {run.name}"
    assert "nonfinite_loss" in text and f"step {NAN_STEP}" in text and "value: nan" in text
    assert "threshold: -" in text and "loss is nan" in text


def test_a_failure_at_the_end_of_warmup_records_that_batch_too(tmp_path):
    """zero_lr is judged after the optimizer step, in on_train_batch_end: that batch trained, and its
    values (logged by Lightning only after the batch end hooks) are still recorded."""
    guard = HealthGuard(warmup_steps=8, loss_threshold=None)
    run = nan_fit(tmp_path, [guard, BatchTracker()], lr=0.0)
    steps = sorted({r.step for r in read_metrics(run.metrics_jsonl) if "train/loss" in r.metrics})
    assert steps == list(range(1, 9))  # the 8th batch's values at step 8, as its tracking line
    tracked = [json.loads(line) for line in run.batch_tracking_jsonl.read_text().splitlines()]
    assert [t["step"] for t in tracked] == list(range(1, 9)) and "failed" not in tracked[-1]
    assert tracked[-1]["line_indices"] == list(range(BATCH * 7, BATCH * 8))
    head = "\n".join(run.report_md.read_text().splitlines()[:6])
    assert "zero_lr" in head and "step 8" in head and "threshold: 0" in head


def test_an_exception_mid_batch_tracks_the_batch_in_flight(tmp_path):
    trainer = L.Trainer(
        max_steps=20, accelerator="cpu", devices=1, callbacks=[BatchTracker()],
        logger=RunLogger("toy", "boom", root=tmp_path, sinks=(), sink_process=False),
        enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False, log_every_n_steps=1,
    )
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(ToyRegression(raise_at=5, raise_exc=RuntimeError("boom")), tracked_data())
    (run,) = RunLayout.list_runs(tmp_path)
    tracked = [json.loads(line) for line in run.batch_tracking_jsonl.read_text().splitlines()]
    assert [t["step"] for t in tracked] == list(range(1, 7))
    assert tracked[-1]["line_indices"] == list(range(40, 48)) and tracked[-1]["failed"] is True
    assert tracked[-1]["reason"] == "RuntimeError: boom" and tracked[-1]["loss"] is None


def test_report_opening_follows_the_summary(tmp_path):
    layout = RunLayout(tmp_path / "r")
    timeout = {"check": "health_timeout", "reason": "not healthy within 8 s", "value": 8.3, "threshold": 8.0}
    head = render_report(layout, {"status": "failed", "failure": timeout}).splitlines()
    assert head[2] == "**Failed: health_timeout**: not healthy within 8 s"
    assert head[4] == "- check: health_timeout, value: 8.3, threshold: 8, step: -"
    # a completed run's leftover failure block (an earlier attempt's) is not why it ended
    assert "Failed" not in render_report(layout, {"status": "completed", "failure": timeout})
