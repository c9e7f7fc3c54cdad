"""PNG curves in every run folder: written by post_process at finalize, linked from report_draft.md, never
fatal; skipped without matplotlib."""

from __future__ import annotations

import json

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
