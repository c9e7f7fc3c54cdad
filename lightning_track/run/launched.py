"""What a launcher tells a run through the environment: its exp_id, extra tags, its place in a sweep.

Why the environment: ``lt-run``, ``lt run --pipeline`` and a Slurm array job start the user's own
training script, whose ``RunLogger(...)`` call they cannot change; the variables reach it through any
shell, ``srun`` or wrapper. Read once, at the start of an attempt, into ``summary.json``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..vocabulary import ENV_EXP_ID, ENV_SWEEP, ENV_TAGS, env_value

__all__ = ["launch_fields"]


def launch_fields(tags: Sequence[str], previous_tags: Any = None, environ: Mapping[str, str] | None = None
                  ) -> dict[str, Any]:
    """``summary.json`` fields: ``exp_id``; ``tags`` (the logger's, else the run's earlier ones on a resume,
    plus ``LIGHTNING_TRACK_TAGS``, comma-separated); ``sweep`` (``LIGHTNING_TRACK_SWEEP``, a JSON object)."""
    fields: dict[str, Any] = {}
    exp_id = env_value(ENV_EXP_ID, environ)
    if exp_id:
        fields["exp_id"] = exp_id
    extra = [t.strip() for t in (env_value(ENV_TAGS, environ) or "").split(",") if t.strip()]
    base = list(tags) or (list(previous_tags) if isinstance(previous_tags, list) and extra else [])
    if tags or extra:  # a resume without tags keeps the run's (lt tag's annotations.json wins over both)
        fields["tags"] = list(dict.fromkeys([*base, *extra]))
    text = env_value(ENV_SWEEP, environ)
    if text:
        try:
            sweep = json.loads(text)
        except ValueError:
            sweep = None
        if isinstance(sweep, dict):
            fields["sweep"] = sweep
    return fields
