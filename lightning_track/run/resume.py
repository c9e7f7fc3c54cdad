"""The resume rule: a resume may continue a run, never silently rewind it.

Pure (:func:`check_rewind`) and its I/O (:func:`check_resume`: which checkpoints the run has, and on a
rewind made on purpose, the later ones moved aside, never deleted).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from typing import Any

from ..errors import ResumeError
from ..folder.layout import RunLayout

__all__ = ["check_rewind", "check_resume"]


def check_rewind(run_name: str, restart_step: int, last_checkpoint_step: int | None, allow_rewind: bool,
                 newest: str | None = None) -> None:
    """Refuse a resume whose training restarts before the run's last checkpoint.

    Why: without ``ckpt_path`` (or with an older checkpoint) training starts over, and continuing the
    same folder would overwrite the record of everything after ``restart_step``. ``newest``: the newest
    checkpoint's path, for the fix (a ``last.ckpt`` written after it may be missing when a run was
    killed between the two saves).
    """
    if allow_rewind or last_checkpoint_step is None or restart_step >= last_checkpoint_step:
        return
    where = f'ckpt_path="{newest}"' if newest else 'ckpt_path="last"'
    raise ResumeError(
        f"resume of run {run_name} refused: training restarts at step {restart_step} but the run's last "
        f"checkpoint is at step {last_checkpoint_step}; continue it with trainer.fit(..., {where})"
        + ("" if not newest else ' (ckpt_path="last" when last.ckpt is that checkpoint)')
        + ", start a new run (resume=False), or pass RunLogger(..., allow_rewind=True) to rewind it on purpose")


def check_resume(layout: RunLayout, previous: Mapping[str, Any], from_step: int, allow_rewind: bool,
                 attempt: int) -> None:
    """Refuse (:class:`ResumeError`) a resume of ``layout``'s run that restarts before its last checkpoint;
    on a rewind on purpose, move the later checkpoints aside under ``attempt``'s name."""
    found = layout.checkpoint_steps()
    steps = [step for step, _ in found]
    recorded = previous.get("last_checkpoint_step")
    if isinstance(recorded, int):
        steps.append(recorded)
    last = max(steps) if steps else None
    newest = str(found[-1][1]) if found and found[-1][0] == last else None
    check_rewind(layout.name, from_step, last, allow_rewind, newest)
    if last is not None and from_step < last:  # a rewind on purpose: keep the later checkpoints aside
        aside = layout.superseded_checkpoints_dir(attempt)
        for step, path in found:
            if step > from_step:
                aside.mkdir(parents=True, exist_ok=True)
                shutil.move(str(path), aside / path.name)
