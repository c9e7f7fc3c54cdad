"""FinalModelExport: final_model/ loads back with the same outputs; a tiny GPT-2 through transformers."""

from __future__ import annotations

import json
from typing import Any

import lightning as L
import pytest
import torch
from support.trainers import make_trainer
from torch.utils.data import DataLoader, Dataset

from lightning_track import FinalModelExport, load_final_model
from lightning_track.folder.fileio import read_json
from lightning_track.training.toy import LineDataset, ToyRegression, line_loader


def test_plain_module_round_trips_through_safetensors_and_config(tmp_path, run_logger_factory):
    logger = run_logger_factory(dataset="arc-challenge", method="lora")
    module = ToyRegression(dim=4, hidden=6, lr=0.1, seed=None)
    trainer = make_trainer(tmp_path, max_steps=8, logger=logger, callbacks=[FinalModelExport()])
    trainer.fit(module, line_loader(LineDataset(n=16)))
    folder = logger.layout.final_model_dir
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert read_json(folder / "config.json") == {"dim": 4, "hidden": 6, "lr": 0.1}
    loaded = load_final_model(folder, ToyRegression)
    assert not loaded.training
    x = torch.randn(5, 4)
    module.eval()
    assert torch.equal(loaded(x), module(x))
    # the model card names dataset and method and shows the metrics summary.json ends up with
    card = (folder / "README.md").read_text()
    summary = read_json(logger.layout.summary_json)
    final_loss = summary["final"]["train/loss"]
    assert "- dataset: arc-challenge" in card and "- method: lora" in card
    assert f"| train/loss | {final_loss['value']:.6g} | {final_loss['step']} |" in card
    assert card.startswith("---\n") and "library_name: pytorch-lightning" in card
    assert not [p for p in logger.layout.run_dir.iterdir() if p.name.startswith(".final_model")]


def test_export_replaces_an_old_folder_whole(tmp_path):
    target = tmp_path / "final_model"
    target.mkdir()
    (target / "stale.bin").write_bytes(b"old")
    module = ToyRegression(hidden=8, seed=None)
    FinalModelExport().export(None, module, target)
    assert sorted(p.name for p in target.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["final_model"]


def test_failed_fit_exports_nothing(tmp_path, run_logger_factory):
    class Broken(ToyRegression):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            if self.global_step == 2:
                raise RuntimeError("boom")
            return super().training_step(batch, batch_idx)

    logger = run_logger_factory()
    trainer = make_trainer(tmp_path, max_steps=5, logger=logger, callbacks=[FinalModelExport()])
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(Broken(), line_loader(LineDataset(n=16)))
    assert not logger.layout.final_model_dir.exists()


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_final_model(tmp_path / "nope", ToyRegression)
    folder = tmp_path / "final_model"
    FinalModelExport().export(None, ToyRegression(hidden=6, seed=None), folder)
    (folder / "config.json").write_text(json.dumps({"dim": 4, "hidden": 6, "lr": 0.1, "width": 3}))
    with pytest.raises(TypeError, match=r"config.json: cannot build ToyRegression\(\*\*config\).*width"):
        load_final_model(folder, ToyRegression)
    (folder / "config.json").write_text(json.dumps({"hidden": 9}))
    with pytest.raises(ValueError, match=r"model.safetensors: does not match ToyRegression"):
        load_final_model(folder, ToyRegression)


def test_hub_mixin_model_saves_itself(tmp_path):
    from huggingface_hub import PyTorchModelHubMixin

    class Net(torch.nn.Module, PyTorchModelHubMixin):
        def __init__(self, width: int = 3) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(width, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x)

    class Wrapper(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = Net(width=5)

    module = Wrapper()
    folder = FinalModelExport().export(None, module, tmp_path / "final_model")
    loaded = Net.from_pretrained(folder)
    x = torch.randn(2, 5)
    assert torch.equal(loaded(x), module.model(x))
    assert "Net.save_pretrained (attribute 'model')" in (folder / "README.md").read_text()


# -- transformers (the `hf` extra) ---------------------------------------------------------------
class TokenData(Dataset):
    def __init__(self, n: int = 16, length: int = 12, vocab: int = 50) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, vocab, (n, length), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[index]}


def _tiny_tokenizer(vocab: int) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"[UNK]": 0, "[PAD]": 1, **{f"w{i}": i for i in range(2, vocab)}}
    tok = Tokenizer(models.WordLevel(vocab=words, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")


def test_tiny_gpt2_round_trips_through_auto_model_for_causal_lm(tmp_path, run_logger_factory):
    transformers = pytest.importorskip("transformers")

    class LM(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            config = transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=32, n_layer=1, n_head=2)
            self.model = transformers.GPT2LMHeadModel(config)
            self.tokenizer = _tiny_tokenizer(50)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            loss = self.model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss
            self.log("train/loss", loss)
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.AdamW(self.parameters(), lr=1e-3)

    logger = run_logger_factory(method="gpt2")
    module = LM()
    trainer = make_trainer(tmp_path, max_steps=3, logger=logger, callbacks=[FinalModelExport()])
    trainer.fit(module, DataLoader(TokenData(), batch_size=4))
    folder = logger.layout.final_model_dir
    loaded = transformers.AutoModelForCausalLM.from_pretrained(folder)
    assert type(loaded).__name__ == "GPT2LMHeadModel"
    ids = torch.tensor([[3, 7, 11, 2, 9]])
    module.model.eval()
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, module.model(ids).logits, atol=1e-6)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    assert tokenizer("w3 w7 w11")["input_ids"] == [3, 7, 11]
    assert "tokenizer saved beside it" in (folder / "README.md").read_text()
