"""`lt compare`: config differences only, best/final with the better run marked, text chart, PNG; and the
downsampling every chart uses (spikes and NaNs survive)."""

from __future__ import annotations

import json

import numpy as np

from lightning_track.cli.lt import main
from lightning_track.derived.curves import downsample, group_metrics
from lightning_track.query.compare import text_chart


def compare(capsys, *argv: str) -> tuple[int, list[str], list[str]]:
    code = main(["compare", *argv])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def test_config_diff_metrics_winner_and_chart(made_runs, capsys, tmp_path) -> None:
    lora, full = made_runs["lora"], made_runs["full"]
    png = tmp_path / "cmp.png"
    code, out, err = compare(capsys, str(lora), str(full), "--plot", str(png))
    assert code == 0 and err == []
    assert out[1].split()[:2] == ["a", lora.name] and out[2].split()[:2] == ["b", full.name]
    at = out.index("config (keys that differ)")
    diff = {line.split()[0]: line.split()[1:] for line in out[at + 2:out.index("", at)]}
    assert diff["model.lr"] == ["0.01", "0.001"] and "seed" not in diff and "hidden" not in diff
    best = json.loads((lora / "summary.json").read_text())["best"]["val/loss"]
    other = json.loads((full / "summary.json").read_text())["best"]["val/loss"]
    row = next(line for line in out if line.strip().startswith("val/loss best (min)"))
    a_wins = best["value"] < other["value"]
    assert row.count("*") == 1 and (row.index("*") < row.rindex("@")) is a_wins
    assert "val/loss" in out and any("┤" in line for line in out)  # the chart of the main metric
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out[-1] == f"plot: {png}"


def test_metrics_asked_for_and_missing(made_runs, capsys) -> None:
    runs = [str(made_runs["lora"]), str(made_runs["nan"])]
    code, out, err = compare(capsys, *runs, "-m", "train/loss", "-m", "nope")
    assert code == 0 and err == ["lt compare: no run has metric 'nope'"]
    assert [line.split()[0] for line in out if line.startswith("  train/loss")] == ["train/loss", "train/loss"]
    assert "train/loss" in out
    code, out, err = compare(capsys, *runs, "-m", "nope")
    assert code == 1 and err == ["lt compare: no run has metric 'nope'"]
    code, out, err = compare(capsys, *runs, "zzz")
    assert code == 1 and out == [] and "zzz: no such run folder" in err[0]


def test_text_chart_marks_runs_overlaps_and_nonfinite_values() -> None:
    steps = np.arange(1, 101)
    up = steps.astype(float)
    down = up[::-1].copy()
    down[50] = np.nan
    same = up.copy()
    same[:50] = 0.0  # on top of "a" from step 51 on
    lines = text_chart([("a", steps, up), ("b", steps, down), ("c", steps, same)], width=40, height=8, title="m")
    assert lines[0] == "m" and lines[1].lstrip().startswith("100 ┤")
    assert lines[8].lstrip().startswith("0 ┤")
    body = "\n".join(lines[1:9])
    assert "a" in body and "b" in body and "#" in body and "!" in lines[1]
    assert lines[-1].split() == ["1", "step", "100"]
    assert text_chart([("a", steps[:0], up[:0])]) == []


def test_downsample_keeps_spikes_and_nans() -> None:
    steps = np.arange(100_000)
    values = np.sin(steps / 1000.0)
    values[12_345] = 50.0  # a one-step spike
    values[70_000] = np.nan
    values[80_000] = np.inf
    curve = downsample(steps, values, points=400)
    assert len(curve.x) == 400 and curve.records == 100_000
    assert np.nanmax(curve.hi) == 50.0 and np.nanmax(curve.y) < 50.0
    assert curve.bad == [(70_000, "nan"), (80_000, "inf")]
    assert np.isfinite(curve.y).all()  # a bucket with a NaN still has its other values' mean
    small = downsample(steps[:10], values[:10], points=400)
    assert small.lo is None and small.x.tolist() == list(range(10))
    many_nans = downsample(steps, np.full(100_000, np.nan), points=100, bad_limit=50)
    assert len(many_nans.bad) == 50 and np.isnan(many_nans.y).all()


def test_group_metrics() -> None:
    assert group_metrics(["train/loss", "val/loss", "val/acc", "epoch", "lr-Adam", "health/loss"]) == {
        "loss": ["train/loss", "val/loss"], "acc": ["val/acc"], "lr-Adam": ["lr-Adam"], "health/loss": ["health/loss"]}


def test_a_learning_rate_logged_as_lr_and_one_held_as_model_lr_are_one_setting(made_runs, capsys) -> None:
    """The module logs ``lr``; a run whose config held ``model.lr`` recorded it there only, one without a
    config at the top: compared, the same value is not a difference and a different one is one row."""
    import lightning as L

    from lightning_track import RunLogger
    from lightning_track.training.demo import DemoDataModule, DemoModule

    logger = RunLogger("arc", "noconfig", root=made_runs["lora"].parent.parent / "flat", sinks=())
    L.Trainer(max_steps=2, logger=logger, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
              limit_val_batches=0).fit(DemoModule(max_steps=2, lr=0.01), datamodule=DemoDataModule(n_train=64, n_val=8))
    flat = logger.run_dir
    assert "lr: 0.01" in (flat / "config.yaml").read_text() and "model" not in (flat / "config.yaml").read_text()
    code, out, err = compare(capsys, str(made_runs["lora"]), str(flat))
    assert code == 0 and err == []
    at = out.index("config (keys that differ)")
    keys = [line.split()[0] for line in out[at + 2:out.index("", at)]]
    assert "lr" not in keys and "model.lr" not in keys  # 0.01 both: no '-' on either side
    code, out, err = compare(capsys, str(made_runs["full"]), str(flat))
    at = out.index("config (keys that differ)")
    rows = {line.split()[0]: line.split()[1:] for line in out[at + 2:out.index("", at)]}
    assert rows["model.lr"] == ["0.001", "0.01", "(as", "lr)"] and "lr" not in rows
