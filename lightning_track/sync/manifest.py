"""Deciding what a tree holds: path, size, mtime per file, and which files only ever grow.

Why a manifest instead of hashing everything: a re-sync with nothing changed must cost one listing,
so the quick check is size + mtime (like rsync); tail hashes are computed only for files that grew,
to prove the destination's old bytes are still a prefix of the source before appending.
"""

from __future__ import annotations

import fnmatch
import hashlib
import time
from collections.abc import Collection
from dataclasses import dataclass, field

from ..folder.fileio import is_temp_name
from ..folder.layout import RunLayout
from .transport import DIR, FILE, LINK, Entry, Transport

__all__ = [
    "Manifest",
    "PART_SUFFIX",
    "RECENT_S",
    "STAGE",
    "part_path",
    "part_target",
    "TAIL_BYTES",
    "is_append_only",
    "is_checkpoint",
    "is_internal",
    "tail_hash",
    "scan",
    "top_name",
]

# A whole-file copy is built in `.NAME.lt-sync-part` beside NAME and renamed over it once verified. Not
# the temp-file rule's `.tmp`: a part file is resumable (the journal says which source version it
# holds), and a scan reports it (Manifest.parts) instead of skipping it.
PART_SUFFIX = ".lt-sync-part"
RECENT_S = 60  # a *.jsonl modified this recently may be mid-write: copy whole lines only
STAGE = ".lt-sync-stage"  # at a destination's root: whole runs being built (sync/bulk.py); never listed
TAIL_BYTES = 4096  # bytes compared before an append, and after each file as its checksum
_APPEND_PATTERNS = ("*.tfevents.*", "*.swanlab", "*.log")
_CHECKPOINT_DIRS = (RunLayout.CHECKPOINTS, RunLayout.FINAL_MODEL)


def is_append_only(rel: str) -> bool:
    """Files that only grow: new bytes can be appended instead of re-sending the file."""
    name = rel.rsplit("/", 1)[-1]
    if name == RunLayout.SWANLAB_BOARD_DB:  # SQLite rewrites its pages in place: never sent as an append
        return False
    return name in RunLayout.APPEND_ONLY or any(fnmatch.fnmatchcase(name, p) for p in _APPEND_PATTERNS)


def is_checkpoint(rel: str) -> bool:
    """Checkpoints and the exported final model: large, synced only with ``--include-checkpoints``."""
    parts = rel.split("/")
    return (RunLayout.CHECKPOINTS in parts[:-1] or RunLayout.FINAL_MODEL in parts
            or parts[-1].endswith(RunLayout.CHECKPOINT_SUFFIX))


def part_path(rel: str) -> str:
    """Where the whole-file copy of ``rel`` is built: ``dir/.NAME.lt-sync-part``."""
    head, _, name = rel.rpartition("/")
    part = f".{name}{PART_SUFFIX}"
    return f"{head}/{part}" if head else part


def part_target(part_rel: str) -> str:
    """The file a part file (``dir/.NAME.lt-sync-part``) is being built for: ``dir/NAME``."""
    head, _, name = part_rel.rpartition("/")
    name = name[: -len(PART_SUFFIX)]
    target = name[1:] if name.startswith(".") else name
    return f"{head}/{target}" if head else target


def is_internal(rel: str) -> bool:
    """Part files of an interrupted copy, temp files of an atomic write in progress, and a mirror's own
    export record (``lt-sync --export``: the mirror's, never the source's): never synced, never deleted."""
    name = rel.rsplit("/", 1)[-1]
    return name.endswith(PART_SUFFIX) or is_temp_name(name) or name == RunLayout.MIRROR_EXPORT


def tail_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@dataclass
class Manifest:
    """The synced view of one side: files, directories, and what was refused (with reasons)."""

    files: dict[str, Entry] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)
    links: dict[str, str] = field(default_factory=dict)  # refused symlinks: rel -> reason
    parts: dict[str, Entry] = field(default_factory=dict)  # leftover partial copies: target rel -> entry
    excluded_tops: set[str] = field(default_factory=set)  # top-level entries left out by --since
    dir_mtimes: dict[str, int] = field(default_factory=dict)  # folder -> its mtime (whole seconds)
    scanned_at: float = 0.0


def top_name(rel: str) -> str:
    """The top-level entry (a run folder, usually) a tree-relative path lies in."""
    return rel.split("/", 1)[0]


_top = top_name


async def scan(
    transport: Transport,
    *,
    runs_glob: str | None = None,
    since_hours: float | None = None,
    include_checkpoints: bool = False,
    follow_links: bool = True,
    tops: Collection[str] | None = None,
    walked: list[Entry] | None = None,
) -> Manifest:
    """List a tree and keep what this sync covers.

    ``runs_glob`` matches top-level entries (run folders); ``since_hours`` keeps top-level entries
    with a file modified in that window; checkpoints and ``final_model/`` are left out unless asked.
    The destination is scanned with ``follow_links=False`` so that every symlink there blocks writes.
    ``tops`` limits the listing to those top-level names (the runs a pass must look into); ``walked``: that
    listing, already made (``Transport.walk_batches``).
    """
    started = time.time()
    entries = await transport.walk(follow_links=follow_links, tops=tops) if walked is None else walked
    manifest = Manifest(scanned_at=started)
    newest: dict[str, int] = {}
    for entry in entries:
        rel = entry.rel
        if rel.split("/", 1)[0] == STAGE:
            continue
        if runs_glob is not None and not fnmatch.fnmatchcase(_top(rel), runs_glob):
            continue
        if entry.kind == FILE and rel.endswith(PART_SUFFIX):
            manifest.parts[part_target(rel)] = entry
            continue
        if is_internal(rel) or (not include_checkpoints and is_checkpoint(rel)):
            continue
        if entry.kind == DIR and not include_checkpoints and rel.rsplit("/", 1)[-1] in _CHECKPOINT_DIRS:
            continue
        if entry.kind == DIR:
            manifest.dirs.add(rel)
            manifest.dir_mtimes[rel] = entry.mtime
        elif entry.kind == LINK:
            manifest.links[rel] = entry.note
        elif entry.kind == FILE:
            manifest.files[rel] = entry
            if since_hours is not None:  # only --since asks how new each run is
                top = _top(rel)
                newest[top] = max(newest.get(top, 0), entry.mtime)
    if since_hours is not None:
        cutoff = started - since_hours * 3600
        keep = {top for top, mtime in newest.items() if mtime >= cutoff}
        manifest.excluded_tops = set(newest) - keep
        manifest.files = {r: e for r, e in manifest.files.items() if _top(r) in keep}
        manifest.dirs = {d for d in manifest.dirs if _top(d) in keep}
        manifest.links = {r: n for r, n in manifest.links.items() if _top(r) in keep}
    return manifest
