"""checkpoints.json: every checkpoint a run wrote (step, epoch, attempt, metrics, size, SHA-256 of the
bytes on disk), and the checkpoint each resumed attempt continued from, shown by lt show (in-process fits)."""

from __future__ import annotations

import hashlib
import json
from html.parser import HTMLParser
from pathlib import Path

import lightning as L
import pytest

from lightning_track import RunLayout, RunLogger, StepCheckpoint
from lightning_track.query.runs import read_run
from lightning_track.query.show import render_show, show_record
from lightning_track.training.demo import DemoDataModule, DemoModule
from lightning_track.vocabulary import format_bytes


class RaiseAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:  # noqa: ANN001
        if trainer.global_step == self.step:
            raise RuntimeError("boom")


def fit(logger: RunLogger, max_steps: int, callbacks=(), ckpt_path=None) -> None:
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(max_steps=max_steps, logger=logger, callbacks=list(callbacks), log_every_n_steps=1,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                        num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(DemoModule(max_steps=max_steps), datamodule=DemoDataModule(n_train=512, n_val=64),
                ckpt_path=ckpt_path)


def index(run: RunLayout) -> list[dict]:
    return json.loads(run.checkpoints_index.read_text())["checkpoints"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def logger(root: Path, **kw) -> RunLogger:
    return RunLogger("d", "m", root=root, sinks=(), console=False, system_interval=0, **kw)


@pytest.mark.parametrize("index_lost", [False, True], ids=["indexed", "index-lost-with-the-killed-attempt"])
def test_each_checkpoint_is_indexed_and_a_resume_names_the_one_it_continued(tmp_path: Path, index_lost: bool) -> None:
    root = tmp_path / "runs"
    first = logger(root)
    with pytest.raises(RuntimeError, match="boom"):
        fit(first, 20, [StepCheckpoint(every_n_steps=5, start_step=5), RaiseAt(12)])
    run = first.layout
    written = index(run)
    assert [(e["file"], e["step"], e["epoch"], e["attempt"]) for e in written] == [
        ("checkpoints/checkpoint-step-005.ckpt", 5, 0, 1), ("checkpoints/checkpoint-step-010.ckpt", 10, 0, 1)]
    for entry in written:
        path = run.run_dir / entry["file"]
        assert entry["sha256"] == sha256(path) and entry["size"] == path.stat().st_size
        assert set(entry["metrics"]) >= {"train/loss"}
    ten = written[1]["sha256"]
    if index_lost:  # as after a SIGKILL before the index was written: the resume hashes the file itself
        run.checkpoints_index.unlink()

    fit(logger(root, resume=True), 20, [StepCheckpoint(every_n_steps=5, start_step=5)], ckpt_path="last")

    attempts = json.loads(run.summary_json.read_text())["attempts"]
    assert attempts[1]["resumed_from"] == {"file": "checkpoints/checkpoint-step-010.ckpt", "step": 10, "sha256": ten}
    assert [(e["step"], e["attempt"]) for e in index(run)] == (
        [(10, None), (15, 2), (20, 2)] if index_lost else [(5, 1), (10, 1), (15, 2), (20, 2)])
    shown = render_show(read_run(run.run_dir))
    assert f"attempt 2: completed from step 10 (resumed from checkpoints/checkpoint-step-010.ckpt  sha256 {ten[:12]})" \
        in shown
    assert "checkpoints/checkpoint-step-010.ckpt  step 10" in shown and f"sha256 {ten[:12]}" in shown
    record = show_record(read_run(run.run_dir))
    fifteen = next(c for c in record["checkpoints"] if c["step"] == 15)
    assert fifteen["sha256"] == sha256(run.run_dir / fifteen["path"]) and fifteen["attempt"] == 2


def test_the_final_model_names_its_weights_hash_and_the_checkpoint_it_matches(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from lightning_track import FinalModelExport

    run_logger = logger(tmp_path / "runs")
    fit(run_logger, 10, [StepCheckpoint(every_n_steps=5, start_step=5), FinalModelExport()])

    run = run_logger.layout
    entries = index(run)
    (model,) = [e for e in entries if e.get("kind") == "model"]
    ten = next(e for e in entries if e["file"] == "checkpoints/checkpoint-step-010.ckpt")
    weights = run.final_model_dir / "model.safetensors"
    assert model["file"] == "final_model" and model["step"] == 10 and model["attempt"] == 1
    assert model["files"] == {"model.safetensors": sha256(weights)}
    assert model["from_checkpoint"] == {"file": "checkpoints/checkpoint-step-010.ckpt", "sha256": ten["sha256"]}
    # the checkpoint it names holds the same weights
    import torch

    state = torch.load(run.run_dir / ten["file"], map_location="cpu", weights_only=False)["state_dict"]
    exported = load_file(str(weights))
    assert exported.keys() == state.keys() and all(torch.equal(exported[k], state[k]) for k in exported)
    shown = render_show(read_run(run.run_dir))
    assert f"final_model/  step 10  model  = checkpoints/checkpoint-step-010.ckpt  sha256 {ten['sha256'][:12]}" in shown


class Counted:
    """A module function wrapped to count its calls (what the lineage thread reads)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> None:
        self.calls: list[tuple] = []
        real = getattr(module, name)

        def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            self.calls.append(args)
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)


@pytest.mark.parametrize("async_save", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["sync", "async"])
def test_step_checkpoints_are_hashed_as_written_and_the_index_is_read_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, async_save: bool) -> None:
    from lightning_track.run import lineage

    reads = Counted(monkeypatch, lineage, "file_sha256")
    index_reads = Counted(monkeypatch, lineage, "read_index")
    run_logger = logger(tmp_path / "runs")
    fit(run_logger, 12, [StepCheckpoint(every_n_steps=2, async_save=async_save)])

    entries = index(run_logger.layout)
    assert [e["step"] for e in entries] == [2, 4, 6, 8, 10, 12]
    for entry in entries:
        path = run_logger.layout.run_dir / entry["file"]
        assert entry["sha256"] == sha256(path) and entry["size"] == path.stat().st_size
        assert entry["hashed"] == "while writing"
    assert reads.calls == []  # no checkpoint file was read to hash it
    assert len(index_reads.calls) == 1  # checkpoints.json read once (an earlier attempt's entries), then kept


@pytest.mark.slow
def test_other_checkpoints_are_read_once_and_record_what_they_monitor(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lightning_track.folder.checkpoint_index import best_checkpoint, checkpoint_entries, last_checkpoint
    from lightning_track.run import lineage

    reads = Counted(monkeypatch, lineage, "file_sha256")
    run_logger = logger(tmp_path / "runs")
    checkpoint = ModelCheckpoint(every_n_train_steps=3, save_top_k=2, monitor="train/loss", mode="min",
                                 filename="{step}")
    fit(run_logger, 12, [checkpoint])

    run = run_logger.layout
    entries = index(run)
    assert [e["step"] for e in entries] == [3, 6, 9, 12]
    assert all(e["hashed"] == "read" and e["monitor"] == {"metric": "train/loss", "mode": "min"} for e in entries)
    assert sorted(Path(c[0]).name for c in reads.calls) == sorted(Path(e["file"]).name for e in entries)
    on_disk = checkpoint_entries(entries, lambda f: (run.run_dir / f).exists())
    assert len(on_disk) == 2  # save_top_k removed the others
    best = best_checkpoint(on_disk)
    assert best is not None and run.run_dir / best["file"] == Path(checkpoint.best_model_path).resolve()
    assert best["sha256"] == sha256(run.run_dir / best["file"])
    assert last_checkpoint(on_disk)["step"] == max(e["step"] for e in on_disk)


class _Text(HTMLParser):
    """The text of each lineage block of a report: its table rows (cells joined by |) and its list items."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks: list[list[str]] = []
        self._in, self._cells, self._text = False, [], ""

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "details" and ("class", "lineage") in attrs:
            self._in = True
            self.blocks.append([])
        elif self._in and tag in ("td", "li", "summary"):
            self._text = ""

    def handle_data(self, data: str) -> None:
        self._text += data

    def handle_endtag(self, tag: str) -> None:
        if not self._in:
            return
        if tag == "td":
            self._cells.append(self._text)
        elif tag == "tr" and self._cells:
            self.blocks[-1].append("|".join(self._cells))
            self._cells = []
        elif tag in ("li", "summary"):
            self.blocks[-1].append(self._text)
        elif tag == "details":
            self._in = False


@pytest.mark.slow
def test_lt_show_and_the_report_trace_checkpoints_resumes_the_model_and_an_evaluation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lightning_track import FinalModelExport
    from lightning_track.launch.checkpoint_refs import evaluates_env, resolve_checkpoint
    from lightning_track.query.report_html import build_report

    def callbacks() -> list:
        return [StepCheckpoint(every_n_steps=4, start_step=4), FinalModelExport(),
                ModelCheckpoint(monitor="train/loss", every_n_train_steps=4, save_top_k=1, filename="{step}")]

    root = tmp_path / "runs"
    first = logger(root)
    with pytest.raises(RuntimeError, match="boom"):
        fit(first, 12, [*callbacks(), RaiseAt(10)])
    fit(logger(root, resume=True), 12, callbacks(), ckpt_path="last")
    run = first.layout
    best = resolve_checkpoint("eval", "train", "best_ckpt", run.run_dir)
    monkeypatch.setenv(*next(iter(evaluates_env([best]).items())))
    evaluator = RunLogger("d", "eval", root=root, sinks=(), console=False, system_interval=0)
    evaluator.log_metrics({"eval/loss": 0.5}, step=0)
    evaluator.finalize("success")

    entries = {e["file"]: e for e in index(run) if e.get("kind") != "model"}
    (model,) = [e for e in index(run) if e.get("kind") == "model"]
    eight, source = entries["checkpoints/checkpoint-step-008.ckpt"], model["from_checkpoint"]
    assert source["sha256"] == entries[source["file"]]["sha256"] and entries[source["file"]]["step"] == 12
    assert best["sha256"] == sha256(run.run_dir / best["file"]) == entries[best["file"]]["sha256"]
    shown = render_show(read_run(run.run_dir)).splitlines()
    assert f"  attempt 2: completed from step 8 (resumed from checkpoints/checkpoint-step-008.ckpt  sha256 " \
           f"{eight['sha256'][:12]})" in shown
    assert [line for line in shown if "best train/loss" in line] == [
        f"  {best['file']}  step {best['step']}  {format_bytes((run.run_dir / best['file']).stat().st_size)}"
        f"  sha256 {best['sha256'][:12]}  attempt {entries[best['file']]['attempt']}  best train/loss"]
    assert f"  final_model/  step 12  model  = {source['file']}  sha256 {source['sha256'][:12]}" in shown
    evaluated = render_show(read_run(evaluator.layout.run_dir)).splitlines()
    line = f"{{train.best_ckpt}}: {run.name}/{best['file']}  step {best['step']}  sha256 {best['sha256'][:12]}"
    assert evaluated[evaluated.index("evaluated") + 1] == f"  {line}  (matches its run's index)"

    parser = _Text()
    parser.feed(build_report([read_run(run.run_dir), read_run(evaluator.layout.run_dir)]))
    trained, evaluation = parser.blocks
    assert trained[0] == f"a {run.name}" and evaluation == [f"b {evaluator.layout.name}", f"evaluated {line}  "
                                                            "(matches its run's index)"]
    rows = {row.split("|")[0]: row.split("|")[1:] for row in trained[1:] if "|" in row}
    assert rows["checkpoints/checkpoint-step-008.ckpt"] == ["8", "1", eight["sha256"][:12], "while writing",
                                                             "attempt 2 resumed from it"]
    assert rows[source["file"]][:4] == ["12", "2", source["sha256"][:12], "while writing"]
    assert "final_model/ weights match it" in rows[source["file"]][-1]
    assert "best train/loss" in rows[best["file"]][-1]
    assert f"final_model/ (step 12): weights of {source['file']} (sha256 {source['sha256'][:12]})" in trained


def test_the_hashing_writer_gives_the_hash_of_the_file_torch_save_wrote(tmp_path: Path) -> None:
    import torch

    from lightning_track.folder.checkpoint_index import HashingWriter
    from lightning_track.folder.fileio import atomic_open

    state = {"big": torch.randn(1 << 20), "small": torch.arange(10)}  # a 4 MiB piece is hashed beside its write
    path = tmp_path / "a.ckpt"
    with atomic_open(path, "wb") as handle:
        writer = HashingWriter(handle)
        torch.save(state, writer)
    assert writer.hexdigest() == sha256(path) and writer.size == path.stat().st_size
    loaded = torch.load(path, weights_only=True)
    assert torch.equal(loaded["big"], state["big"]) and torch.equal(loaded["small"], state["small"])
