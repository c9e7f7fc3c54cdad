"""Legacy checkpoints (HF Trainer ``checkpoint-<step>/`` folders, plain ``torch.save`` files) ->
Lightning checkpoint files.

One checkpoint is converted at a time, and its tensors are not even loaded: they stay in the legacy
files as :class:`~.rawtensors.RawTensor` references and are copied byte for byte into the new file
(:mod:`.rawtensors`, :mod:`.rawwrite`); files that path does not handle go through
``torch.load``/``torch.save``.
Memory stays bounded by the largest checkpoint either way. The loop state Lightning needs to resume
at the right ``global_step`` is produced by Lightning's own checkpoint migration (see
:mod:`.loopstate`), not written by hand.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from . import rawtensors
from .loopstate import loop_state
from .rawtensors import RawTensor, RawUnsupported
from .rawwrite import write_checkpoint
from .readers import as_int, as_number, read_trainer_state
from .report import Notes

__all__ = ["LegacyCheckpoint", "ConvertedCheckpoint", "find_checkpoints", "load_checkpoint",
           "lightning_checkpoint", "save_checkpoint", "WEIGHT_FILES"]

# In order of preference inside a HF checkpoint folder.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json", "adapter_model.safetensors", "adapter_model.bin")
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
NOT_CARRIED = ("rng_state.pth", "training_args.bin")  # RNG state and HF arguments have no Lightning place
_HF_DIR = re.compile(r"^checkpoint-(\d+)$")
_STEP_IN_NAME = re.compile(r"(?:^|[_-])(?:step|global_step|checkpoint)[_-]?(\d+)(?:\.|$)")
_EPOCH_IN_NAME = re.compile(r"(?:^|[_-])epoch[_-]?(\d+)(?:\.|$)")


@dataclass
class LegacyCheckpoint:
    path: Path
    kind: str  # "hf" (Trainer folder) or "torch" (torch.save file)
    name_step: int | None
    name_epoch: int | None = None
    size: int = 0

    @property
    def sort_key(self) -> tuple[float, str]:
        return (self.name_step if self.name_step is not None else math.inf, self.path.name)


@dataclass
class ConvertedCheckpoint:
    source: Path
    step: int
    epoch: int
    weights_only: bool
    weights: str  # "full" or "adapter"
    size: int
    notes: list[str] = field(default_factory=list)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def find_checkpoints(folder: Path, notes: Notes) -> list[LegacyCheckpoint]:
    """Every checkpoint in ``checkpoints/`` (both kinds, mixed), by step when the name tells it."""
    if not folder.is_dir():
        return []
    found = []
    for child in sorted(folder.iterdir()):
        if child.name.startswith("."):
            continue
        hf = _HF_DIR.match(child.name)
        if child.is_dir() and hf:
            found.append(LegacyCheckpoint(child, "hf", int(hf.group(1)), size=_size(child)))
        elif child.is_file() and child.suffix in TORCH_SUFFIXES:
            step = _STEP_IN_NAME.search(child.name)
            epoch = _EPOCH_IN_NAME.search(child.name)
            found.append(LegacyCheckpoint(child, "torch", int(step.group(1)) if step else None,
                                          int(epoch.group(1)) if epoch else None, size=child.stat().st_size))
        else:
            notes.warn(f"{child}: not a checkpoint (expected checkpoint-<step>/ or a .pt/.pth file); ignored",
                       str(child))
    return sorted(found, key=lambda c: c.sort_key)


def _torch_load(path: Path, trust_pickle: bool) -> Any:
    import torch  # only here: the by-reference path needs no torch (its import is ~2 s)

    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError/EOFError/UnpicklingError/...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise CheckpointError(f"{path}: holds Python objects that safe loading refuses ({first[:160]});"
                                  " re-run with --trust-pickle if you trust this file") from None
        if path.stat().st_size == 0:
            raise CheckpointError(f"{path}: file is empty") from None
        raise CheckpointError(f"{path}: unreadable or truncated torch file ({first[:160]})") from None


def _read_torch(path: Path, trust_pickle: bool) -> Any:
    """A torch file's object, tensors by reference when the file allows it (see :mod:`.rawtensors`)."""
    try:
        return rawtensors.read_torch_file(path)
    except RawUnsupported:
        return _torch_load(path, trust_pickle)


def _load_safetensors(path: Path) -> dict[str, Any]:
    try:
        return rawtensors.read_safetensors(path)
    except RawUnsupported:
        pass
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - SafetensorError is not importable by a stable name
        if path.stat().st_size == 0:
            raise CheckpointError(f"{path}: file is empty") from None
        raise CheckpointError(f"{path}: unreadable or truncated safetensors file ({str(exc)[:160]})") from None


def _load_weights_file(path: Path, trust_pickle: bool) -> dict[str, Any]:
    if path.name.endswith(".index.json"):
        try:
            index = json.loads(path.read_text(encoding="utf-8"))
            shards = sorted(set(index["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{path}: not a shard index with a 'weight_map' ({exc})") from None
        merged: dict[str, Any] = {}
        for shard in shards:
            merged.update(_load_weights_file(path.parent / shard, trust_pickle))
        return merged
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    return _state_dict_of(_read_torch(path, trust_pickle), path)


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def _state_dict_of(obj: Any, path: Path) -> dict[str, Any]:
    if isinstance(obj, dict) and obj and all(isinstance(v, RawTensor) or _is_tensor(v) for v in obj.values()):
        return obj
    raise CheckpointError(f"{path}: expected a state_dict (names -> tensors), got "
                          f"{type(obj).__name__}{' with keys ' + str(list(obj)[:6]) if isinstance(obj, dict) else ''}")


def _optional_state(path: Path, trust_pickle: bool, what: str, notes: list[str]) -> Any:
    if not path.is_file():
        return None
    try:
        return _read_torch(path, trust_pickle)
    except CheckpointError as exc:
        notes.append(f"{exc}; {what} not carried")
        return None


@dataclass
class LoadedCheckpoint:
    weights: dict[str, Any]  # names -> tensors (torch.Tensor or RawTensor)
    step: int
    epoch: int
    optimizer: Any = None
    scheduler: Any = None
    hyper_parameters: dict[str, Any] | None = None
    adapter: bool = False
    notes: list[str] = field(default_factory=list)


def load_checkpoint(
    ck: LegacyCheckpoint,
    *,
    trust_pickle: bool = False,
    epoch_of_step: Callable[[int], int | None] = lambda step: None,
    last_step_of_epoch: Callable[[int], int | None] = lambda epoch: None,
) -> LoadedCheckpoint:
    """Read one legacy checkpoint; raise :class:`CheckpointError` (one line, naming the file) if unusable."""
    notes: list[str] = []
    if ck.kind == "hf":
        weights_file = next((ck.path / n for n in WEIGHT_FILES if (ck.path / n).is_file()), None)
        if weights_file is None:
            raise CheckpointError(f"{ck.path}: no weights file (looked for {', '.join(WEIGHT_FILES)})")
        weights = _load_weights_file(weights_file, trust_pickle)
        assert ck.name_step is not None
        step = ck.name_step
        epoch: int | None = None
        state_path = ck.path / "trainer_state.json"
        if state_path.is_file():
            state_notes = Notes()
            state = read_trainer_state(state_path, state_notes)
            notes += state_notes.finish()
            if state is not None:
                global_step = as_int(state.get("global_step"))
                if global_step is not None and global_step != step:
                    notes.append(f"{state_path}: global_step {global_step} differs from the folder name; "
                                 f"step {step} from the name used")
                number = as_number(state.get("epoch"))
                epoch = math.floor(number) if number is not None else None
        optimizer = _optional_state(ck.path / "optimizer.pt", trust_pickle, "optimizer state", notes)
        scheduler = _optional_state(ck.path / "scheduler.pt", trust_pickle, "scheduler state", notes)
        adapter = weights_file.name.startswith("adapter_")
        hparams = None
    else:
        obj = _read_torch(ck.path, trust_pickle)
        hparams = None
        optimizer = scheduler = None
        if isinstance(obj, dict) and ("model_state_dict" in obj or "state_dict" in obj):
            weights = _state_dict_of(obj.get("model_state_dict", obj.get("state_dict")), ck.path)
            optimizer = obj.get("optimizer_state_dict", obj.get("optimizer"))
            scheduler = obj.get("scheduler_state_dict", obj.get("lr_scheduler"))
            found_hp = obj.get("hyper_parameters", obj.get("hparams"))
            hparams = dict(found_hp) if isinstance(found_hp, dict) else None
            step_value = as_int(obj.get("step", obj.get("global_step")))
            epoch_value = as_int(obj.get("epoch"))
        else:
            weights = _state_dict_of(obj, ck.path)
            step_value = epoch_value = None
        step_or_none = step_value if step_value is not None else ck.name_step
        epoch = epoch_value if epoch_value is not None else ck.name_epoch
        if step_or_none is None and ck.name_epoch is not None:
            step_or_none = last_step_of_epoch(ck.name_epoch)
            if step_or_none is not None:
                notes.append(f"{ck.path}: no step in the file; step {step_or_none} is the last tracked step of"
                             f" epoch {ck.name_epoch}")
        if step_or_none is None:
            raise CheckpointError(f"{ck.path}: no step: no 'step'/'global_step' field, no step in the name and no"
                                  " batch tracking to find it")
        step = step_or_none
        adapter = False
    if epoch is None:
        epoch = epoch_of_step(step)
        if epoch is None:
            epoch = 0
            notes.append(f"{ck.path}: epoch unknown; 0 assumed")
    return LoadedCheckpoint(weights, step, int(epoch), optimizer, scheduler, hparams, adapter, notes)


def lightning_checkpoint(loaded: LoadedCheckpoint, *, prefix: str, source: str) -> dict[str, Any]:
    """A checkpoint dict ``LightningModule.load_from_checkpoint`` loads and ``trainer.fit(ckpt_path=)`` resumes.

    Without a legacy optimizer state, ``optimizer_states`` is an empty list: Lightning then keeps
    the freshly configured optimizer (weights-only resume) instead of refusing the checkpoint.
    """
    checkpoint: dict[str, Any] = {
        "state_dict": {f"{prefix}{key}": value for key, value in loaded.weights.items()},
        **loop_state(loaded.step, loaded.epoch),
    }
    checkpoint["optimizer_states"] = [loaded.optimizer] if loaded.optimizer is not None else []
    checkpoint["lr_schedulers"] = [loaded.scheduler] if loaded.scheduler is not None else []
    if loaded.hyper_parameters:
        checkpoint["hyper_parameters"] = loaded.hyper_parameters
    checkpoint["lt_migrate"] = {
        "source": source,
        "weights_only": loaded.optimizer is None,
        "weights": "adapter" if loaded.adapter else "full",
        "state_dict_prefix": prefix,
    }
    return checkpoint


def save_checkpoint(checkpoint: dict[str, Any], path: Path, cancel: threading.Event | None = None) -> int:
    """Write a ``torch.save`` file, copying the bytes of referenced tensors; returns its size.

    The caller builds inside a staging folder renamed when complete, so a failed write leaves nothing.
    ``cancel`` set stops a copy between chunks (``InterruptedError``).
    """
    if rawtensors.contains_raw(checkpoint):
        try:
            return write_checkpoint(checkpoint, path, cancel=cancel)
        except RawUnsupported:  # referenced tensors mixed with loaded ones (a file only torch.load read)
            checkpoint = rawtensors.materialize(checkpoint)
    import torch

    with open(path, "wb") as handle:
        torch.save(checkpoint, handle)
        return handle.tell()
