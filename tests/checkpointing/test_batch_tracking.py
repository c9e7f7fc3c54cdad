"""BatchTracker: recorded ids equal what the dataloader served (single process, accumulation, DDP)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from lightning.pytorch.loggers.logger import DummyExperiment
from support.processes import script_env
from support.trainers import make_trainer

from lightning_track import BatchTracker, StepCheckpoint, TrackedDataset, read_metrics
from lightning_track.folder.fileio import iter_jsonl, read_json
from lightning_track.folder.tracking import CANONICAL_FIELDS
from lightning_track.training.toy import LineDataset, ToyRegression, TupleLineDataset, line_loader

HERE = Path(__file__).parent


def _records(path: Path) -> list[dict]:
    return [rec for _, rec in iter_jsonl(path)]


def test_ids_equal_what_each_step_trained_on(tmp_path, run_logger_factory):
    logger = run_logger_factory()
    module = ToyRegression(hidden=8, seed=None)
    callbacks = [BatchTracker(), StepCheckpoint(every_n_steps=4)]
    trainer = make_trainer(tmp_path, max_steps=10, logger=logger, callbacks=callbacks)
    trainer.fit(module, line_loader(TrackedDataset(LineDataset(n=24)), batch_size=5))
    layout = logger.layout
    records = _records(layout.batch_tracking_jsonl)
    assert [r["step"] for r in records] == list(range(1, 11))
    assert all(set(CANONICAL_FIELDS) <= set(r) for r in records)
    # the module saw the samples without the id (TrackedDataset's id is taken out of the batch)
    assert all(keys == ["x", "y"] for keys in module.batch_keys)
    assert [r["line_indices"] for r in records] == [lines for _, _, lines in module.seen]
    assert [r["batch_idx"] for r in records] == [b for _, b, _ in module.seen]
    assert [r["epoch"] for r in records] == [0] * 5 + [1] * 5  # 24 lines / 5 = 5 batches an epoch
    assert [r["loss"] for r in records] == pytest.approx(module.losses, rel=1e-6)
    assert all(r["learning_rate"] == 0.05 for r in records)
    # checkpoint-step-008 covers every line trained in steps 1..8
    mapping = read_json(layout.checkpoint_mapping_json)
    assert sorted(mapping) == ["checkpoint-step-004", "checkpoint-step-008"]
    upto8 = sorted({i for r in records[:8] for i in r["line_indices"]})
    assert mapping["checkpoint-step-008"] == {
        "step": 8, "path": "checkpoints/checkpoint-step-008.ckpt", "lines": upto8,
    }
    line_map = read_json(layout.line_checkpoint_mapping_json)
    first4 = {i for r in records[:4] for i in r["line_indices"]}
    for line in upto8:
        expected = (["checkpoint-step-004"] if line in first4 else []) + ["checkpoint-step-008"]
        assert line_map[str(line)] == expected


def test_gradient_accumulation_records_every_micro_batch(tmp_path, run_logger_factory):
    logger = run_logger_factory()
    module = ToyRegression(hidden=8, seed=None)
    trainer = make_trainer(tmp_path, max_steps=4, accumulate_grad_batches=3, logger=logger,
                           callbacks=[BatchTracker()])
    trainer.fit(module, line_loader(TrackedDataset(LineDataset(n=48)), batch_size=4))
    records = _records(logger.layout.batch_tracking_jsonl)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for n, record in enumerate(records):
        micro = module.seen[3 * n: 3 * n + 3]
        assert record["micro_batches"] == [{"batch_idx": b, "line_indices": lines} for _, b, lines in micro]
        assert record["line_indices"] == [i for _, _, lines in micro for i in lines]
        assert record["batch_idx"] == micro[-1][1]
        assert record["loss"] == pytest.approx(sum(module.losses[3 * n: 3 * n + 3]) / 3, rel=1e-5)


def test_ids_from_the_batch_itself_are_left_in_place(tmp_path):
    module = ToyRegression(hidden=8, seed=None)
    trainer = make_trainer(tmp_path, max_steps=3, logger=False, callbacks=[BatchTracker(id_key="idx")])
    trainer.fit(module, line_loader(LineDataset(n=16, with_ids=True)))
    records = _records(tmp_path / "batch_tracking.jsonl")  # default_root_dir without a RunLogger
    assert [r["line_indices"] for r in records] == [lines for _, _, lines in module.seen]
    assert module.batch_keys[0] == ["idx", "x", "y"]


def test_tuple_samples_get_the_id_appended_and_removed(tmp_path):
    module = ToyRegression(hidden=8, seed=None)
    trainer = make_trainer(tmp_path, max_steps=3, logger=False, callbacks=[BatchTracker()])
    trainer.fit(module, line_loader(TrackedDataset(TupleLineDataset(n=16))))
    records = _records(tmp_path / "batch_tracking.jsonl")
    assert [r["line_indices"] for r in records] == [lines for _, _, lines in module.seen]
    assert module.batch_keys[0] == ["len=2"]


def test_missing_ids_fail_at_the_first_step_with_a_clear_message(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=3, logger=False, callbacks=[BatchTracker(id_key="line_id")])
    with pytest.raises(ValueError, match=r"the batch has no 'line_id' key .*TrackedDataset"):
        trainer.fit(ToyRegression(hidden=8, seed=None), line_loader(LineDataset(n=16)))


def test_tracked_dataset_rejects_samples_it_cannot_tag():
    with pytest.raises(ValueError, match="already has a key 'idx'"):
        TrackedDataset(LineDataset(with_ids=True))[0]
    with pytest.raises(TypeError, match="sample 0 is a str"):
        TrackedDataset(["a", "b"])[0]


@pytest.mark.slow
def test_ddp_two_processes_gathers_all_ranks_ids(tmp_path):
    """A real 2-process DDP fit (gloo, CPU); each rank writes what it trained on, rank 0 the tracking."""
    root = tmp_path / "runs"
    result = subprocess.run([sys.executable, str(HERE / "ddp_script.py"), str(root)],
                            capture_output=True, text=True, timeout=240, env=script_env())
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("lines_ddp_")]
    truth = {rank: json.loads((root / f"seen_rank{rank}.json").read_text()) for rank in (0, 1)}
    seen = {rank: truth[rank]["lines"] for rank in (0, 1)}
    records = _records(run_dir / "batch_tracking.jsonl")
    assert [r["step"] for r in records] == list(range(1, 7))
    # logger.experiment: the add_* API on rank 0, Lightning's DummyExperiment (every call a no-op) above it
    assert truth[0]["experiment"] == {"dummy": False, "type": "RunExperiment", "returns": "None", "any_call": None}
    assert truth[1]["experiment"] == {"dummy": True, "type": DummyExperiment.__name__, "returns": "None",
                                      "any_call": "None"}
    logged = {key for r in read_metrics(run_dir / "metrics.jsonl") for key in r.metrics}
    assert "ddp/rank0" in logged and "ddp/rank1" not in logged
    for n, record in enumerate(records):
        assert record["world_size"] == 2
        assert record["line_indices"] == seen[0][n] + seen[1][n]  # rank order
        assert record["loss"] == pytest.approx((truth[0]["losses"][n] + truth[1]["losses"][n]) / 2, rel=1e-5)
    # every rank served different lines (DistributedSampler) and all of them are recorded
    assert not set(sum(seen[0], [])) & set(sum(seen[1], []))
    mapping = read_json(run_dir / "checkpoint_mapping.json")
    assert sorted(mapping) == ["checkpoint-step-003", "checkpoint-step-006"]
    assert mapping["checkpoint-step-006"]["lines"] == sorted({i for r in records for i in r["line_indices"]})
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "checkpoint-step-003.ckpt", "checkpoint-step-006.ckpt", "last.ckpt"]
