"""Sweeps: one pipeline step fanned out over config overrides, one trial (one run) per combination.

Why pure: a sweep of forty trials with a typo in its third distribution must stop before the first
trial starts, with one line naming the step, the key and the fix. Expansion is a function of the
pipeline file's values (a random sweep draws from its own seeded generator), so the same file always
gives the same trials and a re-run of the pipeline skips the trials already done.

::

    steps:
      train:
        cmd: "python train.py --config cfg.yaml"       # each trial: the command + key=value overrides
        grid: {model.lr: [1.0e-3, 1.0e-2], model.hidden: [8, 16]}      # cartesian product: 4 trials
        metric: val/loss                               # optional: what the summary table ranks by
        mode: min                                      # optional: min or max (default: the run's own)
      tune:
        cmd: "python train.py {overrides} --fast"      # {overrides} places them; {trial} is the index
        random:
          count: 4                                     # trials
          seed: 0                                      # optional (default 0)
          params:
            model.lr: {loguniform: [1.0e-4, 1.0e-1]}   # also uniform: [lo, hi]
            model.hidden: {choice: [8, 16, 32]}        # also a plain list
            model.layers: {randint: [1, 4]}            # whole numbers, both ends included

A trial's overrides are OmegaConf dotlist words (``model.lr=0.001``, what ``from_config`` and
``lt-demo`` take after the command), shell-quoted, appended to the command unless it holds
``{overrides}``. Trial ``i`` of step ``train`` is the step ``train.<i>`` (exp_id ``<pipeline>_train.<i>``);
``train`` itself is done when every trial is, and ``{train.run_dir}`` is then the best trial's folder.
Every trial's run is tagged with the sweep's name ``<pipeline>_<step>`` (``LIGHTNING_TRACK_TAGS``) and
records ``{name, trial, overrides, metric, mode}`` as ``summary.json``'s ``sweep`` (``LIGHTNING_TRACK_SWEEP``).
"""

from __future__ import annotations

import itertools
import json
import math
import random
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..vocabulary import ENV_SWEEP, ENV_TAGS

__all__ = ["SweepSpec", "Trial", "parse_sweep", "grid_trials", "random_trials", "override_words", "trial_command",
           "trial_env", "SWEEP_KEYS", "DISTRIBUTIONS"]

SWEEP_KEYS = ("grid", "random", "metric", "mode")
DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")
_RANDOM_KEYS = ("count", "seed", "params")
_KEY = re.compile(r"^[A-Za-z_+~][A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-]+)*$")  # a dotlist key
Overrides = tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class SweepSpec:
    """The trials of one sweep step: each an ordered tuple of ``(key, value)`` overrides."""

    kind: str  # "grid" or "random"
    trials: tuple[Overrides, ...]
    metric: str | None = None
    mode: str | None = None


@dataclass(frozen=True)
class Trial:
    """What a trial step knows of its sweep."""

    sweep: str  # the sweep step's name (the sweep's own name is <pipeline>_<sweep>)
    index: int
    overrides: Overrides
    metric: str | None = None
    mode: str | None = None


def _check_key(where: str, section: str, key: Any) -> str:
    if not isinstance(key, str) or not _KEY.match(key):
        raise ConfigError(f"{where}: {section} key {key!r} is not a config key; write it dotted, e.g. model.lr")
    return key


def grid_trials(where: str, grid: Any) -> list[Overrides]:
    """The cartesian product of the grid's lists, the first key varying slowest."""
    if not isinstance(grid, Mapping) or not grid:
        raise ConfigError(f"{where}: grid is empty; give lists of values, e.g. grid: {{model.lr: [1.0e-3, 1.0e-2]}}")
    axes = []
    for key, values in grid.items():
        _check_key(where, "grid", key)
        values = values if isinstance(values, list) else [values]
        if not values:
            raise ConfigError(f"{where}: grid key {key!r} has no values; give a list, e.g. {key}: [1, 2]")
        axes.append([(key, v) for v in values])
    return [tuple(combo) for combo in itertools.product(*axes)]


def _bounds(where: str, key: str, name: str, spec: Any, whole: bool = False) -> tuple[float, float]:
    kind = "whole numbers" if whole else "numbers"
    ok = isinstance(spec, list) and len(spec) == 2 and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in spec)
    if ok and whole:
        ok = all(float(x).is_integer() for x in spec)
    if not ok or spec[0] > spec[1] or (not whole and spec[0] == spec[1]):
        raise ConfigError(f"{where}: random param {key!r}: {name} takes [low, high], two {kind} with low < high, "
                          f"got {spec!r}")
    if name == "loguniform" and spec[0] <= 0:
        raise ConfigError(f"{where}: random param {key!r}: loguniform needs low > 0, got {spec!r}; use uniform")
    return spec[0], spec[1]


def _sampler(where: str, key: str, spec: Any) -> Any:
    """A function of a ``random.Random`` drawing one value."""
    if isinstance(spec, list):
        spec = {"choice": spec}
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise ConfigError(f"{where}: random param {key!r}: give one distribution, e.g. {{loguniform: [1.0e-4, 0.1]}} "
                          f"or {{choice: [8, 16]}}; got {spec!r}")
    (name, arg), = spec.items()
    if name not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: random param {key!r}: unknown distribution {name!r}; "
                          f"use one of {', '.join(DISTRIBUTIONS)}")
    if name == "choice":
        if not isinstance(arg, list) or not arg:
            raise ConfigError(f"{where}: random param {key!r}: choice needs a non-empty list, got {arg!r}")
        return lambda rng: arg[rng.randrange(len(arg))]
    lo, hi = _bounds(where, key, name, arg, whole=name == "randint")
    if name == "randint":
        return lambda rng: rng.randint(int(lo), int(hi))
    if name == "uniform":
        return lambda rng: float(f"{rng.uniform(lo, hi):.6g}")
    return lambda rng: float(f"{math.exp(rng.uniform(math.log(lo), math.log(hi))):.6g}")


def random_trials(where: str, spec: Any) -> list[Overrides]:
    """``count`` draws from a generator seeded with ``seed``, each param in the file's order."""
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: random must be a mapping with count, seed and params, got {spec!r}")
    unknown = [k for k in spec if k not in _RANDOM_KEYS]
    if unknown:
        raise ConfigError(f"{where}: random has unknown key {unknown[0]!r}; it takes {', '.join(_RANDOM_KEYS)}")
    count, seed, params = spec.get("count"), spec.get("seed", 0), spec.get("params")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"{where}: random count must be a whole number >= 1, got {count!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"{where}: random seed must be a whole number, got {seed!r}")
    if not isinstance(params, Mapping) or not params:
        raise ConfigError(f"{where}: random has no params; add params: {{model.lr: {{loguniform: [1.0e-4, 0.1]}}}}")
    samplers = [(_check_key(where, "random param", k), _sampler(where, k, v)) for k, v in params.items()]
    rng = random.Random(seed)
    return [tuple((key, draw(rng)) for key, draw in samplers) for _ in range(count)]


def parse_sweep(where: str, raw: Mapping[str, Any]) -> SweepSpec | None:
    """The step's sweep (its ``grid:`` or ``random:``, ``metric:``, ``mode:``), or None for a plain step."""
    grid, rand = raw.get("grid"), raw.get("random")
    metric, mode = raw.get("metric"), raw.get("mode")
    if grid is None and rand is None:
        if metric is not None or mode is not None:
            raise ConfigError(f"{where}: metric and mode rank a sweep's trials; add grid: or random:, or remove them")
        return None
    if grid is not None and rand is not None:
        raise ConfigError(f"{where}: give grid: or random:, not both (split it into two steps)")
    if metric is not None and (not isinstance(metric, str) or not metric):
        raise ConfigError(f"{where}: metric must be a metric name, e.g. metric: val/loss; got {metric!r}")
    if mode is not None and mode not in ("min", "max"):
        raise ConfigError(f"{where}: mode must be min or max, got {mode!r}")
    trials = grid_trials(where, grid) if grid is not None else random_trials(where, rand)
    return SweepSpec(kind="grid" if grid is not None else "random", trials=tuple(trials), metric=metric, mode=mode)


def format_value(value: Any) -> str:
    """A value as OmegaConf's dotlist reads it back (``true``, ``null``, ``0.001``, ``[8, 16]``)."""
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value) if not isinstance(value, float) else repr(value)


def override_words(overrides: Overrides) -> list[str]:
    """``["model.lr=0.001", "model.hidden=8"]``."""
    return [f"{key}={format_value(value)}" for key, value in overrides]


def trial_command(cmd: str, overrides: Overrides, index: int) -> str:
    """The command of one trial: ``{overrides}`` and ``{trial}`` filled in, else the overrides appended."""
    words = " ".join(shlex.quote(w) for w in override_words(overrides))
    if "{overrides}" not in cmd:
        cmd = f"{cmd} {{overrides}}"
    return cmd.replace("{overrides}", words).replace("{trial}", str(index))


def trial_env(sweep_name: str, trial: Trial) -> dict[str, str]:
    """The environment a trial's command gets (RunLogger records both, see :mod:`lightning_track.run.launched`)."""
    record = {"name": sweep_name, "trial": trial.index, "overrides": dict(trial.overrides)}
    record.update({k: v for k, v in (("metric", trial.metric), ("mode", trial.mode)) if v})
    return {ENV_TAGS: sweep_name, ENV_SWEEP: json.dumps(record, sort_keys=False)}
