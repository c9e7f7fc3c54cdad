"""A pipeline as Slurm jobs: one readable sbatch script per step, chained with ``--dependency=afterok``.

Why scripts a person can read: on a cluster the script is what an administrator, a colleague or the
user in six months looks at when a job misbehaves; ``lt run --pipeline FILE --slurm --dry-run`` prints
exactly what would be submitted. Why ``sbatch`` itself rather than a library: its command line is the
stable interface every Slurm site has, and the chain needs nothing more than ``--parsable`` and
``--dependency``.

Each job runs its step under ``lt-run`` (``python -m lightning_track.cli.run``, with the submitting
interpreter, so the job does not depend on an activated environment): health-gated, console captured,
post-processed, the exp_id ``<pipeline>_<step>`` and the signals in ``<root>/signals`` as locally. A
``{step.run_dir}`` becomes ``$(cat <root>/signals/<pipeline>_<step>.run)``, read when the job starts,
after the step it names has finished (``afterok``); a ``{step.last_ckpt}`` / ``{step.best_ckpt}`` becomes
``"$LIGHTNING_TRACK_CKPT_<step>_<field>"``, exported by the job's first lines from that run's
``checkpoints.json`` (:func:`.checkpoint_refs.job_checkpoints`; a missing one fails the job with one line, which
the pipeline's state shows). Every job gets ``--signal=B:TERM@<grace>`` (the
batch shell ``exec``\\ s lt-run, which forwards SIGTERM to the command so a ``PreemptionHandler`` can
checkpoint before the time limit or a preemption) and ``--requeue`` with ``--open-mode=append``. A command
stopped that way with a resumable checkpoint makes lt-run requeue the job itself (``--slurm-requeue``, see
:mod:`.slurm_job`: Slurm brings back only the jobs it requeues itself); a requeued job (``SLURM_RESTART_COUNT``
> 0) exports ``LIGHTNING_TRACK_RUN_DIR`` from the run note its first start wrote, so its RunLogger (``resume``
true when restarted) continues that run folder. A step with ``ntasks: N`` runs its command under ``srun``.
``--kill-on-invalid-dep=yes`` cancels the dependants of a failed step instead of leaving them pending.

:func:`sbatch_scripts` and :func:`submit_plan` are pure (tested on their text); :func:`submit` calls
``sbatch``: every script is checked with ``sbatch --test-only`` before the first is submitted, so a
refused option (a bad partition) is one line naming the step, with nothing submitted.

Secrets: the scripts under ``<root>/slurm/`` (mirrored with the runs) show a command's secret values as
``***REDACTED***`` (:mod:`lightning_track.redaction`); what is submitted is the same script with the real
command, written for sbatch to a file readable by its owner only (mode 600) in the temp folder, outside the
tree, and removed once sbatch has its own copy. Better still, give a job its secrets through the
environment (sbatch passes the submitting shell's on).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..folder.layout import RunLayout
from ..redaction import command_secrets, redact_command
from ..vocabulary import ENV_CHECKPOINT_PREFIX, ENV_RUN_DIR, SLURM_RESTART_COUNT
from .pipeline import CHECKPOINT_FIELDS, REFERENCE, Pipeline, Step, expand_sweeps, refuse_control
from .slurm_job import Run, refusal, run_slurm

__all__ = ["SlurmOptions", "sbatch_scripts", "submit_plan", "submit", "script_path", "sweep_array_script",
           "checkpoint_lines"]


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    time: str | None = None
    gres: str | None = None
    extra: tuple[str, ...] = field(default_factory=tuple)  # --slurm-arg, each one sbatch option
    grace: int = 60  # seconds between the batch shell's SIGTERM and the job's end
    python: str = sys.executable

    def __post_init__(self) -> None:
        for option, value in (("--partition", self.partition), ("--time", self.time), ("--gres", self.gres),
                              *(("--slurm-arg", arg) for arg in self.extra)):
            refuse_control(option, value)



def script_path(pipeline: Pipeline, step: str) -> Path:
    """``<root>/slurm/<pipeline>_<step>.sbatch`` (absolute: sbatch may run from anywhere)."""
    return Path(pipeline.root).resolve() / "slurm" / f"{pipeline.exp_id(step)}.sbatch"


def _signals(pipeline: Pipeline) -> Path:
    return Path(pipeline.root).resolve() / "signals"


def _note(pipeline: Pipeline, step: str) -> Path:
    return _signals(pipeline) / f"{pipeline.exp_id(step)}{RunLayout.RUN_NOTE_SUFFIX}"


def _checkpoint_variables(step: Step) -> dict[tuple[str, str], str]:
    """``{(ref, field): variable}`` for the step's checkpoint references (``-`` in a step name becomes ``_``; a
    name taken already gets a number)."""
    names: dict[tuple[str, str], str] = {}
    for ref, field_ in dict.fromkeys(step.references):
        if field_ in CHECKPOINT_FIELDS:
            name = f"{ENV_CHECKPOINT_PREFIX}{_var(ref)}_{field_}"
            names[(ref, field_)] = name if name not in names.values() else f"{name}_{len(names)}"
    return names


def _job_command(pipeline: Pipeline, step: Step) -> str:
    """The step's command with each reference read from the referenced step's files when the job starts."""
    variables = _checkpoint_variables(step)

    def replace(match: re.Match[str]) -> str:
        ref, what = match.group(1), match.group(2)
        if what == "exp_id":
            return shlex.quote(pipeline.exp_id(ref))
        if what in CHECKPOINT_FIELDS:
            return f'"${variables[(ref, what)]}"'
        return f'"$(cat {shlex.quote(str(_note(pipeline, ref)))})"'

    return REFERENCE.sub(replace, step.cmd)


def checkpoint_lines(pipeline: Pipeline, step: Step, options: SlurmOptions, exp_id: str) -> list[str]:
    """Shell lines that export the step's checkpoint references when the job starts (the steps they name have
    ended: ``afterok``); ``exp_id``: a shell word. A checkpoint that is not there ends the job (``set -e``)."""
    variables = _checkpoint_variables(step)
    if not variables:
        return []
    args = [options.python, "-m", "lightning_track.cli.job_checkpoints", "--signals-dir", str(_signals(pipeline)),
            "--step", step.name]
    refs = [f"--checkpoint {var} {shlex.quote('{' + ref + '.' + what + '}')} "
            f"{shlex.quote(str(_note(pipeline, ref)))}" for (ref, what), var in variables.items()]
    return ["# The checkpoints the command names, from the earlier runs' checkpoints.json now that their jobs ended;",
            "# LIGHTNING_TRACK_EVALUATES tells the step's RunLogger which (meta.json). None there: the job fails here.",
            f"checkpoints=\"$({shlex.join(args)} --exp-id {exp_id} \\",
            *(f"    {ref} \\" for ref in refs[:-1]), f"    {refs[-1]})\"",
            'eval "$checkpoints"']


def directive_value(value: str) -> str:
    """A value quoted for an ``#SBATCH`` line: sbatch splits those at whitespace, ends them at an unquoted ``#``
    and takes quotes and backslashes as the shell does, except that a backslash escapes inside quotes too."""
    return shlex.quote(value).replace("\\", "\\\\")


def _directives(pipeline: Pipeline, step: Step, options: SlurmOptions) -> list[str]:
    out = Path(pipeline.root).resolve() / "slurm" / f"{pipeline.exp_id(step.name)}-%j.out"
    lines = [f"--job-name={directive_value(pipeline.exp_id(step.name))}", f"--output={directive_value(str(out))}",
             "--open-mode=append"]
    lines += [f"--partition={options.partition}"] * bool(options.partition)
    lines += [f"--time={options.time}"] * bool(options.time)
    lines += [f"--gres={options.gres}"] * bool(options.gres)
    lines += [f"--signal=B:TERM@{options.grace}", "--requeue", "--kill-on-invalid-dep=yes"]
    for arg in options.extra:
        if not arg.startswith("-") or "\n" in arg:
            raise ConfigError(f"--slurm-arg {arg!r}: give one sbatch option, e.g. --slurm-arg=--mem=32G")
        lines.append(arg)
    return [f"#SBATCH {line}" for line in lines]


def _lt_run(pipeline: Pipeline, step: Step, options: SlurmOptions, exp_id: str | None = None) -> list[str]:
    """lt-run's command line in a job: the submitting interpreter, signals beside the runs, a grace under
    the job's, and ``--slurm-requeue``."""
    lt_run = [options.python, "-m", "lightning_track.cli.run", *(["--exp-id", exp_id] if exp_id else []),
              "--signals-dir", str(_signals(pipeline)), "--grace", str(max(options.grace - 5, 1)), "--slurm-requeue"]
    if step.health_time is not None:
        lt_run += ["--health-time", f"{step.health_time:g}"]
    return lt_run


def sbatch_scripts(pipeline: Pipeline, options: SlurmOptions, *, cwd: str | os.PathLike[str] | None = None,
                   steps: Sequence[str] | None = None) -> dict[str, str]:
    """``{step: script text}`` in dependency order, for ``steps`` (default: every step)."""
    workdir = Path(cwd or os.getcwd()).resolve()
    scripts = {}
    for name in steps if steps is not None else pipeline.order:
        step = pipeline.steps[name]
        lt_run = _lt_run(pipeline, step, options, pipeline.exp_id(name))
        after = ", ".join(step.after) or "nothing"
        scripts[name] = "\n".join([
            "#!/bin/bash",
            f"# Pipeline {pipeline.name}, step {name} (runs after {after}); written by lt run --pipeline --slurm.",
            *_directives(pipeline, step, options),
            *task_directives(step),
            "",
            "set -euo pipefail",
            f"cd {shlex.quote(str(workdir))}",
            *requeued_lines(pipeline, name),
            *checkpoint_lines(pipeline, step, options, shlex.quote(pipeline.exp_id(name))),
            "# lt-run: health gate, console into the run's logs.txt, post-processing; exec so that the batch",
            "# shell's SIGTERM (--signal=B:TERM) reaches it and the command can checkpoint before the job ends.",
            "# --slurm-requeue: a command stopped by that SIGTERM with a resumable checkpoint requeues the job.",
            f"exec {shlex.join(lt_run)} -- \\",
            *task_lines(step),
            f"    /bin/sh -c {shlex.quote(_job_command(pipeline, step))}",
            "",
        ])
    return scripts


def requeued_lines(pipeline: Pipeline, name: str) -> list[str]:
    """Shell lines: a requeued job (Slurm sets ``SLURM_RESTART_COUNT``) continues the run folder its first start
    named in the run note, through ``LIGHTNING_TRACK_RUN_DIR`` (lt-run clears the note when it starts)."""
    note = shlex.quote(str(_signals(pipeline) / f"{pipeline.exp_id(name)}{RunLayout.RUN_NOTE_SUFFIX}"))
    return ["# A requeued job continues the run folder its first start named (train with RunLogger(resume=...)",
            "# when SLURM_RESTART_COUNT > 0, and trainer.fit(ckpt_path=\"last\")).",
            f'if [ "${{{SLURM_RESTART_COUNT}:-0}}" -gt 0 ] && [ -s {note} ]; then',
            f'    export {ENV_RUN_DIR}="$(cat {note})"',
            "fi"]


def task_directives(step: Step) -> list[str]:
    """``nodes: K`` and ``ntasks: N`` as sbatch options: K nodes, N tasks on each (``--ntasks-per-node``, the form
    Lightning's SLURMEnvironment accepts)."""
    lines = [f"#SBATCH --nodes={step.nodes}"] * (step.nodes > 1)
    return lines + [f"#SBATCH --ntasks-per-node={step.ntasks}"] * (step.ntasks > 1 or step.nodes > 1)


def task_lines(step: Step) -> list[str]:
    """``ntasks`` > 1 or ``nodes`` > 1: the command runs under ``srun``, once per task; each task is a DDP rank
    (Trainer ``devices`` = ntasks, ``num_nodes`` = nodes), and the RunLogger gives the ranks one run folder;
    ``--kill-on-bad-exit`` ends every rank when one fails, so none waits on a collective forever."""
    if step.ntasks <= 1 and step.nodes <= 1:
        return []
    return ["    srun --kill-on-bad-exit=1 \\"]


def submit_plan(pipeline: Pipeline, steps: Sequence[str], earlier: Mapping[str, str] | None = None) -> list[str]:
    """The shell lines that submit ``steps`` in order, each after the submitted steps it waits for
    (``earlier``: job ids of steps submitted by an earlier call)."""
    earlier = earlier or {}
    lines = []
    for name in steps:
        deps = [f"$jid_{_var(d)}" if d in steps else earlier[d] for d in pipeline.steps[name].after
                if d in steps or d in earlier]
        dep = f" --dependency=afterok:{':'.join(deps)}" if deps else ""
        lines.append(f"jid_{_var(name)}=$(sbatch --parsable{dep} {shlex.quote(str(script_path(pipeline, name)))})")
    return lines


def _var(name: str) -> str:
    return name.replace("-", "_")


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return run_slurm(args, timeout=120)  # sbatch on a busy controller


def submit(pipeline: Pipeline, scripts: Mapping[str, str], *, earlier: Mapping[str, str] | None = None,
           run: Run = _run) -> dict[str, str]:
    """Write the scripts and submit them in order; ``{step: job id}``. ``earlier``: job ids of steps
    submitted by an earlier call, which the new jobs wait for too.

    Refused before anything is submitted: no ``sbatch`` on PATH, a script ``sbatch --test-only`` rejects.
    """
    if shutil.which("sbatch") is None:
        raise ConfigError("--slurm: sbatch not found on PATH; run on a Slurm login node (or use --dry-run to see "
                          "the scripts)")
    for name, text in scripts.items():
        path = script_path(pipeline, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(redact_command(text), encoding="utf-8")
    private = {name: _private_script(pipeline.exp_id(name), text) for name, text in scripts.items()
               if command_secrets(text)}
    try:
        for name in scripts:
            checked = run(["sbatch", "--test-only", str(private.get(name, script_path(pipeline, name)))])
            if checked.returncode != 0:
                why = refusal(checked)
                raise ConfigError(f"step {name!r}: sbatch refused {script_path(pipeline, name).name}: {why}; "
                                  "fix --partition/--time/--gres/--slurm-arg")
        ids: dict[str, str] = {}
        for name in scripts:
            known = {**(earlier or {}), **ids}
            deps = [known[d] for d in pipeline.steps[name].after if d in known]
            args = ["sbatch", "--parsable"] + ([f"--dependency=afterok:{':'.join(deps)}"] if deps else [])
            done = run(args + [str(private.get(name, script_path(pipeline, name)))])
            if done.returncode != 0:
                why = refusal(done)
                submitted = ", ".join(f"{s} ({j})" for s, j in ids.items()) or "none"
                raise ConfigError(f"step {name!r}: sbatch failed: {why}; submitted before it: {submitted}")
            ids[name] = done.stdout.strip().split(";")[0]
    finally:
        for path in private.values():
            path.unlink(missing_ok=True)
    return ids


def _private_script(exp_id: str, text: str) -> Path:
    """The script with its real command, readable by its owner only (mode 600) in the temp folder, outside the
    mirrored tree; sbatch keeps its own copy of what it submits (also for a requeue), so it is removed after."""
    fd, path = tempfile.mkstemp(prefix="lt-", suffix=f"-{exp_id}.sbatch")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return Path(path)


def sweep_array_script(pipeline: Pipeline, name: str, options: SlurmOptions, *,
                       cwd: str | os.PathLike[str] | None = None) -> str:
    """The sweep step ``name`` as one job array (``--array=0-<n-1>``): task ``i`` runs trial ``i`` under lt-run,
    exp_id ``<pipeline>_<step>.<i>``, tagged with the sweep (see :mod:`.sweep`); ``afterok`` on the array's job
    id waits for every task."""
    from ..vocabulary import ENV_SWEEP, ENV_TAGS
    from .sweep import trial_env

    expanded = expand_sweeps(pipeline)
    trials = expanded.sweeps[name]
    step = pipeline.steps[name]
    workdir = Path(cwd or os.getcwd()).resolve()
    directives = [d.replace("-%j.out", "-%A_%a.out") for d in _directives(pipeline, step, options)]
    lt_run = _lt_run(pipeline, step, options)  # the task's exp_id follows, from the trial's case
    note = f'{shlex.quote(str(_signals(pipeline)))}/"$exp_id"{RunLayout.RUN_NOTE_SUFFIX}'
    srun = [line.strip().rstrip(" \\") + " " for line in task_lines(step)]
    cases = []
    for i, trial_name in enumerate(trials):
        trial = expanded.steps[trial_name]
        env = trial_env(pipeline.exp_id(name), trial.trial)  # type: ignore[arg-type]
        cases += [f"  {i}) exp_id={shlex.quote(pipeline.exp_id(trial_name))}",
                  f"     cmd={shlex.quote(_job_command(pipeline, trial))}",
                  f"     sweep={shlex.quote(env[ENV_SWEEP])} ;;"]
    after = ", ".join(step.after) or "nothing"
    return "\n".join([
        "#!/bin/bash",
        f"# Pipeline {pipeline.name}, step {name} (runs after {after}): a sweep of {len(trials)} trials as one job "
        "array, task i runs trial i; written by lt run --pipeline --slurm.",
        *directives,
        *task_directives(step),
        f"#SBATCH --array=0-{len(trials) - 1}",
        "",
        "set -euo pipefail",
        f"cd {shlex.quote(str(workdir))}",
        'case "${SLURM_ARRAY_TASK_ID:-}" in',
        *cases,
        '  *) echo "no trial ${SLURM_ARRAY_TASK_ID:-} in this sweep (run it as an array job)" >&2; exit 2 ;;',
        "esac",
        f"export {ENV_TAGS}={shlex.quote(pipeline.exp_id(name))} {ENV_SWEEP}=\"$sweep\"",
        "# A requeued task continues the run folder its first start named (as the steps' scripts do).",
        f'if [ "${{{SLURM_RESTART_COUNT}:-0}}" -gt 0 ] && [ -s {note} ]; then',
        f'    export {ENV_RUN_DIR}="$(cat {note})"',
        "fi",
        *checkpoint_lines(pipeline, step, options, '"$exp_id"'),
        "# lt-run: health gate, console into the trial's logs.txt, post-processing, --slurm-requeue (see the steps'",
        "# scripts).",
        f'exec {shlex.join(lt_run)} --exp-id "$exp_id" -- {"".join(srun)}/bin/sh -c "$cmd"',
        "",
    ])
