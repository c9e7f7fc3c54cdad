"""Build the RunLogger and the callbacks from a YAML/OmegaConf config (``lightning_track.from_config``).

(The module is not called ``from_config``: a submodule of that name would shadow the function
``lightning_track.from_config`` as soon as it is imported.)

Why: researchers keep every knob of a run in one YAML file (``configs/default.yaml`` lists them
all, with defaults). ``from_config(cfg)`` turns its ``logger:`` and ``callbacks:`` sections into
objects, rejecting unknown keys with a one-line error naming the key, so a typo never silently
falls back to a default. ``trainer_kwargs(cfg)`` does the same for ``trainer:`` and resolves
``precision: auto`` with :func:`lightning_track.run.hardware.auto_precision`.

Values are checked against the type annotations of the constructor they go to (``L.Trainer``,
``RunLogger``, each callback) before anything is built: a command-line override such as
``trainer.max_steps=abc`` arrives as a string, and the constructor would fail deep inside Lightning
with a traceback, after the run folder exists. :func:`check_section` says instead, in one line,
which key, which value and what type was expected, and nothing is created.

Callbacks are configured by name, each switchable off::

    callbacks:
      step_checkpoint: {every_n_steps: 1, start_step: 76}
      health_guard: {enabled: false}
      lr_monitor: {logging_interval: step}
      my_callback: {class_path: my_package.MyCallback, init_args: {}}

Callbacks in :data:`DEFAULT_CALLBACKS` (Lightning's ``LearningRateMonitor``) are built even when the
section does not name them, because a run whose learning rate is not a metric cannot be read later;
``lr_monitor: false`` switches it off, and a ``class_path`` entry of the same class replaces it.
"""

from __future__ import annotations

import collections.abc
import importlib
import inspect
import os
import pathlib
import types
import typing
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..errors import ConfigError, one_line
from ..run.config import load_config

__all__ = ["from_config", "build_logger", "build_callbacks", "trainer_kwargs", "CALLBACKS",
           "DEFAULT_CALLBACKS", "check_section", "check_types"]

# Config name -> "module:Class" (imported on use, so a config without a callback never imports it).
CALLBACKS: dict[str, str] = {
    "step_checkpoint": "lightning_track.callbacks.step_checkpoint:StepCheckpoint",
    "health_guard": "lightning_track.callbacks.health:HealthGuard",
    "final_model": "lightning_track.callbacks.final_model:FinalModelExport",
    "batch_tracker": "lightning_track.callbacks.batch_tracking:BatchTracker",
    "preemption": "lightning_track.callbacks.preemption:PreemptionHandler",
    "lr_monitor": "lightning.pytorch.callbacks:LearningRateMonitor",
}
# Built with their defaults when a config does not mention them (switch off with ``name: false``).
DEFAULT_CALLBACKS: tuple[str, ...] = ("lr_monitor",)
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


# -- value types -------------------------------------------------------------------------------
# What a config value (YAML or a command-line override: str, int, float, bool, None, list, dict) may
# be for an annotation. Only a clear mismatch is refused; an annotation that cannot be read or judged
# (a string that does not resolve, a TypeVar, a Callable, a Protocol) accepts anything.
_PATH_TYPES = (os.PathLike, pathlib.PurePath)
_SEQUENCES = (list, tuple, set, frozenset, collections.abc.Sequence, collections.abc.MutableSequence,
              collections.abc.Iterable, collections.abc.Collection, collections.abc.Set)
_MAPPINGS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)
_UNKNOWN = object()


def _hints(cls: type) -> dict[str, Any]:
    """``cls.__init__``'s parameter annotations, resolved; one that cannot be resolved is Any."""
    init = cls.__init__
    try:
        return typing.get_type_hints(init)
    except Exception:  # noqa: BLE001 - a name only imported for type checkers: resolve one by one
        pass
    namespace = getattr(inspect.unwrap(init), "__globals__", {})
    hints: dict[str, Any] = {}
    for name, param in inspect.signature(init).parameters.items():
        annotation = param.annotation
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, dict(namespace))  # noqa: S307 - the class's own annotation text
            except Exception:  # noqa: BLE001
                annotation = Any
        hints[name] = annotation
    return hints


def _accepts(annotation: Any, value: Any) -> bool:
    """Whether ``value`` fits ``annotation`` (Python's rules: an int is a float, a bool an int)."""
    if annotation is Any or annotation is inspect.Parameter.empty or annotation is _UNKNOWN:
        return True
    if annotation is None or annotation is type(None):
        return value is None
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return any(_accepts(arg, value) for arg in args)
    if origin is typing.Literal:
        return any(value == arg and isinstance(value, bool) == isinstance(arg, bool) for arg in args)
    if origin is not None:
        if origin in _MAPPINGS:
            return isinstance(value, Mapping) and (
                len(args) != 2 or all(_accepts(args[1], v) for v in value.values()))
        if origin in _SEQUENCES:
            if not isinstance(value, (list, tuple, set, frozenset)):
                return False
            if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
                return len(args) == len(value) and all(_accepts(a, v) for a, v in zip(args, value, strict=True))
            return not args or all(_accepts(args[0], v) for v in value)
        annotation = origin  # os.PathLike[str], type[X], ...: judged by the class
    if not isinstance(annotation, type):
        return True
    if annotation is float:
        return isinstance(value, (int, float))
    if annotation is complex:
        return isinstance(value, (int, float, complex))
    if issubclass(annotation, _PATH_TYPES):
        return isinstance(value, (str, *_PATH_TYPES))
    try:
        return isinstance(value, annotation)
    except TypeError:  # a Protocol without runtime_checkable, and the like
        return True


def _describe(annotation: Any) -> str:
    """``an int``, ``a number``, ``an int or null``, ``one of 'min', 'max'``, ``a list of a string``."""
    if annotation is None or annotation is type(None):
        return "null"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        literals = [v for arg in args if typing.get_origin(arg) is typing.Literal for v in typing.get_args(arg)]
        parts = [_describe(arg) for arg in args if typing.get_origin(arg) is not typing.Literal]
        if literals:
            parts.insert(0, _describe(typing.Literal[tuple(literals)]))
        named = [p for p in dict.fromkeys(parts) if p != "null"]
        return " or ".join(named) + (" or null" if "null" in parts else "")
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(arg) for arg in args)
    if origin in _MAPPINGS:
        return "a mapping"
    if origin in _SEQUENCES:
        fixed = origin is tuple and not (len(args) == 2 and args[1] is Ellipsis)
        return f"a list (each item {_describe(args[0])})" if args and not fixed else "a list"
    cls = origin if origin is not None else annotation
    names = {int: "an int", float: "a number", bool: "true or false", str: "a string", list: "a list",
             dict: "a mapping"}
    if cls in names:
        return names[cls]
    if isinstance(cls, type) and issubclass(cls, _PATH_TYPES):
        return "a path"
    name = getattr(cls, "__name__", str(cls))
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"


def check_types(cls: type, kwargs: Mapping[str, Any], where: str) -> None:
    """Refuse a value that does not fit ``cls.__init__``'s annotation for its key, in one line:
    ``trainer.max_steps: 'abc' is not an int``."""
    hints = _hints(cls)
    for key, value in kwargs.items():
        annotation = hints.get(key, _UNKNOWN)
        if not _accepts(annotation, value):
            shown = repr(value)
            shown = shown if len(shown) <= 80 else shown[:79] + "…"
            raise ConfigError(f"{where}.{key}: {shown} is not {_describe(annotation)}")


def check_section(cls: type, kwargs: Mapping[str, Any], where: str) -> None:
    """Every key of ``kwargs`` is a parameter of ``cls`` and every value fits its type."""
    _check_keys(cls, kwargs, where)
    check_types(cls, kwargs, where)


def _construct(cls: type, kwargs: dict[str, Any], where: str) -> Any:
    check_section(cls, kwargs, where)
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
    switches one off, ``true`` or ``{}`` uses its defaults. Names in :data:`DEFAULT_CALLBACKS` the
    section leaves out are added with their defaults, unless a ``class_path`` entry built the same class.
    """
    entries = _plain(section, "callbacks") if section is not None else {}
    if not isinstance(entries, dict):
        raise ConfigError(f"callbacks: expected a mapping of name -> arguments, got {type(entries).__name__}")
    built = _build_entries(entries)
    for name in DEFAULT_CALLBACKS:
        cls = _import(CALLBACKS[name], f"callbacks.{name}")
        if name not in entries and not any(type(c) is cls for c in built):
            built.append(_construct(cls, {}, f"callbacks.{name}"))
    return built


def _build_entries(entries: dict[str, Any]) -> list[Any]:
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

    from ..run.hardware import auto_precision

    section = cfg.get("trainer") if isinstance(cfg, (Mapping, DictConfig)) else None
    kwargs = _plain(section, "trainer") if section is not None else {}
    if not isinstance(kwargs, dict):
        raise ConfigError(f"trainer: expected a mapping of Trainer arguments, got {type(kwargs).__name__}")
    _check_keys(L.Trainer, kwargs, "trainer")
    if kwargs.get("precision") == "auto":
        kwargs["precision"] = auto_precision()
    check_types(L.Trainer, kwargs, "trainer")
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
