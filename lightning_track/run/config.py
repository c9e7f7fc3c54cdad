"""Run configuration: normalising what users pass, writing ``config.yaml`` (secrets redacted: :mod:`..redaction`).

OmegaConf holds the config; anything it cannot hold becomes a string, with a warning naming the key.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import os
import warnings
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from ..errors import ConfigError, one_line
from ..folder.fileio import atomic_write_text
from ..folder.records import flatten
from ..redaction import redact

__all__ = ["normalize_config", "merge_config", "config_to_yaml", "config_digest", "write_config_yaml", "load_config",
           "merge_hyperparams", "config_changes", "config_with_disk"]

def _plain(value: Any, path: str) -> Any:
    """Recursively turn ``value`` into types OmegaConf can hold."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Namespace):
        value = vars(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.name
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", 1) == 0:
        try:
            return item()
        except (TypeError, ValueError, RuntimeError):
            pass
    warnings.warn(
        f"config value {path or '<root>'!s} of type {type(value).__name__} cannot be stored in config.yaml;"
        " it is recorded as its string form",
        stacklevel=3,
    )
    return str(value)


def normalize_config(config: Any) -> dict[str, Any]:
    """Accept a dict, DictConfig, argparse Namespace or dataclass instance; return a plain dict."""
    if config is None:
        return {}
    plain = _plain(config, "")
    if not isinstance(plain, dict):
        raise TypeError(
            f"config must be a mapping, DictConfig, Namespace or dataclass, got {type(config).__name__}"
        )
    return plain


def merge_config(base: dict[str, Any], update: Any) -> dict[str, Any]:
    merged = OmegaConf.merge(OmegaConf.create(base), OmegaConf.create(normalize_config(update)))
    return OmegaConf.to_container(merged, resolve=True)  # type: ignore[return-value]


def merge_hyperparams(config: dict[str, Any], params: Any) -> dict[str, Any]:
    """Lightning's hyperparameters (the module's and datamodule's ``save_hyperparameters()``) merged
    into the run config without saying anything twice.

    Why: a config nests ``model: {lr: 0.1}`` and the module reports ``lr: 0.1`` flat; added at the top
    level it would appear twice. A hyperparameter whose value the config already holds under the
    same name (at any depth) is left out; any other is merged at the top level, so a value that
    differs (another setting of the same name) is recorded, not written over.
    """
    params = normalize_config(params)
    params.pop("_instantiator", None)  # Lightning's bookkeeping for LightningCLI, not a setting
    update = {key: value for key, value in params.items()
              if not any(_value_at(config, path) == value for path in _paths_named(config, key))}
    return merge_config(config, update)


def config_with_disk(path: Path, config: dict[str, Any], *, resume: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The config an attempt runs with, and (on a resume) what it changed. A ``config.yaml`` already in
    the folder (an earlier attempt's, or one written at setup by someone else: LightningCLI's
    SaveConfigCallback) is kept, with this attempt's values in force."""
    if not path.exists():
        return config, {}
    on_disk = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    changed = config_changes(on_disk, config) if resume else {}  # type: ignore[arg-type]
    return merge_config(on_disk, config), changed  # type: ignore[arg-type]


def _value_at(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for part in path:
        tree = tree[part]
    return tree


def _paths_named(tree: Mapping[str, Any], key: str, prefix: tuple[str, ...] = ()) -> Any:
    for name, value in tree.items():
        if name == key:
            yield (*prefix, name)
        elif isinstance(value, Mapping):
            yield from _paths_named(value, key, (*prefix, name))


def config_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"trainer.max_steps": {"was": 150, "now": 300}}`` for every leaf that ``after`` changes
    (secrets redacted); a resume records them in its attempt."""
    old, new = flatten(redact(dict(before))), flatten(redact(dict(after)))
    return {key: {"was": old[key], "now": value} for key, value in new.items() if key in old and old[key] != value}


def config_to_yaml(config: Mapping[str, Any]) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(redact(dict(config))))


def write_config_yaml(path: str | Path, config: Mapping[str, Any]) -> None:
    atomic_write_text(path, config_to_yaml(config))


def config_digest(config: Mapping[str, Any]) -> str:
    """Stable short hash of the (redacted) config, to tell runs with equal configs apart."""
    text = json.dumps(redact(dict(config)), sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def load_config(path: str | os.PathLike[str], overrides: list[str] | None = None) -> DictConfig:
    """Load a YAML config and merge ``key=value`` overrides (OmegaConf dotlist syntax)."""
    path = Path(path)
    try:
        cfg = OmegaConf.load(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except Exception as exc:  # noqa: BLE001 - yaml and OmegaConf raise many types; one line for all
        raise ConfigError(f"{path}: not a valid YAML config: {one_line(exc)}") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path}: the top level must be a mapping, got a list")
    if overrides:
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ConfigError(f"override {bad[0]!r} is not KEY=VALUE")
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    return cfg  # type: ignore[return-value]
