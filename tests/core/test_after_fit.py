"""Values logged after ``trainer.fit`` returned (a test score, a sample) belong to the same run and attempt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning as L
import pytest
from support.readers import tensorboard_scalars

from lightning_track import RunLogger, read_metrics
from lightning_track.training.demo import DemoDataModule, DemoModule

HERE = Path(__file__).parent

AFTER_FIT = textwrap.dedent("""
    import sys
    from pathlib import Path

    from test_after_fit import fit_then_log

    fit_then_log(Path(sys.argv[1]))
    # no finalize: the process exits, and the exit closes what was logged after fit
""")


def fit_then_log(root: Path) -> RunLogger:
    logger = RunLogger("after", "fit", root=root, sinks=("tensorboard",), console=False, system_interval=0)
    trainer = L.Trainer(max_steps=12, logger=logger, log_every_n_steps=1, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(DemoModule(max_steps=12), datamodule=DemoDataModule(n_train=256, n_val=16))
    logger.log_metrics({"test/acc": 0.75})
    logger.log_text("sample", "the model's answer")
    return logger


def test_values_logged_after_fit_then_finalized_again_keep_the_completed_attempt(tmp_path: Path) -> None:
    logger = fit_then_log(tmp_path)
    logger.finalize("success")  # what trainer.test does at its end
    assert logger.wait(60)  # the sink hosts' TensorBoard files (fit's, then the values after it) are finished
    check_one_completed_attempt(tmp_path)


@pytest.mark.slow
def test_values_logged_after_fit_are_closed_at_process_exit(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", AFTER_FIT, str(tmp_path)], capture_output=True, text=True,
                          timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE),
                                                                            os.environ.get("PYTHONPATH", "")])})
    assert done.returncode == 0, done.stderr[-2000:]
    check_one_completed_attempt(tmp_path)


def check_one_completed_attempt(root: Path) -> None:
    (run,) = [p for p in root.iterdir() if p.is_dir()]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and "reason" not in summary
    assert [(a["attempt"], a["status"]) for a in summary["attempts"]] == [(1, "completed")]
    assert "dropped_records" not in summary["attempts"][0]
    assert not list(run.glob("metrics.dropped*"))  # no record moved aside
    records = read_metrics(run / "metrics.jsonl")
    train_steps = [r.step for r in records if "train/loss" in r.metrics]
    assert train_steps == list(range(1, 13))  # every training step kept, in order
    assert records[-1].metrics == {"test/acc": 0.75}
    assert summary["final"]["test/acc"]["value"] == 0.75 and summary["last_step"] == records[-1].step
    media = [json.loads(line) for line in (run / "media.jsonl").read_text().splitlines()]
    assert [(m["key"], m["kind"]) for m in media] == [("sample", "text")]
    assert (run / media[0]["file"]).read_text() == "the model's answer"
    assert [v for _, v, _ in tensorboard_scalars(run / "tensorboard_logs")["test/acc"]] == [0.75]
    assert not list(run.glob("meta.attempt-*.json"))
