"""The loop state of a converted checkpoint, from Lightning's own checkpoint migration.

A Lightning checkpoint resumes at the right ``global_step`` only with its ``loops`` (progress
tracking). Lightning builds them from ``global_step`` and ``epoch`` when it migrates a checkpoint
older than 1.6, so a converted checkpoint is declared that old and run through
``migrate_checkpoint`` -- nothing is written by hand.

Why a template: importing Lightning costs ~5 s of CPU (it imports torchmetrics, torch._dynamo, ...),
and with ``--jobs`` that import sat on the critical path before any worker could start. Instead, the
migrating process imports Lightning on a thread while the workers convert tracking lines, runs the
migration on two probe checkpoints, learns which fields carry the step and the epoch, checks the
result against a third probe, and sends that template to the workers, which wait for it when they
reach their first checkpoint. If the migration derives anything the template cannot express, the
check fails and every checkpoint goes through ``migrate_checkpoint`` itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["PRE_LOOPS_VERSION", "loop_state", "learn_template", "learn_template_or_none", "fill_template",
           "use_template_source", "migrate_with_lightning"]

# Lightning's migration builds the progress-tracking loop state from global_step and epoch for
# checkpoints older than 1.6; declaring ours that old makes it do exactly that, then stamps the
# running Lightning version on the result.
PRE_LOOPS_VERSION = "1.5.0"
_STEP, _EPOCH = "\x00lt-migrate:step", "\x00lt-migrate:epoch"  # no value Lightning writes looks like these
_PROBE_WEIGHTS = {"model.probe": 0}  # a migration that touched the state dict would fail the check
_receive: Callable[[], dict[str, Any] | None] | None = None  # cleared once it has been called
_template: dict[str, Any] | None = None


def _skeleton(step: int, epoch: int) -> dict[str, Any]:
    return {"state_dict": dict(_PROBE_WEIGHTS), "global_step": step, "epoch": epoch,
            "pytorch-lightning_version": PRE_LOOPS_VERSION}


def migrate_with_lightning(step: int, epoch: int) -> dict[str, Any]:
    """Lightning's migration of a pre-1.6 checkpoint at ``step``/``epoch``, without a state dict."""
    from lightning.pytorch.utilities.migration import migrate_checkpoint

    checkpoint, _ = migrate_checkpoint(_skeleton(step, epoch))
    if checkpoint.pop("state_dict", None) != _PROBE_WEIGHTS:
        raise RuntimeError("Lightning's checkpoint migration changed the state dict")
    return checkpoint


def _generalize(a: Any, b: Any, probes: tuple[tuple[int, int], tuple[int, int]]) -> Any:
    """One template from two migrations; raises ValueError where they differ other than by step/epoch."""
    if type(a) is not type(b):
        raise ValueError("different types")
    if isinstance(a, dict):
        if list(a) != list(b):
            raise ValueError("different keys")
        return {key: _generalize(a[key], b[key], probes) for key in a}
    if isinstance(a, list):
        if len(a) != len(b):
            raise ValueError("different lengths")
        return [_generalize(x, y, probes) for x, y in zip(a, b, strict=True)]
    if a == b and type(a) in (int, float, str, bool, type(None)):
        return a
    if type(a) is int and (a, b) == (probes[0][0], probes[1][0]):
        return _STEP
    if type(a) is int and (a, b) == (probes[0][1], probes[1][1]):
        return _EPOCH
    raise ValueError(f"{a!r} vs {b!r}")


def fill_template(template: dict[str, Any], step: int, epoch: int) -> dict[str, Any]:
    """The template with the step and epoch in their places (a new dict each call)."""

    def fill(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: fill(value) for key, value in node.items()}
        if isinstance(node, list):
            return [fill(value) for value in node]
        return step if node == _STEP else epoch if node == _EPOCH else node

    return fill(template)


def learn_template(
    migrate: Callable[[int, int], dict[str, Any]] = migrate_with_lightning,
) -> dict[str, Any] | None:
    """The template of ``migrate`` (Lightning's), or None when it is not a plain function of step and epoch."""
    probes = ((1_000_003, 17), (2_000_029, 31))
    try:
        template = _generalize(*(migrate(s, e) for s, e in probes), probes)
        json.dumps(template)  # plain data only: it travels between processes
    except (ValueError, TypeError):
        return None
    check = (7, 2)
    if fill_template(template, *check) != migrate(*check):
        return None
    return template


def learn_template_or_none() -> dict[str, Any] | None:
    """``learn_template``, with any failure (Lightning missing, broken) meaning "no template"."""
    try:
        return learn_template()
    except Exception:  # noqa: BLE001 - the workers then call Lightning and report its error per checkpoint
        return None


def use_template_source(receive: Callable[[], dict[str, Any] | None] | None) -> None:
    """In a worker: the first checkpoint takes its loop state from the template ``receive`` returns
    (it may wait for it); None there, or no source, means Lightning's migration runs here."""
    global _receive, _template
    _receive, _template = receive, None


def loop_state(step: int, epoch: int) -> dict[str, Any]:
    """What Lightning's migration gives a pre-1.6 checkpoint at ``step``/``epoch`` (no state dict)."""
    global _receive, _template
    if _receive is not None:
        _template, _receive = _receive(), None
    if _template is not None:
        return fill_template(_template, step, epoch)
    return migrate_with_lightning(step, epoch)
