"""PNG curves in every run folder: written by post_process at finalize, linked from report_draft.md, never
fatal; skipped without matplotlib."""

from __future__ import annotations

import json

import pytest

import lightning_track.derived.plots as plots
from lightning_track import post_process

PNG = b"\x89PNG\r\n\x1a\n"


def test_finalize_draws_the_runs_curves_and_the_report_links_them(made_runs) -> None:
    for run in made_runs.values():
        assert (run / "plots" / "metrics.png").read_bytes()[:8] == PNG
        assert "![metrics](plots/metrics.png)" in (run / "report_draft.md").read_text()
        assert "plots_error" not in json.loads((run / "summary.json").read_text())


def test_panels_group_stages_and_skip_epoch(made_runs) -> None:
    from lightning_track import read_metrics

    panels = plots.run_panels(read_metrics(made_runs["lora"] / "metrics.jsonl"))
    assert list(panels)[:2] == ["loss", "acc"] and "epoch" not in panels
    assert [label for label, _, _ in panels["loss"]] == ["train", "val"]


def test_no_matplotlib_or_a_broken_plot_never_costs_the_summary(runs_copy, monkeypatch) -> None:
    run = runs_copy["full"]
    (run / "plots" / "metrics.png").unlink()
    post_process(run, plots=False)
    assert not (run / "plots" / "metrics.png").exists()
    assert "![metrics]" not in (run / "report_draft.md").read_text()
    monkeypatch.setattr(plots, "have_matplotlib", lambda: False)
    post_process(run)
    assert not (run / "plots" / "metrics.png").exists()
    monkeypatch.undo()

    def broken(*args, **kwargs):
        raise RuntimeError("no fonts\nat all")

    monkeypatch.setattr(plots, "plot_panels", broken)
    summary = post_process(run, status="completed")
    assert summary["status"] == "completed" and summary["plots_error"].endswith("metrics.png: no fonts at all")
    assert (run / "report_draft.md").is_file() and (run / "metrics.csv").is_file()


def _fit_demo(logger, steps: int = 12) -> None:
    import lightning as L

    from lightning_track.training.demo import DemoDataModule, DemoModule

    trainer = L.Trainer(max_steps=steps, logger=logger, log_every_n_steps=1, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, accelerator="cpu",
                        num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(DemoModule(max_steps=steps), datamodule=DemoDataModule(n_train=256, n_val=32))


def test_fit_returns_before_the_plot_and_wait_finishes_it(tmp_path, monkeypatch) -> None:
    """fit() does not wait for matplotlib: the plot is drawn on a thread; RunLogger.wait() waits for
    the PNG and its link, and every other file is already complete when fit() returns."""
    import threading

    from lightning_track import RunLogger, read_metrics

    gate, drawn = threading.Event(), plots.plot_panels

    def held(*args, **kwargs):
        gate.wait(60)  # released by the test once fit has returned (before the fix: fit waits here)
        return drawn(*args, **kwargs)

    monkeypatch.setattr(plots, "plot_panels", held)
    logger = RunLogger("toy", "later", root=tmp_path, sinks=())
    _fit_demo(logger)
    run = logger.run_dir
    released_before_return = gate.is_set()
    gate.set()
    assert not released_before_return and not (run / "plots" / "metrics.png").exists()
    summary = json.loads((run / "summary.json").read_text())
    steps = [r.step for r in read_metrics(run / "metrics.jsonl") if "train/loss" in r.metrics]
    assert summary["status"] == "completed" and len(steps) == 12 and summary["last_step"] >= steps[-1]
    assert (run / "metrics.csv").read_text().count("\n") >= 13
    assert "![metrics]" not in (run / "report_draft.md").read_text()
    assert logger.wait(60)
    assert (run / "plots" / "metrics.png").read_bytes()[:8] == PNG
    assert "![metrics](plots/metrics.png)" in (run / "report_draft.md").read_text()

    def broken(*args, **kwargs):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(plots, "plot_panels", broken)  # a failure on the thread is recorded, never raised
    post_process(run, plots_later=True)
    assert logger.wait(60)
    assert json.loads((run / "summary.json").read_text())["plots_error"].endswith("metrics.png: no fonts")


EXITS_WITHOUT_WAIT = r"""
import sys, time
import lightning_track.derived.plots as plots
from lightning_track import RunLogger
sys.path.insert(0, sys.argv[2])
from test_plots import _fit_demo

drawn = plots.plot_panels
def slow(*args, **kwargs):
    time.sleep(1.0)  # well after the script's last line
    return drawn(*args, **kwargs)
plots.plot_panels = slow
_fit_demo(RunLogger("toy", "fit", root=sys.argv[1], sinks=()))
never_finalized = RunLogger("toy", "atexit", root=sys.argv[1], sinks=())  # finalized by the exit hook
for step in range(5):
    never_finalized.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
"""


@pytest.mark.slow
def test_the_interpreter_exit_waits_for_the_plot(tmp_path) -> None:
    import subprocess
    import sys
    from pathlib import Path

    subprocess.run([sys.executable, "-c", EXITS_WITHOUT_WAIT, str(tmp_path), str(Path(__file__).parent)],
                   check=True, capture_output=True, timeout=300)
    runs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert [p.name.split("_")[1] for p in runs] == ["atexit", "fit"]
    for run in runs:
        assert (run / "plots" / "metrics.png").read_bytes()[:8] == PNG
        assert "![metrics](plots/metrics.png)" in (run / "report_draft.md").read_text()
