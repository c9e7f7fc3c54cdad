"""A pipeline file: named steps, each a command, run in dependency order by ``lt run --pipeline``.

Why a pure module: every mistake a pipeline file can hold (a cycle, an unknown step in ``after``, a
``{step.run_dir}`` that names a step which has not run yet, a missing command) must stop the pipeline
with one line naming the step and the fix *before* any step starts, so hours of training are never
spent on a chain whose third step cannot run. Parsing and checking are functions of the file's text,
tested without starting anything; :mod:`.pipeline_driver` runs the steps.

::

    name: arc-lora                # optional; default: the file's stem (names the state file and the exp_ids)
    root: runs                    # optional; the runs folder: signals in <root>/signals, state beside the runs
    steps:
      train:  {cmd: "python train.py --config cfg.yaml", health_time: 600, retries: 1}
      eval:   {cmd: "python eval.py --run {train.run_dir}", after: [train]}
      report: {cmd: "lt report {train.run_dir} -o {train.run_dir}/report.html", after: [eval]}

A command is run by ``/bin/sh -c`` (pipes, redirections and variables work). ``{step.run_dir}`` is the
run folder that step named in its run note (quoted for the shell); ``{step.exp_id}`` its exp_id;
``{step.last_ckpt}`` and ``{step.best_ckpt}`` the path of that run's newest checkpoint, or of the one best by
the metric its ModelCheckpoint monitors, from the run's ``checkpoints.json`` (the step given one records it,
with its hash, in its own run: :mod:`.checkpoint_refs`; on Slurm the step's job resolves them when it starts).
A reference must name a step the referring step runs after (directly or through others), so the value is
known when the command starts. Other braces are left as they are.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .sweep import SWEEP_KEYS, SweepSpec, Trial, format_value, parse_sweep, trial_command

__all__ = ["Step", "Pipeline", "parse_pipeline", "load_pipeline", "REFERENCE", "render_command", "refuse_control",
           "expand_sweeps", "trial_names", "check_slurm_references", "CHECKPOINT_FIELDS"]

REFERENCE = re.compile(r"\{([A-Za-z0-9_][A-Za-z0-9_-]*)\.([A-Za-z_]+)\}")
CHECKPOINT_FIELDS = ("last_ckpt", "best_ckpt")  # resolved from the step's run folder's checkpoint index
_FIELDS = ("run_dir", "exp_id", *CHECKPOINT_FIELDS)  # what {step.<field>} may name
_STEP_KEYS = ("cmd", "after", "health_time", "retries", "ntasks", "nodes", *SWEEP_KEYS)  # sweeps: see .sweep
_TOP_KEYS = ("name", "root", "steps")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class Step:
    """One step: its command template and what it waits for."""

    name: str
    cmd: str
    after: tuple[str, ...] = ()
    health_time: float | None = None
    retries: int = 0
    ntasks: int = 1  # Slurm: tasks of the step's job on each node; srun starts the command once per task
    nodes: int = 1  # Slurm: nodes of the step's job (a multi-node DDP run: ranks = nodes x ntasks)
    sweep: SweepSpec | None = None  # a step fanned out over overrides (grid: or random:)
    trial: Trial | None = None  # one trial of a sweep (in the pipeline expand_sweeps returns)

    @property
    def references(self) -> list[tuple[str, str]]:
        """The ``(step, field)`` pairs its command names, in order."""
        return REFERENCE.findall(self.cmd)


@dataclass(frozen=True)
class Pipeline:
    """Steps in a dependency order (each after everything it waits for), plus the names around them."""

    name: str
    root: str
    steps: dict[str, Step]
    order: tuple[str, ...]
    sweeps: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)  # sweep -> trials (expanded)

    def upstream(self, name: str) -> set[str]:
        """Every step ``name`` runs after, directly or through others."""
        seen: set[str] = set()
        todo = list(self.steps[name].after)
        while todo:
            dep = todo.pop()
            if dep not in seen:
                seen.add(dep)
                todo.extend(self.steps[dep].after)
        return seen

    def downstream(self, name: str) -> list[str]:
        """Every step that runs after ``name`` (directly or through others), in order."""
        return [s for s in self.order if name in self.upstream(s)]

    def exp_id(self, step: str) -> str:
        """The step's exp_id: its signals and run note are ``<root>/signals/<pipeline>_<step>.*``."""
        return f"{self.name}_{step}"


def _where(source: str, step: str | None = None) -> str:
    return f"{source}: step {step!r}" if step else source


def _step(source: str, name: Any, raw: Any) -> Step:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{source}: step name {name!r} is not usable; use letters, digits, '_' and '-'")
    where = _where(source, name)
    if isinstance(raw, str):
        raw = {"cmd": raw}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping like {{cmd: \"python train.py\"}}, got {type(raw).__name__}")
    unknown = [k for k in raw if k not in _STEP_KEYS]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; a step takes {', '.join(_STEP_KEYS)}")
    cmd = raw.get("cmd")
    if isinstance(cmd, list) and cmd and all(isinstance(a, (str, int, float)) for a in cmd):
        cmd = shlex.join(str(a) for a in cmd)
    if not isinstance(cmd, str) or not cmd.strip():
        raise ConfigError(f"{where}: no command; add cmd: \"python train.py ...\"")
    after = raw.get("after") or []
    if isinstance(after, str):
        after = [after]
    if not isinstance(after, list) or not all(isinstance(a, str) for a in after):
        raise ConfigError(f"{where}: after must be a list of step names, e.g. after: [train]")
    health_time = raw.get("health_time")
    if health_time is not None and (isinstance(health_time, bool) or not isinstance(health_time, (int, float))
                                    or not math.isfinite(health_time) or health_time <= 0):
        raise ConfigError(f"{where}: health_time must be a positive number of seconds, got {health_time!r}")
    retries = raw.get("retries", 0)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"{where}: retries must be a whole number >= 0, got {retries!r}")
    ntasks = raw.get("ntasks", 1)
    if isinstance(ntasks, bool) or not isinstance(ntasks, int) or ntasks < 1:
        raise ConfigError(f"{where}: ntasks must be a whole number >= 1 (Slurm tasks, one per rank), got {ntasks!r}")
    nodes = raw.get("nodes", 1)
    if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
        raise ConfigError(f"{where}: nodes must be a whole number >= 1 (Slurm nodes of the job), got {nodes!r}")
    return Step(name=name, cmd=cmd, after=tuple(dict.fromkeys(after)),
                health_time=float(health_time) if health_time is not None else None, retries=retries, ntasks=ntasks,
                nodes=nodes,
                sweep=_refuse_references(where, parse_sweep(where, raw)))


def _refuse_references(where: str, sweep: SweepSpec | None) -> SweepSpec | None:
    """A value is data, never a ``{step.run_dir}`` the command would later fill in from another step."""
    for key, value in (pair for trial in (sweep.trials if sweep else ()) for pair in trial):
        found = REFERENCE.search(format_value(value))
        if found:
            raise ConfigError(f"{where}: sweep value {value!r} of {key!r} holds the reference {found[0]}; references "
                              "go in cmd:, not in values")
    return sweep


def _order(source: str, steps: Mapping[str, Step]) -> tuple[str, ...]:
    """Depth-first order; a cycle is named step by step (``a -> b -> a``)."""
    done: list[str] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: placed

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = path[path.index(name):] + [name]
            raise ConfigError(f"{_where(source, name)}: the steps wait for each other ({' -> '.join(cycle)}); "
                              f"remove one of these from an after list")
        state[name] = 1
        for dep in steps[name].after:
            visit(dep, path + [name])
        state[name] = 2
        done.append(name)

    for name in steps:
        visit(name, [])
    return tuple(done)


def parse_pipeline(data: Any, *, source: str = "pipeline", default_name: str = "pipeline") -> Pipeline:
    """A checked :class:`Pipeline` from the YAML's data; :class:`ConfigError` (one line) otherwise."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping with a steps: key, got {type(data).__name__}")
    unknown = [k for k in data if k not in _TOP_KEYS]
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r}; a pipeline file takes {', '.join(_TOP_KEYS)}")
    name = data.get("name", default_name)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{source}: name {name!r} is not usable in file names; use letters, digits, '_' and '-'")
    root = data.get("root", "runs")
    if not isinstance(root, str) or not root:
        raise ConfigError(f"{source}: root must be a folder path, got {root!r}")
    refuse_control(f"{source}: root", root)
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, Mapping) or not raw_steps:
        raise ConfigError(f"{source}: no steps; add steps: {{train: {{cmd: \"python train.py\"}}}}")
    steps = {n: _step(source, n, raw) for n, raw in raw_steps.items()}
    for step in steps.values():
        for dep in step.after:
            if dep == step.name:
                raise ConfigError(f"{_where(source, step.name)}: waits for itself; remove {dep!r} from its after list")
            if dep not in steps:
                raise ConfigError(f"{_where(source, step.name)}: after names unknown step {dep!r}; "
                                  f"known steps: {', '.join(steps)}")
    pipeline = Pipeline(name=name, root=root, steps=steps, order=_order(source, steps))
    for step in steps.values():
        upstream = pipeline.upstream(step.name)
        for ref, field in step.references:
            token = "{" + f"{ref}.{field}" + "}"
            if field not in _FIELDS:
                raise ConfigError(f"{_where(source, step.name)}: {token} names no known field; "
                                  f"use {', '.join('{' + ref + '.' + f + '}' for f in _FIELDS)}")
            if ref not in steps:
                raise ConfigError(f"{_where(source, step.name)}: {token} names unknown step {ref!r}; "
                                  f"known steps: {', '.join(steps)}")
            if ref not in upstream:
                raise ConfigError(f"{_where(source, step.name)}: {token} names a step it does not run after; "
                                  f"add after: [{ref}]")
    return pipeline


def refuse_control(option: str, value: str | None) -> None:
    """A value written into an sbatch script holds no control character: a newline would start a shell
    line of its own and end ``#SBATCH`` parsing (the options after it, ``--array`` too, silently dropped)."""
    if value is not None and any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ConfigError(f"{option} {value!r}: control characters (a newline, a tab) cannot go into an sbatch "
                          "script; give the value on one line")


def load_pipeline(path: str | Path) -> Pipeline:
    """Read and check a pipeline file (YAML)."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the pipeline file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{path}{at}: {problem}; fix the YAML") from None
    return parse_pipeline(data, source=str(path), default_name=_stem_name(path))


def _stem_name(path: Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", path.stem.removesuffix(".pipeline")).strip("-")
    return stem or "pipeline"


def render_command(step: Step, values: Mapping[str, Mapping[str, str | None]]) -> str:
    """The step's command with every ``{ref.field}`` replaced (shell-quoted) from ``values[ref][field]``.

    A referenced value that is missing (the step ended without naming a run folder) raises
    :class:`ConfigError` naming both steps and the fix.
    """
    def replace(match: re.Match[str]) -> str:
        ref, field = match.group(1), match.group(2)
        value = values.get(ref, {}).get(field)
        if not value:
            why = values.get(ref, {}).get("no_run_dir")  # the step said why (a sweep: no trial had the metric)
            raise ConfigError(f"step {step.name!r}: {match.group(0)} is unknown: " + (why or (
                f"step {ref!r} named no run folder (give it a RunLogger or HealthGuard, which write"
                " <signals>/<exp_id>.run)")))
        return shlex.quote(value)

    return REFERENCE.sub(replace, step.cmd)


def _digest(spec: SweepSpec) -> str:
    return hashlib.sha1(json.dumps([list(t) for t in spec.trials], default=str).encode()).hexdigest()[:8]


def expand_sweeps(pipeline: Pipeline) -> Pipeline:
    """Each sweep step ``s`` becomes the trial steps ``s.0 .. s.<n-1>`` (after what ``s`` waited for) and ``s``
    itself, after every trial: the driver records its best trial there. Plain pipelines come back unchanged."""
    sweeping = [name for name in pipeline.order if pipeline.steps[name].sweep is not None]
    if not sweeping or pipeline.sweeps:
        return pipeline
    steps: dict[str, Any] = {}
    order: list[str] = []
    sweeps: dict[str, tuple[str, ...]] = {}
    for name in pipeline.order:
        step = pipeline.steps[name]
        spec = step.sweep
        if spec is None:
            steps[name] = step
            order.append(name)
            continue
        names = tuple(f"{name}.{i}" for i in range(len(spec.trials)))
        for i, (trial, overrides) in enumerate(zip(names, spec.trials, strict=True)):
            steps[trial] = replace(step, name=trial, cmd=trial_command(step.cmd, overrides, i), sweep=None,
                                   trial=Trial(name, i, overrides, spec.metric, spec.mode))
        steps[name] = replace(step, cmd=f"sweep of {len(names)} trials ({spec.kind} {_digest(spec)}): {step.cmd}",
                              after=names, health_time=None, retries=0)
        sweeps[name] = names
        order += [*names, name]
    return replace(pipeline, steps=steps, order=tuple(order), sweeps=sweeps)


def trial_names(pipeline: Pipeline, names: Sequence[str]) -> list[str]:
    """``names`` with the trials of every sweep among them added (``--from`` a sweep runs its trials again)."""
    out = list(names)
    for name in names:
        out += [t for t in pipeline.sweeps.get(name, ()) if t not in out]
    return out


def check_slurm_references(pipeline: Pipeline) -> None:
    """On Slurm a sweep is one job array and no job picks its best trial: ``{sweep.run_dir}`` (and a checkpoint of
    it) is refused there."""
    for step in pipeline.steps.values():
        for ref, what in step.references:
            if what in ("run_dir", *CHECKPOINT_FIELDS) and ref in pipeline.steps and pipeline.steps[ref].sweep:
                raise ConfigError(f"step {step.name!r}: {{{ref}.{what}}} names sweep {ref!r}, which has one run "
                                  f"folder per trial and no best one on Slurm; use {{{ref}.exp_id}} (the trials' tag, "
                                  "e.g. lt report --filter tag=...) or run without --slurm")
