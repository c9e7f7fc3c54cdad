"""A sweep's trials by best metric, read from their runs: printed by ``lt run --pipeline`` (and
``--status``) and written to ``<root>/<pipeline>_<step>.sweep.md`` beside the pipeline state.

A trial's run folder is the one its pipeline state entry names, else its run note
``<root>/signals/<pipeline>_<step>.<i>.run`` (a Slurm array task writes that one; the state file only
knows the job). Ranking is :func:`lightning_track.query.sweeps.rank_trials`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..folder import signals
from ..folder.fileio import atomic_write_text, read_json
from ..folder.layout import RunLayout
from ..query.sweeps import TrialRow, rank_trials, table_lines
from ..vocabulary import PENDING, SUBMITTED, iso_time
from .pipeline import Pipeline
from .pipeline_state import PipelineState

__all__ = ["sweep_table", "table_path", "finish_sweep", "write_tables"]


def table_path(pipeline: Pipeline, name: str) -> Path:
    return Path(pipeline.root) / f"{pipeline.exp_id(name)}.sweep.md"


def _summary(run_dir: str | None) -> dict[str, Any] | None:
    if not run_dir:
        return None
    try:
        data = read_json(RunLayout(run_dir).summary_json)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def sweep_table(pipeline: Pipeline, state: PipelineState, name: str
                ) -> tuple[str | None, str, list[TrialRow], dict[int, str]]:
    """``(metric, mode, rows best first, {trial: run folder})`` of the sweep step ``name`` (expanded pipeline)."""
    signals_dir = Path(pipeline.root) / "signals"
    rows, summaries, dirs = [], [], {}
    for trial_name in pipeline.sweeps[name]:
        trial = pipeline.steps[trial_name].trial
        assert trial is not None
        entry = state.get(trial_name)
        run_dir = entry.get("run_dir")
        if not run_dir:
            note = signals.read_run_note(signals_dir, pipeline.exp_id(trial_name))
            run_dir = str(note) if note is not None else None
        summary = _summary(run_dir)
        word = str(entry.get("state", PENDING))
        if word in (PENDING, SUBMITTED) and summary and summary.get("status"):
            word = str(summary["status"])  # a Slurm task's run says more than "submitted"
        rows.append(TrialRow(trial=trial.index, overrides=dict(trial.overrides), state=word,
                             run=Path(run_dir).name if run_dir else None))
        summaries.append(summary)
        if run_dir:
            dirs[trial.index] = run_dir
    spec_step = pipeline.steps[pipeline.sweeps[name][0]].trial
    metric, mode, ordered = rank_trials(rows, summaries, metric=spec_step.metric if spec_step else None,
                                        mode=spec_step.mode if spec_step else None)
    return metric, mode, ordered, dirs


def _text(pipeline: Pipeline, name: str, metric: str | None, mode: str, rows: list[TrialRow]) -> list[str]:
    return [f"sweep {pipeline.exp_id(name)}: {len(rows)} trials by {metric or 'metric'} ({mode}), best first",
            *table_lines(metric, mode, rows)]


def finish_sweep(pipeline: Pipeline, state: PipelineState, name: str) -> dict[str, Any]:
    """The sweep step's state fields once every trial is done: the best trial's run folder (what
    ``{<step>.run_dir}`` names), its value, and the table (written)."""
    metric, mode, rows, dirs = sweep_table(pipeline, state, name)
    path = table_path(pipeline, name)
    atomic_write_text(path, "\n".join(_text(pipeline, name, metric, mode, rows)) + "\n")
    best = rows[0] if rows and rows[0].value is not None else None
    # None clears what an earlier run of the pipeline recorded (PipelineState.update drops None fields)
    fields: dict[str, Any] = {"table": str(path), "trials": len(rows), "ended": iso_time(), "run_dir": None,
                              "best": None, "no_run_dir": None}
    if best is not None:
        fields.update(run_dir=dirs.get(best.trial), best={"trial": best.trial, "metric": metric, "value": best.value,
                                                          "mode": mode, "overrides": best.overrides})
    elif dirs:  # every trial named its folder: what is missing is the value to rank them by
        fields["no_run_dir"] = no_ranking_metric(pipeline.exp_id(name), metric, len(dirs))
    return fields


def no_ranking_metric(sweep: str, metric: str | None, trials: int) -> str:
    """Why a sweep whose trials all ran names no best run folder: none recorded the metric that ranks them."""
    folders = f"{trials} run folder" + ("" if trials == 1 else "s")
    if metric is None:
        return (f"no trial of sweep {sweep!r} recorded any metric to rank by ({folders}, no best or final"
                " values in their summary.json): log a metric in the trials and name it in the sweep's metric:")
    return (f"no trial of sweep {sweep!r} recorded the metric {metric!r} that ranks them ({folders},"
            f" none with {metric!r} in summary.json): log it in every trial (a validation metric needs validation"
            " to run) or set the sweep's metric: to one the trials log")


def write_tables(pipeline: Pipeline, state: PipelineState) -> dict[str, list[str]]:
    """Every sweep's table (written beside the state), ``{step: lines}``; sweeps with no trial run yet left out."""
    out = {}
    for name in pipeline.sweeps:
        metric, mode, rows, dirs = sweep_table(pipeline, state, name)
        if not dirs and not any(r.state != PENDING for r in rows):
            continue
        lines = _text(pipeline, name, metric, mode, rows)
        atomic_write_text(table_path(pipeline, name), "\n".join(lines) + "\n")
        out[name] = lines
    return out
