"""Images, text and histograms: RunLogger.log_image/log_text/log_histogram and a LightningModule written for
TensorBoardLogger (self.logger.experiment.add_*), read back from media/ + media.jsonl, from TensorBoard with its
EventAccumulator and from the SwanLab offline files with SwanLab's reader."""

from __future__ import annotations

import io
import json
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.loggers.logger import DummyExperiment
from PIL import Image
from support.readers import WITH_SWANLAB, swanlab_records, swanlab_runs
from support.trainers import wait_for_run_files
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_track import RunLayout, RunLogger, read_metrics
from lightning_track.folder.media import read_media_index
from lightning_track.training.demo import DemoDataModule, DemoModule

IMAGE = torch.rand(3, 24, 40, generator=torch.Generator().manual_seed(0))
BATCH = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))


class TensorBoardHabits(DemoModule):
    """What a module written for TensorBoardLogger does with ``self.logger.experiment``."""

    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        loss = super().training_step(batch, batch_idx)
        if batch_idx == 2:
            exp = self.logger.experiment
            exp.add_scalar("custom/x", 3.5, self.global_step)
            exp.add_scalars("pair", {"a": 1.0, "b": 2.0}, self.global_step)
            exp.add_image("sample", IMAGE, self.global_step)
            exp.add_images("batch", BATCH, self.global_step)
            exp.add_text("note", "hello **world**", self.global_step)
            exp.add_histogram("weights", self.model[0].weight, self.global_step)
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            figure, axes = plt.subplots(figsize=(2, 1), dpi=50)
            axes.plot([0, 1], [1, 0])
            exp.add_figure("figure", figure, self.global_step)
        return loss


def fit(logger, module: L.LightningModule | None = None, steps: int = 5) -> None:  # noqa: ANN001
    trainer = L.Trainer(max_steps=steps, logger=logger, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", limit_val_batches=0, num_sanity_val_steps=0, log_every_n_steps=1)
    try:
        trainer.fit(module or TensorBoardHabits(max_steps=steps), datamodule=DemoDataModule(n_train=256, n_val=32))
    finally:
        wait_for_run_files(trainer)  # the viewers' files and the plot are finished after fit returns


def tensorboard(logdir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(logdir), size_guidance={"images": 0, "tensors": 0, "histograms": 0, "scalars": 0})
    acc.Reload()
    return acc


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def swanlab_media(run: RunLayout) -> dict[str, list]:
    """{key: [(step, type, file)]} of the SwanLab run's media records, with their files."""
    (swan_file,) = swanlab_runs(run.swanlab_dir)
    out: dict[str, list] = {}
    for record in swanlab_records(swan_file):
        if record.WhichOneof("record_type") == "media":
            media = record.media
            for item in media.value.items:
                # media/<kind>/: SwanLab's file (local mode adds the board's link in media/<number>/)
                (found,) = (f for f in swan_file.parent.glob(f"media/*/{item.filename}") if not f.parent.name.isdigit())
                out.setdefault(media.key, []).append((media.step, media.type, found))
    return out


@pytest.fixture(scope="module")
def habits_run(tmp_path_factory: pytest.TempPathFactory) -> RunLayout:
    root = tmp_path_factory.mktemp("runs")
    logger = RunLogger("media", "tb", root=root, system_interval=0, sinks=WITH_SWANLAB)
    fit(logger)
    return RunLayout(logger.run_dir)


def test_experiment_is_still_the_layout(habits_run: RunLayout, tmp_path: Path) -> None:
    logger = RunLogger("media", "layout", root=tmp_path)
    exp = logger.experiment
    assert isinstance(exp, RunLayout) and exp.run_dir == logger.run_dir
    assert exp.checkpoints_dir == logger.layout.checkpoints_dir
    assert exp.get_logdir() == str(logger.layout.tensorboard_dir)


def test_add_scalar_and_add_scalars_are_metrics_at_the_batch_step(habits_run: RunLayout) -> None:
    records = read_metrics(habits_run.metrics_jsonl)
    custom = [(r.step, r.metrics["custom/x"]) for r in records if "custom/x" in r.metrics]
    # logged in training_step of the third batch with self.global_step (2): that batch is step 3
    assert custom == [(3, 3.5)]
    pairs = [(r.step, r.metrics["pair/a"], r.metrics["pair/b"]) for r in records if "pair/a" in r.metrics]
    assert pairs == [(3, 1.0, 2.0)]


def test_media_files_and_index(habits_run: RunLayout) -> None:
    index = list(read_media_index(habits_run.media_jsonl))
    assert [(line["key"], line["kind"], line["step"]) for line in index] == [
        ("sample", "image", 3), ("batch", "image", 3), ("note", "text", 3), ("weights", "histogram", 3),
        ("figure", "image", 3)]
    for line in index:
        assert (habits_run.run_dir / line["file"]).is_file() and line["file"].startswith("media/")
    sample = pixels((habits_run.run_dir / index[0]["file"]).read_bytes())
    expected = (IMAGE.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    assert sample.shape == (24, 40, 3) and np.array_equal(sample, expected)
    assert (index[0]["width"], index[0]["height"]) == (40, 24)
    assert pixels((habits_run.run_dir / index[1]["file"]).read_bytes()).shape == (8, 32, 3)  # one row of 4
    assert (habits_run.run_dir / index[2]["file"]).read_text() == "hello **world**"
    histogram = json.loads((habits_run.run_dir / index[3]["file"]).read_text())
    assert histogram["num"] == 64 * 16 and sum(histogram["bucket"]) == 64 * 16
    assert pixels((habits_run.run_dir / index[4]["file"]).read_bytes()).shape == (50, 100, 4)  # the figure, RGBA


def test_tensorboard_reads_images_text_and_histograms(habits_run: RunLayout) -> None:
    acc = tensorboard(habits_run.tensorboard_dir)
    (sample,) = acc.Images("sample")
    assert sample.step == 3 and (sample.width, sample.height) == (40, 24)
    expected = (IMAGE.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    assert np.array_equal(pixels(sample.encoded_image_string), expected)
    (text,) = acc.Tensors("note/text_summary")
    assert text.step == 3 and text.tensor_proto.string_val == [b"hello **world**"]
    (histogram,) = acc.Histograms("weights")
    value = histogram.histogram_value
    assert histogram.step == 3 and value.num == 64 * 16 and sum(value.bucket) == 64 * 16
    assert value.min < 0 < value.max and len(value.bucket) == len(value.bucket_limit)
    assert acc.Images("figure")[0].step == 3


def test_swanlab_reads_images_and_text(habits_run: RunLayout) -> None:
    media = swanlab_media(habits_run)
    assert {key for key in media} == {"sample", "batch", "note", "figure"}  # SwanLab 0.10 has no histograms
    (step, _, file), = media["sample"]
    ours = pixels((habits_run.run_dir / "media/sample/step-3-0.png").read_bytes())
    assert step == 3 and np.array_equal(pixels(file.read_bytes()), ours)
    (step, _, file), = media["note"]
    assert step == 3 and file.read_text() == "hello **world**"


def test_same_module_under_tensorboard_logger_gives_the_same_pixels(habits_run: RunLayout, tmp_path: Path) -> None:
    """The habit this replaces: TensorBoardLogger's own SummaryWriter, same module, same calls."""
    tb_logger = TensorBoardLogger(tmp_path)
    fit(tb_logger)
    theirs = tensorboard(Path(tb_logger.log_dir))
    ours = tensorboard(habits_run.tensorboard_dir)
    for tag in ("sample", "batch"):
        mine, reference = ours.Images(tag)[0], theirs.Images(tag)[0]
        assert (mine.width, mine.height) == (reference.width, reference.height)
        assert np.array_equal(pixels(mine.encoded_image_string), pixels(reference.encoded_image_string)), tag
    assert theirs.Tensors("note/text_summary")[0].tensor_proto.string_val == [b"hello **world**"]
    assert ours.Histograms("weights")[0].histogram_value.num == theirs.Histograms("weights")[0].histogram_value.num


def test_log_methods_take_lists_captions_pil_arrays_and_tables(tmp_path: Path) -> None:
    logger = RunLogger("media", "direct", root=tmp_path, sinks=("tensorboard",), system_interval=0)
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8)
    pil = Image.fromarray(np.full((4, 6, 3), 200, dtype=np.uint8))
    logger.log_image("many", [gray, pil], step=7, caption=["gray", "pil"])
    logger.log_image("hwc", np.zeros((5, 5, 3), dtype=np.float32), step=8, dataformats="HWC")
    logger.log_text("table", columns=["name", "score"], rows=[["a", 1], ["b", 2]], step=9)
    logger.log_text("records", [{"x": 1, "y": 2}, {"x": 3}], step=9)
    logger.log_histogram("values", np.array([1.0, 2.0, np.nan, 3.0]), step=10)
    with pytest.raises(TypeError, match="columns= and rows="):
        logger.log_text("bad", columns=["a"])
    logger.finalize("success")
    assert logger.wait(60)  # the sink host finishes TensorBoard's file after finalize returns
    run = RunLayout(logger.run_dir)
    index = list(read_media_index(run.media_jsonl))
    assert [(i["key"], i["step"], i.get("caption")) for i in index] == [
        ("many", 7, "gray"), ("many", 7, "pil"), ("hwc", 8, None), ("table", 9, None), ("records", 9, None),
        ("values", 10, None)]
    assert index[0]["file"] != index[1]["file"]
    assert np.array_equal(pixels((run.run_dir / index[0]["file"]).read_bytes()), gray)
    assert (run.run_dir / index[3]["file"]).read_text() == "name,score\na,1\nb,2\n"
    assert (run.run_dir / index[4]["file"]).read_text() == "x,y\n1,2\n3,\n"
    assert json.loads((run.run_dir / index[5]["file"]).read_text())["num"] == 3  # NaN left out
    acc = tensorboard(run.tensorboard_dir)
    assert acc.Tags()["images"] == ["many/0", "many/1", "hwc"]
    table = acc.Tensors("table/text_summary")[0].tensor_proto.string_val[0].decode()
    assert table.splitlines()[0] == "| name | score |" and "| b | 2 |" in table


def test_ranks_above_zero_get_harmless_no_ops(tmp_path: Path) -> None:
    logger = RunLogger("media", "rank1", root=tmp_path)
    logger._folder.rank = 1  # what a torchrun rank 1 has before and after the folder is agreed
    exp = logger.experiment
    assert isinstance(exp, DummyExperiment) and isinstance(logger.layout, RunLayout)  # as from any Lightning logger
    assert exp.add_image("x", IMAGE, 1) is None
    exp.add_image("x", IMAGE, 1)
    exp.add_scalar("y", 1.0, 1)
    exp.add_text("z", "t", 1)
    exp.add_histogram("w", IMAGE, 1)
    logger.log_image("x", IMAGE)
    assert not any(tmp_path.rglob("media.jsonl")) and not any(tmp_path.rglob("*.png"))


def test_every_method_that_writes_is_a_no_op_above_rank_zero_and_writes_on_rank_zero(tmp_path: Path) -> None:
    def log_everything(logger: RunLogger) -> None:
        assert logger.log_metrics({"loss": 0.5}, step=3) is None
        logger.log_hyperparams({"lr": 0.1})
        logger.log_text("note", "hello", step=3)
        logger.log_histogram("w", np.arange(4.0), step=3)
        logger.update_summary(notes="seen")
        logger.before_checkpoint()
        logger.finalize("success")

    above = RunLogger("media", "rank1", root=tmp_path / "rank1", sinks=(), system_interval=0, console=False)
    above._folder.rank = 1
    log_everything(above)
    assert not (tmp_path / "rank1").exists() or not any((tmp_path / "rank1").iterdir())
    zero = RunLogger("media", "rank0", root=tmp_path / "rank0", sinks=(), system_interval=0, console=False)
    log_everything(zero)
    run = RunLayout(zero.run_dir)
    assert [(r.step, r.metrics["loss"]) for r in read_metrics(run.metrics_jsonl)] == [(3, 0.5)]
    assert [(e["key"], e["step"]) for e in read_media_index(run.media_jsonl)] == [("note", 3), ("w", 3)]
    summary = json.loads(run.summary_json.read_text())
    assert summary["status"] == "completed" and summary["notes"] == "seen"


def test_a_pickled_logger_writes_the_same_run_as_a_spawned_worker_would(tmp_path: Path) -> None:
    import pickle

    parent = RunLogger("media", "spawn", root=tmp_path, sinks=(), system_interval=0, console=False)
    worker = pickle.loads(pickle.dumps(parent))  # ddp_spawn: the rank is learnt from Lightning in the worker
    worker.log_metrics({"loss": 0.25}, step=1)
    worker.log_text("note", "from the worker", step=1)
    worker.finalize("success")
    assert worker.run_dir == parent.run_dir and worker.experiment.run_dir == parent.run_dir
    run = RunLayout(worker.run_dir)
    assert [(r.step, r.metrics["loss"]) for r in read_metrics(run.metrics_jsonl)] == [(1, 0.25)]
    assert [e["key"] for e in read_media_index(run.media_jsonl)] == ["note"]


def test_long_key_parts_are_shortened_and_the_key_kept_whole(tmp_path: Path) -> None:
    logger = RunLogger("media", "long", root=tmp_path, system_interval=0)
    keys = ["s/" + "a" * 300, "s/" + "a" * 299 + "b", "img/" + "é" * 200]
    logger.log_text(keys[0], "first", step=1)
    logger.log_text(keys[1], "second", step=1)
    logger.log_image(keys[2], np.zeros((4, 4), dtype=np.uint8), step=2)
    logger.finalize("success")
    run = RunLayout(logger.run_dir)
    index = list(read_media_index(run.media_jsonl))
    assert [i["key"] for i in index] == keys
    files = [run.run_dir / i["file"] for i in index]
    assert [f.read_text() for f in files[:2]] == ["first", "second"] and files[2].stat().st_size > 0
    assert len({f.parent for f in files}) == 3
    assert all(len(part.encode()) <= 255 for f in files for part in f.relative_to(run.run_dir).parts)
    assert json.loads(run.summary_json.read_text())["status"] == "completed"
