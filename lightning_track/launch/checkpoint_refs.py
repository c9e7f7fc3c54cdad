"""``{step.last_ckpt}`` and ``{step.best_ckpt}`` in a pipeline step's command: which checkpoint they name.

Why the driver resolves them from the earlier step's ``checkpoints.json`` (not a glob of ``*.ckpt``): the
index knows each checkpoint's step, the metric its ModelCheckpoint monitored and its content hash, so the
step that evaluates it can record *which* bytes it was given (``ENV_EVALUATES``, read by its RunLogger into
``meta.json``), and a run with no checkpoint or no monitored metric is one line naming the step and the
template before the command starts. On Slurm the earlier step's run folder and checkpoint exist only once its
job ended, so the step's job resolves them when it starts (:func:`job_checkpoints`, run by its sbatch script
through ``python -m lightning_track.cli.job_checkpoints``; ``afterok`` means the earlier job is done).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..folder.checkpoint_index import HASH, best_checkpoint, checkpoint_entries, last_checkpoint, read_index
from ..folder.fileio import file_sha256
from ..folder.layout import RunLayout
from ..folder.signals import clear_signals, read_run_note, run_note_path, write_signal
from ..vocabulary import ENV_EVALUATES, FAILED
from .pipeline import CHECKPOINT_FIELDS, REFERENCE, Step

__all__ = ["resolve_checkpoint", "checkpoint_values", "evaluates_env", "job_checkpoints"]


def resolve_checkpoint(step: str, ref: str, field: str, run_dir: str | Path) -> dict[str, Any]:
    """The checkpoint ``{ref.field}`` names in step ``step``'s command: ``{template, run, run_dir, file, step,
    sha256, path}`` (``file`` relative to the run, ``path`` absolute); :class:`ConfigError` when there is none."""
    token = "{" + f"{ref}.{field}" + "}"
    run = Path(run_dir).resolve()
    layout = RunLayout(run)
    on_disk = checkpoint_entries(read_index(layout), lambda name: (run / name).is_file())
    if field == "last_ckpt":
        chosen = last_checkpoint(on_disk)
        if chosen is None:
            raise ConfigError(f"step {step!r}: {token}: run {run} has no checkpoint on disk in its "
                              f"{RunLayout.CHECKPOINTS_INDEX}; give step {ref!r} a StepCheckpoint or ModelCheckpoint")
    else:
        chosen = best_checkpoint(on_disk)
        if chosen is None:
            raise ConfigError(f"step {step!r}: {token}: run {run} has no checkpoint with a monitored metric"
                              f"{'' if on_disk else ' (no checkpoint at all)'}; give step {ref!r}'s ModelCheckpoint "
                              f"monitor=..., or use {{{ref}.last_ckpt}}")
    file = str(chosen["file"])
    digest = chosen.get(HASH)
    if not isinstance(digest, str):  # its run ended before the index had the hash: the file's bytes are the truth
        digest = file_sha256(run / file)
    return {"template": token, "run": run.name, "run_dir": str(run), "file": file, "step": chosen.get("step"),
            HASH: digest, "path": str(run / file)}


def checkpoint_values(step: Step, values: Mapping[str, Mapping[str, str | None]]
                      ) -> tuple[dict[str, dict[str, str | None]], list[dict[str, Any]]]:
    """``values`` with each checkpoint reference of ``step`` filled in (its path), and the records of the
    checkpoints named. A referenced step without a run folder is left for :func:`.render_command` to refuse."""
    filled = {name: dict(fields) for name, fields in values.items()}
    records: list[dict[str, Any]] = []
    for ref, field in dict.fromkeys(step.references):
        run_dir = values.get(ref, {}).get("run_dir")
        if field not in CHECKPOINT_FIELDS or not run_dir:
            continue
        record = resolve_checkpoint(step.name, ref, field, run_dir)
        filled.setdefault(ref, {})[field] = record["path"]
        records.append(record)
    return filled, records


def evaluates_env(records: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """The environment that tells the step's RunLogger which checkpoints its command was given."""
    if not records:
        return {}
    return {ENV_EVALUATES: json.dumps([{k: v for k, v in r.items() if k != "path"} for r in records])}


def job_checkpoints(step: str, refs: Sequence[tuple[str, str, str | Path]], *, signals_dir: str | Path, exp_id: str,
                    job_id: str | None = None) -> dict[str, str]:
    """Inside step ``step``'s Slurm job: the environment its command gets, ``{variable: checkpoint path}`` for each
    ``(variable, template, run note)`` in ``refs`` (the earlier step's run folder read from its run note) plus
    :data:`ENV_EVALUATES`. A checkpoint that cannot be named is the one-line :class:`ConfigError`, also written as
    the step's ``.failed`` signal with ``job_id``, so the pipeline's state shows that line for that job."""
    env: dict[str, str] = {}
    records: list[dict[str, Any]] = []
    try:
        for variable, template, note in refs:
            found = REFERENCE.fullmatch(template)
            if found is None or found[2] not in CHECKPOINT_FIELDS:
                raise ConfigError(f"step {step!r}: {template!r} is not a checkpoint reference; use "
                                  f"{{STEP.last_ckpt}} or {{STEP.best_ckpt}}")
            ref, field = found[1], found[2]
            note = Path(note)
            run_dir = read_run_note(note.parent, note.name.removesuffix(RunLayout.RUN_NOTE_SUFFIX))
            if run_dir is None:
                raise ConfigError(f"step {step!r}: {template} is unknown: step {ref!r} named no run folder in {note} "
                                  "(give it a RunLogger or HealthGuard, which write the run note)")
            record = resolve_checkpoint(step, ref, field, run_dir)
            env[variable] = record["path"]
            records.append(record)
    except ConfigError as exc:  # nothing of an earlier attempt of this step stays to be mistaken for this one
        clear_signals(signals_dir, exp_id)
        run_note_path(signals_dir, exp_id).unlink(missing_ok=True)
        write_signal(signals_dir, exp_id, FAILED, reason=str(exc), check="checkpoint", slurm_job_id=job_id)
        raise
    return {**env, **evaluates_env(records)}
