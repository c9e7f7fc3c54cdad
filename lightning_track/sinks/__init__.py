"""Metric sinks. Each format lives in its own module ``lightning_track.sinks.<name>`` that
defines ``SINK``; adding a sink is adding a module, nothing else changes."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import ConfigError
from .base import Sink, SinkContext

__all__ = ["Sink", "SinkContext", "load_sink", "check_sinks"]

_NEED_THEIR_SINK = ("mlflow",)  # sinks whose settings (mlflow_uri) mean nothing unless the sink is in sinks


def load_sink(spec: str | Sink) -> Sink:
    """A sink instance from a name (``"tensorboard"``, ``"swanlab"``, ...) or an instance."""
    if isinstance(spec, Sink):
        return spec
    if not isinstance(spec, str) or not spec.isidentifier():
        raise ConfigError(f"unknown sink {spec!r}: give a sink name such as 'tensorboard' or a Sink instance")
    try:
        module = importlib.import_module(f"{__name__}.{spec}")
    except ModuleNotFoundError as exc:
        if exc.name == f"{__name__}.{spec}":
            raise ConfigError(f"unknown sink {spec!r}: no module lightning_track.sinks.{spec}") from None
        raise
    factory = getattr(module, "SINK", None)
    if factory is None:  # a helper module such as ``base``: not a format
        raise ConfigError(f"unknown sink {spec!r}: lightning_track.sinks.{spec} is not a sink (it defines no SINK)")
    return factory()


def check_sinks(specs: Iterable[str | Sink], options: Mapping[str, Mapping[str, Any]], *, hosted: bool) -> None:
    """Every sink of ``specs`` known and its ``options`` (by sink name) usable, before the run folder exists.

    ``hosted``: named sinks run in the sink host process; a ``hosted_only`` sink needs it.
    """
    names = set()
    for spec in specs:
        sink = load_sink(spec)
        if isinstance(spec, str):
            names.add(spec)
            type(sink).check_options(dict(options.get(spec) or {}))
        if sink.hosted_only and not (hosted and isinstance(spec, str)):
            raise ConfigError(f"sink {sink.name!r} runs in the sink host process: give it by name and leave "
                              "sink_process=True")
    for name in _NEED_THEIR_SINK:
        given = {key: value for key, value in (options.get(name) or {}).items() if value is not None}
        if given and name not in names:
            raise ConfigError(f"{', '.join(f'{name}_{key}' for key in given)} is set but {name!r} is not in sinks; "
                              f"add it to sinks (e.g. sinks=('tensorboard', {name!r}))")
