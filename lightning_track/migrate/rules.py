"""Rename rules (``configs/migrate_rules.yaml``): legacy config keys, tracking field aliases, metric names.

Kept in YAML so a user extends them without touching code; loaded with OmegaConf.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ..errors import ConfigError

__all__ = ["MigrateRules", "load_rules", "default_rules_path", "apply_config_rules"]

PROJECT_RULES = Path("configs") / "migrate_rules.yaml"


@dataclass
class MigrateRules:
    config: list[tuple[str, str]] = field(default_factory=list)
    aliases: dict[str, list[str]] = field(default_factory=dict)
    tracking_metrics: dict[str, str] = field(default_factory=dict)
    history_metrics: dict[str, str] = field(default_factory=dict)
    history_prefixes: dict[str, str] = field(default_factory=dict)
    path: str = ""

    def history_metric_name(self, key: str) -> str:
        """The metric name of a ``log_history`` key: explicit rule, then prefix rule, then ``train/<key>``."""
        if key in self.history_metrics:
            return self.history_metrics[key]
        for prefix, replacement in self.history_prefixes.items():
            if key.startswith(prefix) and len(key) > len(prefix):
                return replacement + key[len(prefix):]
        return f"train/{key}"


def default_rules_path() -> Path:
    """``./configs/migrate_rules.yaml`` when the user has one, else the copy shipped in the package."""
    if PROJECT_RULES.is_file():
        return PROJECT_RULES
    return Path(str(resources.files("lightning_track") / "resources" / "migrate_rules.yaml"))


def _mapping(node: Any, path: Path, key: str) -> dict[str, Any]:
    if node is None:
        return {}
    if not isinstance(node, dict):
        raise ConfigError(f"{path}: '{key}' must be a mapping, got {type(node).__name__}")
    return {str(k): v for k, v in node.items()}


def load_rules(path: str | os.PathLike[str] | None = None) -> MigrateRules:
    """Load and validate the rules file; errors name the file and the field."""
    path = Path(path) if path is not None else default_rules_path()
    if not path.is_file():
        raise ConfigError(f"rules file {path} does not exist")
    try:
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as exc:  # noqa: BLE001 - OmegaConf/YAML raise many types; report them in one line
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    rules = MigrateRules(path=str(path.resolve()))
    for i, rule in enumerate(data.get("config") or []):
        if not (isinstance(rule, dict) and isinstance(rule.get("from"), str) and isinstance(rule.get("to"), str)):
            raise ConfigError(f"{path}: config[{i}] must be {{from: dotted.key, to: dotted.key}}, got {rule!r}")
        rules.config.append((rule["from"], rule["to"]))
    for canonical, names in _mapping(data.get("batch_tracking_aliases"), path, "batch_tracking_aliases").items():
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"{path}: batch_tracking_aliases.{canonical} must be a list of field names")
        rules.aliases[canonical] = list(names)
    for key, target in (("batch_tracking_metrics", rules.tracking_metrics), ("log_history_metrics",
                        rules.history_metrics), ("log_history_prefixes", rules.history_prefixes)):
        for name, value in _mapping(data.get(key), path, key).items():
            if not isinstance(value, str):
                raise ConfigError(f"{path}: {key}.{name} must be a string, got {value!r}")
            target[name] = value
    return rules


def _pop(tree: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    parts = dotted.split(".")
    node: Any = tree
    for part in parts[:-1]:
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    if not isinstance(node, dict) or parts[-1] not in node:
        return False, None
    return True, node.pop(parts[-1])


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def _drop_emptied(tree: dict[str, Any], original: dict[str, Any]) -> None:
    """Remove sections that became empty through moves (sections empty in the legacy file stay)."""
    for key in list(tree):
        value = tree[key]
        if isinstance(value, dict):
            _drop_emptied(value, original.get(key) if isinstance(original.get(key), dict) else {})
            if not value and original.get(key):
                del tree[key]


def apply_config_rules(legacy: dict[str, Any], rules: MigrateRules) -> tuple[dict[str, Any], list[str]]:
    """The new config from the nested legacy one; returns it and the rules that applied (``from -> to``)."""
    tree = copy.deepcopy(legacy)
    applied = []
    for source, target in rules.config:
        found, value = _pop(tree, source)
        if found:
            _set(tree, target, value)
            applied.append(f"{source} -> {target}")
    _drop_emptied(tree, legacy)
    return tree, applied
