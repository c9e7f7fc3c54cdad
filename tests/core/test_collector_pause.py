"""The collector pause (folder/gcpause.py): finalize, the PNG's thread and the code capture pause the cyclic
garbage collector; the user's process gets it back as it was, and the run folder is whole."""

from __future__ import annotations

import gc
import threading
from pathlib import Path

import lightning as L
import pytest

from lightning_track import RunLogger
from lightning_track.folder.gcpause import collector_paused
from lightning_track.training.demo import DemoDataModule, DemoModule


def fit(root: Path) -> RunLogger:
    logger = RunLogger("gc", "pause", root=root, sinks=("tensorboard",), console=False, system_interval=0)
    trainer = L.Trainer(max_steps=12, logger=logger, log_every_n_steps=1, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(DemoModule(max_steps=12), datamodule=DemoDataModule(n_train=256, n_val=16))
    assert logger.wait(60)
    return logger


@pytest.mark.parametrize("enabled", [True, False])
def test_a_fit_leaves_the_collector_as_the_user_set_it_and_the_folder_whole(tmp_path, enabled) -> None:
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        logger = fit(tmp_path)
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
    run = logger.run_dir
    assert (run / "plots" / "metrics.png").stat().st_size > 0
    assert "metrics.png" in (run / "report_draft.md").read_text()
    assert (run / "environment.json").is_file()


def test_overlapping_pauses_on_two_threads_end_with_the_last() -> None:
    assert gc.isenabled()
    inside, release = threading.Event(), threading.Event()
    seen = []

    def other() -> None:
        with collector_paused():
            inside.set()
            release.wait(10)
            seen.append(gc.isenabled())

    thread = threading.Thread(target=other)
    with collector_paused():
        thread.start()
        assert inside.wait(10)
    assert not gc.isenabled()  # the other thread's pause still holds
    release.set()
    thread.join(10)
    assert seen == [False] and gc.isenabled()


def test_records_waiting_for_the_writer_are_nothing_the_collector_tracks_and_reach_the_file_in_order(tmp_path) -> None:
    """A young collection while records wait for the next flush moves nothing of theirs to the oldest
    generation (one record object each, before): what waits is plain numbers and untracked dicts."""
    from lightning_track.folder.records import MetricRecord, read_metrics

    def records_alive() -> set[int]:  # other tests in this process may hold records of their own
        return {id(o) for o in gc.get_objects() if type(o) is MetricRecord}

    gc.collect()
    before = records_alive()
    logger = RunLogger("gc", "queue", root=tmp_path, sinks=(), console=False, system_interval=0, flush_interval=3600)
    for step in range(500):
        logger.log_metrics({"train/loss": 1.0 / (step + 1), "epoch": 0.0}, step=step)
    queued = list(logger._run.writer._items)
    gc.collect()
    assert len(queued) == 2000 and not any(gc.is_tracked(item) for item in queued)
    assert not records_alive() - before
    logger.flush()
    assert [(r.step, r.metrics) for r in read_metrics(logger.run_dir / "metrics.jsonl")] == [
        (step, {"train/loss": 1.0 / (step + 1), "epoch": 0.0}) for step in range(500)]
    logger.finalize("success")
    assert logger.wait(60)


def test_the_plot_lets_go_of_the_records_before_its_pause_ends(tmp_path) -> None:
    """The PNG's thread holds the run's records; they are dropped inside the pause, so the collection that ends
    it finds them gone instead of moving 2,000 record objects to the oldest generation."""
    from lightning_track.derived.summary import _draw_and_link
    from lightning_track.folder.layout import RunLayout
    from lightning_track.folder.records import MetricRecord

    layout = RunLayout(tmp_path / "ds_m_20260101_000000")
    layout.run_dir.mkdir()
    records = [MetricRecord(step, 1.0 + step, {"train/loss": 1.0 / (step + 1)}) for step in range(200)]
    _draw_and_link(layout, records)
    assert records == [] and (layout.run_dir / "plots" / "metrics.png").stat().st_size > 0
