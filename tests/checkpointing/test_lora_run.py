"""A LoRA user's run reads right: a tiny Llama (built from a config, no download) wrapped with peft
LoRA r=4 on q_proj/v_proj, SIGTERMed after a few steps, resumed to the end.

One run for the module: its model card (read with huggingface_hub's parser, its loading code run),
why it stopped (summary.json, lt show/ls/--prompt, the console), what its durations are called.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from support.trainers import make_trainer
from torch.utils.data import DataLoader

from lightning_track import BatchTracker, FinalModelExport, HealthGuard, PreemptionHandler, RunLogger, StepCheckpoint
from lightning_track.callbacks.batch_tracking import TrackedDataset

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

pytestmark = pytest.mark.slow  # two fits of a transformer (seconds)

STOP_AT, MAX_STEPS, LR = 4, 8, 0.01


class LoraLM(L.LightningModule):
    def __init__(self, model: Any, lr: float) -> None:
        super().__init__()
        self.model = model
        self.save_hyperparameters({"lr": lr})

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss
        self.log("train/loss", loss)
        if self.global_step == STOP_AT + 1 and isinstance(self.logger, RunLogger):
            self.logger.log_text("sample", "a generated line", step=self.global_step + 1)  # media/ + media.jsonl
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.AdamW([p for p in self.parameters() if p.requires_grad], lr=self.hparams.lr)


class KillSelfAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def tiny_llama(folder: Path) -> Any:
    """A Llama from a config, saved and loaded back, so the adapter names its base like a Hub model."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=32)
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    base = transformers.LlamaForCausalLM.from_pretrained(folder)
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    return peft.get_peft_model(base, lora)


def loader() -> DataLoader:
    ids = torch.randint(0, 100, (64, 12), generator=torch.Generator().manual_seed(1))
    return DataLoader(TrackedDataset([{"input_ids": row} for row in ids]), batch_size=4)


@pytest.fixture(scope="module", autouse=True)
def own_query_cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The run queries below cache configs: in this module's folder, written out before the next module."""
    from lightning_track.query import config_cache

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LIGHTNING_TRACK_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield
        config_cache.flush()


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory, own_query_cache: None) -> dict[str, Any]:
    from lightning_track.query.listing import cell
    from lightning_track.query.prompt import render_prompt
    from lightning_track.query.runs import read_run
    from lightning_track.query.show import render_show

    root = tmp_path_factory.mktemp("lora")
    runs = root / "runs"
    module = LoraLM(tiny_llama(root / "base"), LR)
    logger = RunLogger("tiny-lines", "lora", root=runs, system_interval=0.5)
    trainer = make_trainer(root, max_steps=MAX_STEPS, logger=logger,
                           callbacks=[StepCheckpoint(every_n_steps=100), BatchTracker(), FinalModelExport(),
                                      HealthGuard(warmup_steps=2), PreemptionHandler(), KillSelfAt(STOP_AT)])
    console, records = io.StringIO(), Records()
    logging.getLogger("lightning.pytorch").addHandler(records)
    try:
        with pytest.raises(SystemExit) as stopped, contextlib.redirect_stderr(console):
            trainer.fit(module, loader())
    finally:
        logging.getLogger("lightning.pytorch").removeHandler(records)
    run = logger.layout
    first = read_run(run.run_dir)
    stopped_view = {"code": stopped.value.code, "summary": json.loads(run.summary_json.read_text()),
                    "show": render_show(first), "prompt": render_prompt(first), "ls_status": cell(first, "status"),
                    "console": console.getvalue() + "\n".join(records.lines)}
    time.sleep(1.0)  # a pause between the attempts: the wall span is longer than the training time
    logger = RunLogger("tiny-lines", "lora", root=runs, resume=True, system_interval=0.5)
    trainer = make_trainer(root, max_steps=MAX_STEPS, logger=logger,
                           callbacks=[StepCheckpoint(every_n_steps=100), BatchTracker(), FinalModelExport(),
                                      HealthGuard(warmup_steps=2), PreemptionHandler()])
    trainer.fit(module, loader(), ckpt_path="last")
    module.model.eval()
    ids = torch.arange(12).unsqueeze(0) % 100
    with torch.no_grad():
        logits = module.model(input_ids=ids).logits
    return {"run": run, "stopped": stopped_view, "ids": ids, "logits": logits, "module": module}


def test_interrupted_run_says_why_at_the_top_in_its_attempt_and_in_every_view(lora_run) -> None:
    stopped, run = lora_run["stopped"], lora_run["run"]
    assert stopped["code"] == 143
    data = stopped["summary"]
    ckpt = f"checkpoints/checkpoint-step-{STOP_AT:03d}.ckpt"
    reason = f"SIGTERM at step {STOP_AT}, checkpoint {ckpt} saved: resume with trainer.fit(ckpt_path='last')"
    assert data["status"] == "interrupted" and data["reason"] == reason and "\n" not in reason
    assert data["attempts"][-1]["status"] == "interrupted" and data["attempts"][-1]["reason"] == reason
    assert f"status: interrupted - {reason}" in stopped["show"].splitlines()
    assert f"Status: interrupted ({reason})" in stopped["prompt"].splitlines()
    assert stopped["ls_status"] == f"interrupted (SIGTERM@{STOP_AT})"
    # the console: our line, with the signal and the checkpoint, not Lightning's blank one
    assert "Received SIGTERM" in stopped["console"]  # Lightning's log was heard
    assert "SIGTERMException was raised" not in stopped["console"]
    assert f"PreemptionHandler: {reason}; exit 143" in stopped["console"].splitlines()

    # after the resume: the run is completed, the first attempt keeps why it stopped
    from lightning_track.query.runs import read_run
    from lightning_track.query.show import render_show

    final = json.loads(run.summary_json.read_text())
    assert final["status"] == "completed" and "reason" not in final
    assert [a["status"] for a in final["attempts"]] == ["interrupted", "completed"]
    assert final["attempts"][0]["reason"] == reason
    assert f"  attempt 1: interrupted from step 0 - {reason}" in render_show(read_run(run.run_dir)).splitlines()


def test_training_time_and_wall_span_each_have_one_name_everywhere(lora_run) -> None:
    from lightning_track import load_runs
    from lightning_track.query.listing import default_columns, header
    from lightning_track.query.runs import read_run
    from lightning_track.query.show import render_show

    run = lora_run["run"]
    data = json.loads(run.summary_json.read_text())
    attempts = data["attempts"]
    assert "duration_s" not in data and all("duration_s" not in a for a in attempts)
    assert data["training_time_s"] == pytest.approx(sum(a["training_time_s"] for a in attempts), abs=0.01)
    assert data["wall_span_s"] >= data["training_time_s"] + 1.0  # the pause between the attempts
    row = load_runs(run.root).iloc[0]
    assert "duration_s" not in row.index
    assert row["training_time_s"] == data["training_time_s"] and row["wall_span_s"] == data["wall_span_s"]
    info = read_run(run.run_dir)
    assert "wall span" in [header(c) for c in default_columns([info], None)]
    shown = render_show(info)
    assert "wall span" in shown and "training time" in shown and "duration" not in shown
    report = (run.run_dir / "report_draft.md").read_text()
    assert f"training time: {data['training_time_s']} s" in report and f"{data['wall_span_s']} s" in report


def card_code(text: str) -> str:
    (block,) = re.findall(r"## Loading\n\n```python\n(.*?)```", text, re.S)
    return block


def test_adapter_card_keeps_what_peft_wrote_and_adds_the_run(lora_run, monkeypatch) -> None:
    from huggingface_hub import ModelCard

    run = lora_run["run"]
    folder = run.final_model_dir
    adapter = json.loads((folder / "adapter_config.json").read_text())
    base = adapter["base_model_name_or_path"]
    assert base and Path(base).is_dir()
    card = ModelCard.load(folder / "README.md")
    data = card.data
    # what peft set, kept
    assert data.base_model == base and data.library_name == "peft" and data.pipeline_tag == "text-generation"
    assert f"base_model:adapter:{base}" in data.tags and {"lora", "transformers"} <= set(data.tags)
    # ours, added
    assert {"lightning", "lightning_track"} <= set(data.tags)
    text = card.text
    for line in (f"- run: {run.name} (lightning_track run folder)", "- dataset: tiny-lines", f"- base model: {base}",
                 f"- learning_rate: {LR:g}", f"- steps: {MAX_STEPS} (max_steps {MAX_STEPS})", "- r: 4",
                 "- lora_alpha: 8", "- target_modules: q_proj, v_proj", "- task_type: CAUSAL_LM",
                 f"- peft: {peft.__version__}", f"- transformers: {transformers.__version__}",
                 f"- torch: {torch.__version__}", f"- lightning: {L.__version__}"):
        assert line in text.splitlines(), line
    assert "train/loss" in text
    assert "### Framework versions" in text  # peft's own text, kept after ours
    # the loading code is exact: run it from the run folder, it gives the trained model's logits
    code = card_code((folder / "README.md").read_text())
    assert "AutoPeftModelForCausalLM.from_pretrained(path)" in code and "PeftModel.from_pretrained(base, path)" in code
    monkeypatch.chdir(run.run_dir)
    scope: dict[str, Any] = {}
    exec(code, scope)  # noqa: S102 - the card's own snippet
    for model in (scope["model"],):
        with torch.no_grad():
            logits = model(input_ids=lora_run["ids"]).logits
        assert torch.equal(logits, lora_run["logits"])


def test_full_transformers_model_card_loads_with_its_auto_class(tmp_path, monkeypatch) -> None:
    class LM(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            config = transformers.LlamaConfig(vocab_size=100, hidden_size=16, intermediate_size=32,
                                              num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16)
            self.model = transformers.LlamaForCausalLM(config)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return self.model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.05)

    logger = RunLogger("tiny-lines", "full", root=tmp_path / "runs", sinks=())
    trainer = make_trainer(tmp_path, max_steps=2, logger=logger, callbacks=[FinalModelExport()])
    module = LM()
    trainer.fit(module, loader())
    text = (logger.layout.final_model_dir / "README.md").read_text()
    code = card_code(text)
    assert "from transformers import AutoModelForCausalLM" in code
    assert "- optimizer: SGD" in text and "- learning_rate: 0.05" in text
    monkeypatch.chdir(logger.run_dir)
    scope: dict[str, Any] = {}
    exec(code, scope)  # noqa: S102 - the card's own snippet
    ids = torch.arange(8).unsqueeze(0)
    module.model.eval()
    with torch.no_grad():
        assert torch.equal(scope["model"](input_ids=ids).logits, module.model(input_ids=ids).logits)


# -- the docs agree with the files ---------------------------------------------------------------------
README = Path(__file__).resolve().parents[2] / "README.md"
DOCS = README.parent / "docs"
# Diagram entries a run of another kind writes, and the test that makes such a run
OTHER_KINDS = {
    "metrics.dropped-at-attempt-N.jsonl": "a resume from before the last record (tests/core/test_run_record.py)",
    # the code capture writes what the working tree has (tests/reproduce/test_capture.py)
    "code/diff.patch": "a run in a git repository with uncommitted changes",
    "code/untracked": "a run in a git repository with untracked files",
    "code/source": "a run outside a git repository",
    "code/attempt-<N>": "a resumed run in a git repository",
    "inputs.json": "a run whose config names a file or folder",
    "swanlab_logs/run-*": "a run with the opt-in swanlab sink (tests/core/test_record_sinks.py)",
    "swanlab_workspace": "runs with the opt-in swanlab sink",
}


def diagram() -> list[tuple[int, str]]:
    """``(depth, name)`` of every entry of the README's run-folder diagram (depth 0: beside the runs)."""
    text = README.read_text()
    block = text[text.index("Every run gets one folder:"):]
    block = block[block.index("```") + 3:]
    block = block[:block.index("```")]
    entries = []
    for line in block.splitlines():
        found = re.match(r"^((?:│   |    )*)[├└]── (\S+(?: \+ \S+)?)", line)
        if found:
            entries.append((len(found.group(1)) // 4, found.group(2)))
    return entries


def pattern(name: str) -> str:
    """A diagram name as a glob: ``<exp_id>``, ``N``, ``<N>`` and example numbers (``076``) stand for any text."""
    name = re.sub(r"<[^>]+>|\d+", "*", name)
    return re.sub(r"(?<=-)N(?=\.)", "*", name)


def test_the_readme_diagram_and_the_run_folder_name_the_same_files(lora_run) -> None:
    import fnmatch

    from lightning_track.folder.layout import parse_run_name

    run = lora_run["run"]
    entries = diagram()
    in_run = [name for depth, name in entries if depth == 1]
    beside = [name for depth, name in entries
              if depth == 0 and name != "runs/" and not parse_run_name(name.rstrip("/"))]
    assert any(n.startswith("meta.attempt-") for n in in_run) and "plots/metrics.png" in in_run
    # every entry in the diagram is in the run (or the runs folder), unless a run of another kind writes it
    names = []
    for entry in in_run:
        for part in entry.split(" + "):  # "media/ + media.jsonl"
            names.append(part.rstrip("/"))
    files = sorted(str(p.relative_to(run.run_dir)) for p in run.run_dir.rglob("*"))
    for name in names:
        if name in OTHER_KINDS:
            continue
        assert any(fnmatch.fnmatch(f, pattern(name)) for f in files), f"README names {name}, the run has not"
    for entry in beside:
        head = entry.split("|")[0].rstrip("/")  # signals/<exp_id>.healthy|.done|.failed
        if head in OTHER_KINDS:
            continue
        assert list(run.root.glob(pattern(head))), f"README names {entry} beside the runs, it is not there"
    # every file the run wrote is in the diagram: the entry itself or a file under an entry that is a folder
    folders = [pattern(n.rstrip("/")) for n in names if n.endswith("/") or "/" in n]
    tops = {pattern(n).split("/")[0] for n in names}
    for f in files:
        top = f.split("/")[0]
        assert any(fnmatch.fnmatch(top, t) for t in tops) or any(fnmatch.fnmatch(f, p) for p in folders), (
            f"the run wrote {f}, the README's diagram does not name it")


def test_docs_name_the_summary_fields_a_resumed_run_has(lora_run) -> None:
    text = (DOCS / "remote_gpu.md").read_text()
    assert '"resumes"' not in text and "previous_status" not in text
    keys = re.search(r'"interrupted": \{([^}]*)\}', text).group(1)
    stopped = lora_run["stopped"]["summary"]
    assert sorted(k.strip().strip('"') for k in keys.split(",")) == sorted(stopped["interrupted"])
    assert '`"reason"`' in text and stopped["reason"]
    assert "`from_step`" in text
    final = json.loads(lora_run["run"].summary_json.read_text())
    assert final["attempts"][1]["from_step"] == STOP_AT and final["attempts"][0]["reason"]
    assert "training_time_s" in README.read_text() and "wall_span_s" in README.read_text()
