"""Metric sinks. Each format lives in its own module ``lightning_track.sinks.<name>`` that
defines ``SINK``; adding a sink is adding a module, nothing else changes."""

from __future__ import annotations

import importlib

from ..errors import ConfigError
from .base import Sink, SinkContext

__all__ = ["Sink", "SinkContext", "load_sink"]


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
