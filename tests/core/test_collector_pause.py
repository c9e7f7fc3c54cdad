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
