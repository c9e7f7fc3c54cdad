"""final_model/README.md says what is true: how far training went and which library loads the model.

Read back with huggingface_hub's ``ModelCard.load``; the training state is compared with what the
trainer and Lightning's own checkpoint say.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from support.trainers import make_trainer
from torch.utils.data import DataLoader

from lightning_track import FinalModelExport
from lightning_track.training.toy import LineDataset, ToyRegression, line_loader


def card(folder: Any) -> Any:
    from huggingface_hub import ModelCard

    return ModelCard.load(folder / "README.md")


def trained_line(text: str) -> str:
    (line,) = [line for line in text.splitlines() if line.startswith("- trained:")]
    return line


@pytest.mark.parametrize(("kwargs", "expected", "ckpt_epoch"), [
    # 30 batches an epoch (120 lines, 4 a batch)
    ({"max_steps": 82}, "- trained: 82 optimizer steps, 2 full epochs + 22 batches", 2),
    ({"max_steps": 60}, "- trained: 60 optimizer steps, 2 full epochs", 1),
    ({"max_epochs": 1}, "- trained: 30 optimizer steps, 1 full epoch", 0),
    ({"max_steps": 1}, "- trained: 1 optimizer step, 0 full epochs + 1 batch", 0),
    ({"max_steps": 41, "accumulate_grad_batches": 2},
     "- trained: 41 optimizer steps (82 batches), 2 full epochs + 22 batches", 2),
])
def test_card_states_steps_full_epochs_and_batches(tmp_path, run_logger_factory, kwargs, expected, ckpt_epoch):
    logger = run_logger_factory()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = make_trainer(tmp_path, logger=logger, callbacks=[checkpoint, FinalModelExport()], **kwargs)
    trainer.fit(ToyRegression(hidden=8, seed=None), line_loader(LineDataset(n=120)))
    text = (logger.layout.final_model_dir / "README.md").read_text()
    assert trained_line(text) == expected
    # Lightning's checkpoint of the same moment agrees on the epoch the run was in
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    assert saved["epoch"] == ckpt_epoch and saved["global_step"] == trainer.global_step


def test_plain_module_card_is_pytorch_lightning(tmp_path, run_logger_factory):
    logger = run_logger_factory(method="lora")
    trainer = make_trainer(tmp_path, max_steps=3, logger=logger, callbacks=[FinalModelExport()])
    trainer.fit(ToyRegression(hidden=8, seed=None), line_loader(LineDataset(n=16)))
    data = card(logger.layout.final_model_dir).data
    assert data.library_name == "pytorch-lightning"
    assert {"lightning", "lightning_track", "lora"} <= set(data.tags)


def test_transformers_model_card_is_transformers(tmp_path, run_logger_factory):
    transformers = pytest.importorskip("transformers")
    ids = torch.randint(0, 50, (8, 12), generator=torch.Generator().manual_seed(0))

    class LM(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            config = transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2)
            self.model = transformers.GPT2LMHeadModel(config)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return self.model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss

        def configure_optimizers(self) -> Any:
            return torch.optim.AdamW(self.parameters(), lr=1e-3)

    logger = run_logger_factory(method="gpt2")
    trainer = make_trainer(tmp_path, max_steps=2, logger=logger, callbacks=[FinalModelExport()])
    trainer.fit(LM(), DataLoader([{"input_ids": row} for row in ids], batch_size=4))
    folder = logger.layout.final_model_dir
    assert card(folder).data.library_name == "transformers"
    assert type(transformers.AutoModelForCausalLM.from_pretrained(folder)).__name__ == "GPT2LMHeadModel"


def test_library_of_what_saved_the_model():
    from lightning_track.callbacks.final_model import card_library

    transformers = pytest.importorskip("transformers")
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=8, n_positions=4, n_embd=8, n_layer=1,
                                                                n_head=2))
    assert card_library(gpt2) == "transformers"
    assert card_library(ToyRegression(hidden=8, seed=None)) == "pytorch-lightning"
    peft_like = type("PeftModelForCausalLM", (torch.nn.Module,), {"__module__": "peft.peft_model"})()
    assert card_library(peft_like) == "peft"
