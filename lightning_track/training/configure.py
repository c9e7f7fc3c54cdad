"""Build the RunLogger and the callbacks from a YAML/OmegaConf config (``lightning_track.from_config``).

(The module is not called ``from_config``: a submodule of that name would shadow the function
``lightning_track.from_config`` as soon as it is imported.)

Why: researchers keep every knob of a run in one YAML file (``configs/default.yaml`` lists them
all, with defaults). ``from_config(cfg)`` turns its ``logger:`` and ``callbacks:`` sections into
objects, rejecting unknown keys with a one-line error naming the key, so a typo never silently
falls back to a default. ``trainer_kwargs(cfg)`` does the same for ``trainer:`` and resolves
``precision: auto`` with :func:`lightning_track.training.hardware.auto_precision`.

Callbacks are configured by name, each switchable off::

    callbacks:
      step_checkpoint: {every_n_steps: 1, start_step: 76}
      health_guard: {enabled: false}
      lr_monitor: {class_path: lightning.pytorch.callbacks.LearningRateMonitor, init_args: {}}
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..errors import ConfigError, one_line
from ..run.config import load_config

__all__ = ["from_config", "build_logger", "build_callbacks", "trainer_kwargs", "load_config", "CALLBACKS",
           "ConfigError"]

# Config name -> "module:Class" (imported on use, so a config without a callback never imports it).
CALLBACKS: dict[str, str] = {
    "step_checkpoint": "lightning_track.callbacks.step_checkpoint:StepCheckpoint",
    "health_guard": "lightning_track.callbacks.health:HealthGuard",
    "final_model": "lightning_track.callbacks.final_model:FinalModelExport",
    "batch_tracker": "lightning_track.callbacks.batch_tracking:BatchTracker",
    "preemption": "lightning_track.callbacks.preemption:PreemptionHandler",
}
ENABLED = "enabled"  # the switch every callback section may carry; not passed to the class
_UNSET: Any = object()


def _plain(cfg: Any, where: str) -> Any:
    """A resolved plain container; a missing mandatory value (``???``) names its key."""
    if isinstance(cfg, (str, os.PathLike)):
        cfg = load_config(cfg)
    if isinstance(cfg, Mapping) and not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(dict(cfg))
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None)
        name = f"{where}.{key}" if key and where else (key or where or "config")
        raise ConfigError(f"{name}: {one_line(exc).split(' full_key:')[0]}") from None


def _import(spec: str, where: str) -> type:
    module_name, sep, attr = spec.partition(":")
    if not sep:
        module_name, _, attr = spec.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"{where}: cannot import {spec!r}: {one_line(exc)}") from None


def parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The keyword parameters of ``cls.__init__`` (what a config section may set)."""
    params = inspect.signature(cls.__init__).parameters
    return {name: p for name, p in params.items()
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def _check_keys(cls: type, kwargs: Mapping[str, Any], where: str) -> None:
    known = parameters(cls)
    takes_var_kwargs = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values())
    for key in kwargs:
        if key not in known and not takes_var_kwargs:
            raise ConfigError(f"{where}.{key}: not a parameter of {cls.__name__} (known: {', '.join(known)})")


def _construct(cls: type, kwargs: dict[str, Any], where: str) -> Any:
    _check_keys(cls, kwargs, where)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {one_line(exc)}") from None


def build_logger(section: Any, config: Any = None) -> Any:
    """``RunLogger(**section)``; ``config`` (the whole run config) goes to ``config.yaml``."""
    from ..run.logger import RunLogger

    kwargs = _plain(section, "logger")
    if not isinstance(kwargs, dict):
        raise ConfigError(f"logger: expected a mapping of RunLogger arguments, got {type(kwargs).__name__}")
    if config is not None and "config" not in kwargs:
        kwargs["config"] = config
    for key in ("dataset", "method"):
        if key not in kwargs:
            raise ConfigError(f"logger.{key}: required (the run folder is <root>/<dataset>_<method>_<time>)")
    return _construct(RunLogger, kwargs, "logger")


def build_callbacks(section: Any) -> list[Any]:
    """The enabled callbacks of a ``callbacks:`` section, in the order written.

    Each entry is ``name: {args}`` for a name in :data:`CALLBACKS`, or any name with
    ``class_path`` (+ ``init_args``) like LightningCLI; ``false``/``null``/``enabled: false``
    switches one off, ``true`` or ``{}`` uses its defaults.
    """
    if section is None:
        return []
    entries = _plain(section, "callbacks")
    if not isinstance(entries, dict):
        raise ConfigError(f"callbacks: expected a mapping of name -> arguments, got {type(entries).__name__}")
    built: list[Any] = []
    for name, args in entries.items():
        where = f"callbacks.{name}"
        if args is None or args is False:
            continue
        if args is True:
            args = {}
        if not isinstance(args, dict):
            raise ConfigError(f"{where}: expected a mapping of arguments, true or false, got {args!r}")
        args = dict(args)
        enabled = args.pop(ENABLED, True)
        if not isinstance(enabled, bool):
            raise ConfigError(f"{where}.{ENABLED}: must be true or false, got {enabled!r}")
        if not enabled:
            continue
        if "class_path" in args:
            cls = _import(str(args.pop("class_path")), f"{where}.class_path")
            init_args = args.pop("init_args", None) or {}
            if args:
                raise ConfigError(f"{where}.{next(iter(args))}: with class_path, put arguments under init_args")
            built.append(_construct(cls, dict(init_args), f"{where}.init_args"))
            continue
        if name not in CALLBACKS:
            raise ConfigError(
                f"{where}: unknown callback (known: {', '.join(CALLBACKS)}; or give class_path and init_args)"
            )
        built.append(_construct(_import(CALLBACKS[name], where), args, where))
    return built


def trainer_kwargs(cfg: Any) -> dict[str, Any]:
    """The ``trainer:`` section as ``L.Trainer`` keyword arguments; ``precision: auto`` is resolved."""
    import lightning as L

    from .hardware import auto_precision

    section = cfg.get("trainer") if isinstance(cfg, (Mapping, DictConfig)) else None
    kwargs = _plain(section, "trainer") if section is not None else {}
    if not isinstance(kwargs, dict):
        raise ConfigError(f"trainer: expected a mapping of Trainer arguments, got {type(kwargs).__name__}")
    _check_keys(L.Trainer, kwargs, "trainer")
    if kwargs.get("precision") == "auto":
        kwargs["precision"] = auto_precision()
    return kwargs


def from_config(cfg: Any, *, config: Any = _UNSET) -> tuple[Any, list[Any]]:
    """``(RunLogger, callbacks)`` from a config's ``logger:`` and ``callbacks:`` sections.

    ``cfg`` is a DictConfig, a mapping or a YAML path. ``config`` is what the run records in
    ``config.yaml``; by default the whole ``cfg`` (resolved), so the run folder describes itself.
    """
    if isinstance(cfg, (str, os.PathLike)):
        cfg = load_config(cfg)
    if isinstance(cfg, Mapping) and not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(dict(cfg))
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"config: expected a mapping, DictConfig or YAML path, got {type(cfg).__name__}")
    if "logger" not in cfg:
        raise ConfigError("logger: the config has no 'logger' section (RunLogger arguments: dataset, method, ...)")
    callbacks = build_callbacks(cfg.get("callbacks"))
    record = _plain(cfg, "") if config is _UNSET else config
    logger = build_logger(cfg.logger, config=record)
    return logger, callbacks
