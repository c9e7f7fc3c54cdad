"""What a migration did, per run: the numbers a user checks and every skip with its reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from ..vocabulary import EXIT_FAILURE, EXIT_OK

__all__ = ["Notes", "RunReport", "MigrationReport", "STATUS_CONVERTED", "STATUS_SKIPPED", "STATUS_FAILED",
           "STATUS_PLANNED"]

# -- a legacy run's outcome: RunReport.status, the JSON report's "status" ----------------------------
# Words of the migration report, not run statuses: a converted run's own summary.json says completed
# or interrupted (lightning_track.vocabulary), whatever its migration's outcome was.
STATUS_CONVERTED = "converted"
STATUS_SKIPPED = "skipped"  # already migrated (re-run without --force) or filtered
STATUS_FAILED = "failed"  # this run only; the exit code says a run failed
STATUS_PLANNED = "planned"  # --dry-run

MAX_NOTES_PER_SOURCE = 20


class Notes:
    """Collects one-line warnings; after ``MAX_NOTES_PER_SOURCE`` from one file only a count is kept.

    Why: a tracking file with 100k corrupt lines must not produce a 100k-line report.
    """

    def __init__(self) -> None:
        self.items: list[str] = []
        self._per_source: Counter[str] = Counter()

    def warn(self, message: str, source: str = "") -> None:
        self._per_source[source] += 1
        if self._per_source[source] <= MAX_NOTES_PER_SOURCE:
            self.items.append(message)

    def finish(self) -> list[str]:
        """The notes, plus one line per source whose notes were cut."""
        out = list(self.items)
        for source, count in self._per_source.items():
            if count > MAX_NOTES_PER_SOURCE:
                out.append(f"{source}: ... and {count - MAX_NOTES_PER_SOURCE} more problems of this file")
        return out


@dataclass
class RunReport:
    """The outcome of one legacy run."""

    source: str
    target: str | None = None
    status: str = STATUS_PLANNED
    reason: str = ""  # why skipped or failed, one line
    bytes: int = 0
    steps: int = 0  # metric steps written (metrics.jsonl rows)
    last_step: int | None = None
    tracked_lines: int = 0  # batch_tracking.jsonl lines written
    checkpoints: int = 0  # checkpoints converted
    checkpoints_found: int = 0
    weights_only: int = 0  # converted checkpoints without optimizer state
    final_model_files: int = 0
    linked_files: int = 0
    copied_files: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MigrationReport:
    runs: list[RunReport] = field(default_factory=list)
    dry_run: bool = False

    @property
    def failed(self) -> list[RunReport]:
        return [r for r in self.runs if r.status == STATUS_FAILED]

    @property
    def exit_code(self) -> int:
        """Non-zero when any run failed; warnings alone keep it zero."""
        return EXIT_FAILURE if self.failed else EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "runs": [r.to_dict() for r in self.runs]}
