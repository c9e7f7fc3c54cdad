"""``lt-migrate``: legacy ``experiments/`` runs -> run folders written by the same layout and writers
as ``RunLogger``. See ``docs/migrate.md`` and ``migrate/README.md``."""

from __future__ import annotations

from typing import Any

from ..errors import SourceError
from .build import convert_run
from .discover import LegacyRun, discover_runs, parse_legacy_name
from .plan import MigrateOptions, PlannedRun, plan_migration
from .pool import default_jobs, migrate
from .report import MigrationReport, RunReport
from .rules import apply_config_rules, load_rules


def make_example(*args: Any, **kwargs: Any) -> Any:
    """See :func:`.example.make_example` (imported on use: it needs torch, a migration does not)."""
    from .example import make_example as make

    return make(*args, **kwargs)


__all__ = ["migrate", "default_jobs", "plan_migration", "convert_run", "MigrateOptions", "PlannedRun", "LegacyRun",
           "SourceError", "discover_runs", "parse_legacy_name", "make_example", "MigrationReport", "RunReport",
           "load_rules", "apply_config_rules"]
