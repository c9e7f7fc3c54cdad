"""The model card of ``final_model/``: ours merged into the card the saving library wrote.

Why merge, never replace: the saving library knows what the Hub needs to link and load the model
(peft writes ``base_model``, ``pipeline_tag``, ``library_name: peft`` and the
``base_model:adapter:<base>`` tag that ties an adapter to its base). We keep every field it set and
its text, and add the run (name, data, steps), the training hyperparameters, the metrics, the
framework versions and the exact code that loads what was saved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CardRun", "adapter_config", "adapter_lines", "auto_class", "loading_code", "merge_card", "optimizer_lines",
           "tags_for", "version_lines"]

# peft's task types and the AutoPeftModel class that loads each (peft/auto.py); others: AutoPeftModel
_PEFT_AUTO = {
    "CAUSAL_LM": "AutoPeftModelForCausalLM",
    "SEQ_2_SEQ_LM": "AutoPeftModelForSeq2SeqLM",
    "SEQ_CLS": "AutoPeftModelForSequenceClassification",
    "TOKEN_CLS": "AutoPeftModelForTokenClassification",
    "QUESTION_ANS": "AutoPeftModelForQuestionAnswering",
    "FEATURE_EXTRACTION": "AutoPeftModelForFeatureExtraction",
}
# transformers' Auto classes, most specific first, with the mapping (model type -> class name) each uses
_TRANSFORMERS_AUTO = (
    ("AutoModelForCausalLM", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"),
    ("AutoModelForSeq2SeqLM", "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES"),
    ("AutoModelForSequenceClassification", "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES"),
    ("AutoModelForTokenClassification", "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES"),
    ("AutoModelForQuestionAnswering", "MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES"),
    ("AutoModelForMaskedLM", "MODEL_FOR_MASKED_LM_MAPPING_NAMES"),
    ("AutoModelForImageClassification", "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES"),
    ("AutoModel", "MODEL_MAPPING_NAMES"),
)
# the adapter settings a reader wants to see, in this order (any peft method: the ones it has)
_ADAPTER_KEYS = ("peft_type", "task_type", "r", "lora_alpha", "lora_dropout", "target_modules", "modules_to_save",
                 "use_dora", "use_rslora", "num_virtual_tokens")
_VERSIONS = ("torch", "lightning", "transformers", "peft", "lightning-track")


@dataclass
class CardRun:
    """What the card says about the run, gathered by :class:`FinalModelExport`."""

    title: str
    facts: list[str]  # "- key: value" lines
    hyperparameters: list[str]
    metrics: list[str]  # the markdown table (or a line saying there are none)
    metrics_source: str
    usage: list[str]  # python lines
    tags: list[str] = field(default_factory=list)
    library: str = "pytorch-lightning"


def adapter_config(model: Any) -> dict[str, Any] | None:
    """The active adapter's config of a peft model as a plain dict (None for any other model)."""
    configs = getattr(model, "peft_config", None)
    if not isinstance(configs, Mapping) or not configs:
        return None
    active = getattr(model, "active_adapter", None)
    config = configs.get(active) if isinstance(active, str) else None
    config = config if config is not None else next(iter(configs.values()))
    to_dict = getattr(config, "to_dict", None)
    return dict(to_dict()) if callable(to_dict) else dict(vars(config))


def auto_class(model: Any) -> str | None:
    """The transformers Auto class that builds ``model``'s class from its config (None: none does)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if not model_type:
        return None
    from transformers.models.auto import modeling_auto

    name = type(model).__name__
    for auto, mapping in _TRANSFORMERS_AUTO:
        if getattr(modeling_auto, mapping, {}).get(model_type) == name:
            return auto
    return None


def _plain(value: Any) -> str:
    if isinstance(value, (set, frozenset, list, tuple)):
        return ", ".join(sorted(str(v) for v in value))
    return str(getattr(value, "value", value))  # peft's enums (TaskType.CAUSAL_LM) by their value


def adapter_lines(config: Mapping[str, Any]) -> list[str]:
    """One line per adapter setting worth reading (r, alpha, target modules, ...)."""
    return [f"- {key}: {_plain(config[key])}" for key in _ADAPTER_KEYS if config.get(key) not in (None, [], {})]


def optimizer_lines(trainer: Any) -> list[str]:
    """The optimizer, its learning rate(s) (the initial one when a scheduler changed it) and the steps."""
    lines: list[str] = []
    for index, optimizer in enumerate(getattr(trainer, "optimizers", None) or []):
        rates = []
        for group in optimizer.param_groups:
            rate = group.get("initial_lr", group.get("lr"))
            if rate is not None and rate not in rates:
                rates.append(rate)
        label = "optimizer" if index == 0 else f"optimizer {index + 1}"
        lines.append(f"- {label}: {type(optimizer).__name__}")
        if rates:
            lines.append(f"- learning_rate: {', '.join(f'{float(r):g}' for r in rates)}")
        decay = optimizer.param_groups[0].get("weight_decay") if optimizer.param_groups else None
        if decay is not None:
            lines.append(f"- weight_decay: {float(decay):g}")
    if trainer is not None:
        lines.append(f"- steps: {trainer.global_step}" + (f" (max_steps {trainer.max_steps})"
                                                          if trainer.max_steps and trainer.max_steps > 0 else ""))
        accumulate = getattr(trainer, "accumulate_grad_batches", 1)
        if accumulate and accumulate != 1:
            lines.append(f"- accumulate_grad_batches: {accumulate}")
        precision = getattr(trainer, "precision", None)
        if precision is not None:
            lines.append(f"- precision: {precision}")
    return lines


def loading_code(saved: Any, how: str, tokenizer: bool, folder: str = "final_model") -> list[str]:
    """Python that loads what was saved, ready to run from the run folder."""
    path = [f'path = "{folder}"  # this folder, from the run folder (or its Hub repo id once pushed)']
    config = adapter_config(saved)
    if config is not None:
        auto = _PEFT_AUTO.get(_plain(config.get("task_type")), "AutoPeftModel")
        base = config.get("base_model_name_or_path")
        base_model = getattr(saved, "get_base_model", lambda: None)()
        base_auto = auto_class(base_model) if base_model is not None else None
        lines = [f"from peft import {auto}", "", *path, f"model = {auto}.from_pretrained(path)"]
        if base and base_auto:
            lines += ["", "# or: the base model, then the adapter on it",
                      "from peft import PeftModel", f"from transformers import {base_auto}", "",
                      f'base = {base_auto}.from_pretrained("{base}")',
                      "model = PeftModel.from_pretrained(base, path)"]
        elif not base:
            lines = ["from peft import PeftModel", "", *path,
                     "base = ...  # the base model, built as in training (the adapter names none)",
                     "model = PeftModel.from_pretrained(base, path)"]
    elif how.startswith("safetensors"):
        cls = type(saved)
        lines = ["from lightning_track import load_final_model", f"from {cls.__module__} import {cls.__qualname__}",
                 "", *path, f"model = load_final_model(path, {cls.__qualname__})"]
    else:
        auto = auto_class(saved)
        if auto is not None:
            lines = [f"from transformers import {auto}", "", *path, f"model = {auto}.from_pretrained(path)"]
        else:
            cls = type(saved)
            lines = [f"from {cls.__module__} import {cls.__qualname__}", "", *path,
                     f"model = {cls.__qualname__}.from_pretrained(path)"]
    if tokenizer:
        lines += ["", "from transformers import AutoTokenizer", "tokenizer = AutoTokenizer.from_pretrained(path)"]
    return lines


def version_lines() -> list[str]:
    from ..run.meta import package_versions

    return [f"- {name}: {version}" for name, version in package_versions(_VERSIONS).items() if version]


def _merged_data(written: Any, run: CardRun) -> Any:
    from huggingface_hub import ModelCardData

    data = written if written is not None else ModelCardData()
    if not data.library_name:
        data.library_name = run.library
    tags = list(data.tags or [])
    data.tags = tags + [tag for tag in run.tags if tag not in tags]
    return data


def merge_card(written: Path | None, run: CardRun) -> str:
    """The card's text: the saving library's metadata and text (``written``, when it wrote one),
    with our run, hyperparameters, metrics, loading code and versions added."""
    from huggingface_hub import ModelCard

    theirs = None
    if written is not None and written.is_file():
        try:
            theirs = ModelCard.load(written)
        except (ValueError, OSError):
            theirs = None  # not a card huggingface_hub can read: ours alone
    data = _merged_data(theirs.data if theirs is not None else None, run)
    lines = [f"# {run.title}", "", *run.facts]
    if run.hyperparameters:
        lines += ["", "## Training hyperparameters", "", *run.hyperparameters]
    lines += ["", f"## Key metrics (from {run.metrics_source})", "", *run.metrics]
    lines += ["", "## Loading", "", "```python", *run.usage, "```"]
    lines += ["", "## Framework versions (training)", "", *version_lines(), ""]
    body = "\n".join(lines)
    if theirs is not None and theirs.text.strip():
        body += "\n<!-- the card the saving library wrote, kept as it wrote it -->\n\n" + theirs.text.lstrip("\n")
    return f"---\n{data.to_yaml().strip()}\n---\n\n{body}"


def tags_for(method: Any, extra: Sequence[str] = ()) -> list[str]:
    return ["lightning", "lightning_track"] + ([str(method)] if method else []) + list(extra)
