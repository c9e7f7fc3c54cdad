"""FinalModelExport: the trained model as a Hugging Face folder, ready for ``from_pretrained``.

Why: a ``.ckpt`` needs the training code to be useful; ``final_model/`` is what people share,
evaluate and deploy. Models that know ``save_pretrained`` (transformers, PEFT,
``PyTorchModelHubMixin``) save themselves; any other module is written the way huggingface_hub's
mixin does it (``model.safetensors`` + ``config.json`` of the init arguments).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from typing_extensions import override

from ..derived.digest import summarize_metrics
from ..derived.report import metrics_table
from ..folder.fileio import atomic_write_json, atomic_write_text, read_json, replace_dir, temp_path, to_jsonable
from ..folder.layout import RunLayout
from ..folder.records import read_metrics
from .model_card import CardRun, adapter_config, adapter_lines, loading_code, merge_card, optimizer_lines, tags_for
from .targets import find_layout, find_run_logger

__all__ = ["FinalModelExport", "load_final_model", "CONFIG_FILE", "WEIGHTS_FILE"]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"

T = TypeVar("T")


def _has_save_pretrained(obj: Any) -> bool:
    return callable(getattr(obj, "save_pretrained", None))


def card_library(model: Any) -> str:
    """The model card's ``library_name``: the library that loads what ``model`` saved.

    The Hub uses it to pick the loading snippet and the filters: a PEFT adapter loads with ``peft``,
    a transformers model with ``transformers`` (found by the classes it is built from, without
    importing either library); anything else is a Lightning module's weights.
    """
    modules = {cls.__module__.split(".")[0] for cls in type(model).__mro__}
    for library in ("peft", "transformers"):
        if library in modules:
            return library
    return "pytorch-lightning"


def _plural(count: int, word: str, plural: str | None = None) -> str:
    return f"{count} {word if count == 1 else plural or word + 's'}"


def training_done(trainer: Trainer) -> str:
    """How far training went: optimizer steps, full epochs and the batches of an unfinished one.

    ``trainer.current_epoch`` alone overstates it: Lightning counts an epoch that ``max_steps`` (or a
    stop) cut short as completed, so after 2 epochs and 22 batches it says 3 while the checkpoint of
    that moment says epoch 2. The epoch loop's batch progress says whether the last epoch ran out of
    batches, and how many it ran.
    """
    steps = trainer.global_step
    progress = getattr(getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None), "batch_progress", None)
    if progress is None:  # not a fit loop this code knows: what the trainer itself counts
        return f"{_plural(steps, 'optimizer step')}, epoch index {trainer.current_epoch}"
    text = _plural(steps, "optimizer step")
    batches = progress.total.completed
    if batches != steps:  # gradient accumulation (or manual optimization)
        text += f" ({_plural(batches, 'batch', 'batches')})"
    partial = 0 if progress.is_last_batch else progress.current.completed
    full = trainer.current_epoch - (1 if partial else 0)
    text += f", {_plural(full, 'full epoch')}"
    if partial:
        text += f" + {_plural(partial, 'batch', 'batches')}"
    return text


class FinalModelExport(Callback):
    """At the end of a successful fit, write ``final_model/`` (rank 0 only).

    Args:
        model_attr: the module attribute holding the model to export when the module itself has no
            ``save_pretrained`` (default ``"model"``); ignored when neither has one.
        tokenizer_attr: attribute looked up on the module, then on the datamodule; a tokenizer found
            there is saved beside the model.
        dirpath: override the folder (default: the run layout's ``final_model/``).
        max_metrics: how many metrics the model card lists.

    The folder is built under a temporary name and renamed into place, so a crash never leaves a
    half-written ``final_model/``. Metrics in the model card: with a RunLogger, the same final/best
    values ``summary.json`` will hold (computed from ``metrics.jsonl`` after a flush, since the
    summary itself is only written when the logger finalizes, after ``on_fit_end``); with other
    loggers, the final values in ``trainer.callback_metrics``.
    """

    def __init__(
        self,
        model_attr: str | None = "model",
        tokenizer_attr: str = "tokenizer",
        dirpath: str | os.PathLike[str] | None = None,
        max_metrics: int = 12,
    ) -> None:
        super().__init__()
        self.model_attr = model_attr
        self.tokenizer_attr = tokenizer_attr
        self.dirpath = Path(dirpath) if dirpath is not None else None
        self.max_metrics = max_metrics
        self.exported_to: Path | None = None

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero:
            target = self.dirpath or find_layout(trainer).final_model_dir
            self.exported_to = self.export(trainer, pl_module, target)
            logger = find_run_logger(trainer)
            if logger is not None:  # the weights' hashes and the checkpoint they match, in checkpoints.json
                logger.model_exported(self.exported_to, trainer.global_step)
        trainer.strategy.barrier("FinalModelExport")

    # -- the export --------------------------------------------------------------------------------
    def export(self, trainer: Trainer | None, pl_module: LightningModule, target: str | os.PathLike[str]) -> Path:
        """Write the folder; usable without a trainer (``trainer=None``) from a notebook."""
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = temp_path(target)
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir()
        try:
            saved, how, library = self._save_model(pl_module, staging)
            tokenizer = self._find_tokenizer(trainer, pl_module)
            if tokenizer is not None:
                tokenizer.save_pretrained(str(staging))
            card = self._model_card(trainer, pl_module, saved, how, tokenizer is not None, library, staging)
            atomic_write_text(staging / CARD_FILE, card)
            replace_dir(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return target

    def _save_model(self, pl_module: LightningModule, folder: Path) -> tuple[Any, str, str]:
        """Save the model into ``folder``; what was saved, how, and the library that loads it."""
        if _has_save_pretrained(pl_module):
            pl_module.save_pretrained(str(folder))  # type: ignore[operator]
            return pl_module, f"{type(pl_module).__name__}.save_pretrained", card_library(pl_module)
        inner = getattr(pl_module, self.model_attr, None) if self.model_attr else None
        if inner is not None and _has_save_pretrained(inner):
            inner.save_pretrained(str(folder))
            how = f"{type(inner).__name__}.save_pretrained (attribute {self.model_attr!r})"
            return inner, how, card_library(inner)
        from huggingface_hub import save_torch_model

        atomic_write_json(folder / CONFIG_FILE, _init_config(pl_module))
        save_torch_model(pl_module, folder)
        return pl_module, f"safetensors + config.json of {type(pl_module).__name__}", card_library(pl_module)

    def _find_tokenizer(self, trainer: Trainer | None, pl_module: LightningModule) -> Any:
        owners: list[Any] = [pl_module]
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        if datamodule is not None:
            owners.append(datamodule)
        for owner in owners:
            tokenizer = getattr(owner, self.tokenizer_attr, None)
            if tokenizer is not None and _has_save_pretrained(tokenizer):
                return tokenizer
        return None

    # -- the model card --------------------------------------------------------------------------
    def _metrics(self, trainer: Trainer | None) -> tuple[dict[str, Any], dict[str, Any], str]:
        logger = find_run_logger(trainer) if trainer is not None else None
        if logger is not None:
            logger.flush()  # the writer thread may not even have created metrics.jsonl yet
        if logger is not None and logger.layout.metrics_jsonl.exists():
            records = read_metrics(logger.layout.metrics_jsonl, problems=[])
            summary = summarize_metrics(records, logger.metric_modes)
            return summary["final"], summary["best"], RunLayout.METRICS_JSONL
        final: dict[str, Any] = {}
        if trainer is not None:
            for key, value in trainer.callback_metrics.items():
                try:
                    final[key] = {"value": float(value), "step": trainer.global_step}
                except (TypeError, ValueError, RuntimeError):
                    continue
        return final, {}, "trainer.callback_metrics"

    def _model_card(self, trainer: Trainer | None, pl_module: LightningModule, saved: Any, how: str,
                    tokenizer: bool, library: str, folder: Path) -> str:
        """Ours merged into the card the saving library wrote in ``folder`` (peft writes one)."""
        logger = find_run_logger(trainer) if trainer is not None else None
        hparams = dict(getattr(pl_module, "hparams", {}) or {})
        dataset = getattr(logger, "dataset", None) or hparams.get("dataset")
        method = getattr(logger, "method", None) or hparams.get("method")
        facts = [
            f"- dataset: {dataset or 'unknown'}",
            f"- method: {method or 'unknown'}",
            f"- model class: `{type(pl_module).__module__}.{type(pl_module).__qualname__}`",
            f"- saved with: {how}" + (" (tokenizer saved beside it)" if tokenizer else ""),
        ]
        adapter = adapter_config(saved)
        if adapter is not None:
            base = adapter.get("base_model_name_or_path")
            facts.append(f"- base model: {base}" if base else "- base model: not named by the adapter config")
        if logger is not None:
            facts.append(f"- run: {logger.layout.name} (lightning_track run folder)")
        if trainer is not None:
            facts.append(f"- trained: {training_done(trainer)}")
        hyper = optimizer_lines(trainer) if trainer is not None else []
        if adapter is not None:
            hyper += adapter_lines(adapter)
        final, best, source = self._metrics(trainer)
        table = metrics_table(final, best, _key_metrics(final, best, self.max_metrics)) if final else [
            "(no metrics were logged)"]
        run = CardRun(title=logger.layout.name if logger is not None else type(pl_module).__name__, facts=facts,
                      hyperparameters=hyper, metrics=table, metrics_source=source,
                      usage=loading_code(saved, how, tokenizer, RunLayout.FINAL_MODEL),
                      tags=tags_for(method), library=library)
        return merge_card(folder / CARD_FILE, run)


def _key_metrics(final: Mapping[str, Any], best: Mapping[str, Any], limit: int) -> list[str]:
    """Metrics with a best value (losses, accuracies) first, then the rest, alphabetically."""
    ranked = sorted(final, key=lambda k: (k not in best, k))
    return ranked[:limit]


def _init_config(pl_module: LightningModule) -> dict[str, Any]:
    """The module's init arguments (its hparams), the mixin's ``config.json`` convention."""
    config: dict[str, Any] = {}
    dropped = []
    for key, value in dict(getattr(pl_module, "hparams", {}) or {}).items():
        plain = to_jsonable(value)
        try:
            json.dumps(plain, allow_nan=False)
        except ValueError:
            dropped.append(key)
            continue
        if _round_trips(value, plain):
            config[str(key)] = plain
        else:
            dropped.append(key)
    if dropped:
        warnings.warn(
            f"FinalModelExport: hparams {dropped} are not JSON values and are left out of {CONFIG_FILE};"
            " pass them yourself when loading",
            stacklevel=2,
        )
    return config


def _round_trips(value: Any, plain: Any) -> bool:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return True
    if isinstance(value, Mapping):
        return isinstance(plain, dict) and all(_round_trips(v, plain.get(str(k))) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return isinstance(plain, list) and all(_round_trips(v, p) for v, p in zip(value, plain, strict=False))
    return False


def load_final_model(path: str | os.PathLike[str], cls: type[T], map_location: str | torch.device = "cpu") -> T:
    """Load a ``final_model/`` folder as ``cls``, in eval mode.

    Classes with ``from_pretrained`` (transformers, PEFT, ``PyTorchModelHubMixin``) load themselves;
    any other ``nn.Module`` is built as ``cls(**config.json)`` and gets ``model.safetensors``.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a final_model folder (does not exist)")
    from_pretrained = getattr(cls, "from_pretrained", None)
    if callable(from_pretrained):
        return from_pretrained(str(folder))  # type: ignore[no-any-return]
    config_path = folder / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: missing (needed to build {cls.__name__})")
    config = read_json(config_path)
    if not isinstance(config, dict):
        raise ValueError(f"{config_path}: expected a JSON object of init arguments, got {type(config).__name__}")
    try:
        model = cls(**config)
    except TypeError as exc:
        raise TypeError(f"{config_path}: cannot build {cls.__name__}(**config): {exc}") from None
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"load_final_model: {cls.__name__} is not a torch.nn.Module")
    from huggingface_hub import load_torch_model

    weights = [p for p in folder.iterdir() if p.name.endswith((".safetensors", ".safetensors.index.json"))]
    if not weights:
        raise FileNotFoundError(f"{folder / WEIGHTS_FILE}: missing (no safetensors weights in the folder)")
    try:
        load_torch_model(model, folder, strict=True, map_location=map_location)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"{folder / WEIGHTS_FILE}: does not match {cls.__name__}: {first}") from None
    model.eval()
    return model
