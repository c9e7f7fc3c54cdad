"""Diffing two manifests into actions. Pure: no I/O, so every rule is easy to test and to explain.

Rules: new file -> copy whole; append-only file that grew -> append the new bytes (the engine checks
the destination's old tail first and falls back to a whole copy); other changed file -> replace
atomically; file gone from SRC -> delete only with ``--delete``. Paths whose destination (or one of
its parent folders) is a symlink are refused: writing through it could land outside DEST.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .manifest import Manifest, is_append_only
from .transport import Entry

__all__ = ["COPY", "APPEND", "REPLACE", "DELETE", "Action", "Plan", "make_plan"]

COPY, APPEND, REPLACE, DELETE = "copy", "append", "replace", "delete"


@dataclass(frozen=True)
class Action:
    kind: str
    rel: str
    src: Entry | None = None
    dst: Entry | None = None

    @property
    def offset(self) -> int:
        """Where new bytes start on the destination (appends only)."""
        return self.dst.size if self.kind == APPEND and self.dst else 0


@dataclass
class Plan:
    actions: list[Action] = field(default_factory=list)
    mkdirs: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # one-line reasons
    unchanged: int = 0

    def count(self, kind: str) -> int:
        return sum(1 for a in self.actions if a.kind == kind)

    @property
    def bytes_planned(self) -> int:
        total = 0
        for action in self.actions:
            if action.kind == APPEND and action.src and action.dst:
                total += action.src.size - action.dst.size
            elif action.kind in (COPY, REPLACE) and action.src:
                total += action.src.size
        return total


def _ancestors(rel: str) -> list[str]:
    parts = rel.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def make_plan(src: Manifest, dst: Manifest, *, delete: bool = False) -> Plan:
    """Actions that make ``dst`` mirror ``src`` (checkpoint filtering already happened in the scan)."""
    plan = Plan()
    for rel, note in sorted(src.links.items()):
        plan.refused.append(f"source {rel}: {note}, not synced")
    blocked = set(dst.links)
    for rel, entry in sorted(src.files.items()):
        bad = next((a for a in [*_ancestors(rel), rel] if a in blocked), None)
        if bad is not None:
            plan.refused.append(f"destination {bad}: is a symlink; refusing to write {rel} through it")
            continue
        if any(a in dst.files for a in _ancestors(rel)):
            plan.refused.append(f"destination {rel}: a parent path is a file on the destination")
            continue
        if rel in dst.dirs:
            plan.refused.append(f"destination {rel}: is a folder on the destination but a file in the source")
            continue
        old = dst.files.get(rel)
        if old is None:
            plan.actions.append(Action(COPY, rel, entry, dst.parts.get(rel)))
        elif old.size == entry.size and old.mtime == entry.mtime:
            plan.unchanged += 1
        elif is_append_only(rel) and entry.size > old.size:
            plan.actions.append(Action(APPEND, rel, entry, old))
        else:
            plan.actions.append(Action(REPLACE, rel, entry, old))
    needed = {a for act in plan.actions for a in _ancestors(act.rel)} | set(src.dirs)
    plan.mkdirs = sorted((d for d in needed if d not in dst.dirs and d not in blocked
                          and not any(x in blocked for x in _ancestors(d))),
                         key=lambda d: (d.count("/"), d))
    if delete:
        for rel, entry in sorted(dst.files.items()):
            if rel in src.files or rel.split("/", 1)[0] in src.excluded_tops:
                continue
            plan.actions.append(Action(DELETE, rel, None, entry))
    return plan
