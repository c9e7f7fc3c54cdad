"""The interface every transport implements, and the path rules they all enforce.

Why one interface: the engine, the manifest and the Runicorn view move bytes the same way whether a
side is a local folder or a remote one. Every operation takes a path *relative to the transport's
root* and checks it, so no caller can name a file outside the tree (``..``, absolute paths, NUL bytes
are refused). Errors a transport raises are Python's and the project's only (``FileNotFoundError``,
:class:`~lightning_track.errors.TransportError`, :class:`~lightning_track.errors.SyncError`...): no
caller needs to know which library a transport talks through.
"""

from __future__ import annotations

import posixpath
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from dataclasses import dataclass

from ...errors import UnsafePathError

__all__ = [
    "FILE",
    "DIR",
    "LINK",
    "Entry",
    "Transport",
    "Looker",
    "check_rel",
    "check_name",
]

FILE, DIR, LINK = "file", "dir", "link"


@dataclass(frozen=True, slots=True)
class Entry:
    """One item of a tree listing. ``mtime`` is whole seconds (SFTP v3 has no finer times); folders have theirs
    too (an atomic replace or a new/removed entry changes it: how a settled run is known unchanged). Slots: a
    listing holds one a file (a batch of a thousand runs, tens of thousands)."""

    rel: str
    kind: str  # "file" | "dir" | "link" (a symlink that is not followed; ``note`` says why)
    size: int = 0
    mtime: int = 0
    note: str = ""


class Looker:
    """What :meth:`Transport.look` reports to, an entry at a time (a root of 100,000 runs is never a list)."""

    def entry(self, rel: str, kind: str, mtime: int) -> None:
        """A root entry (``rel`` without a slash: a file, folder or symlink), or a folder of :meth:`known`."""

    def known(self) -> Iterable[str]:
        """The deeper folders to stat (those a previous pass saw); asked once, before or after the root's entries."""
        return ()

    def known_count(self) -> int:
        """How many :meth:`known` names at most (a transport picks its way by it)."""
        return 0

    def reset(self) -> None:
        """Forget what was reported: the transport starts the look again another way."""


def check_rel(rel: str) -> str:
    """Validate a tree-relative POSIX path; raises :class:`UnsafePathError` naming it."""
    if rel in ("", "."):
        return ""
    if "\x00" in rel or "\\" in rel:
        raise UnsafePathError(f"{rel!r}: NUL or backslash in path")
    if rel.startswith("/"):
        raise UnsafePathError(f"{rel!r}: absolute path refused (only paths inside the tree are synced)")
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise UnsafePathError(f"{rel!r}: '..', '.' or empty path component refused")
    return rel


def check_name(name: str, parent: str) -> str:
    """A single directory-entry name as a server or file system returned it."""
    if name in ("", ".", "..") or "/" in name or "\x00" in name:
        raise UnsafePathError(f"{posixpath.join(parent, name)!r}: unsafe file name {name!r} in listing")
    return name


class Transport(ABC):
    """A tree rooted at ``root`` that can be listed, read at offsets and written safely.

    ``bytes_read``/``bytes_written`` count payload bytes moved through this transport.
    """

    remote = False

    def __init__(self, root: str) -> None:
        self.root = root
        self.bytes_read = 0
        self.bytes_written = 0

    def describe(self) -> str:
        return self.root

    def abs(self, rel: str) -> str:
        rel = check_rel(rel)
        return posixpath.join(self.root, rel) if rel else self.root

    async def open(self, *, create: bool = False) -> None:
        """Connect (if remote) and check the root; ``create`` makes it when missing (destination)."""

    async def close(self) -> None:
        """Release connections."""

    @abstractmethod
    async def walk(self, *, follow_links: bool = True, tops: Collection[str] | None = None) -> list[Entry]:
        """Every file, directory and symlink under the root (or only under the top-level names in ``tops``).

        With ``follow_links`` a symlink to a file inside the tree is listed as that file; every other
        symlink (out of the tree, to a folder, dangling, or any symlink without ``follow_links``) is a
        ``link`` entry with the reason it is not followed.
        """

    async def walk_batches(self, batches: Sequence[Collection[str] | None], *,
                           follow_links: bool = True) -> AsyncIterator[list[Entry]]:
        """``walk(tops=batch)`` for each of ``batches`` in turn, as the caller asks for the next one. A remote
        side may list them all with one command (each command there costs the account's shell start-up)."""
        for batch in batches:
            yield await self.walk(follow_links=follow_links, tops=batch)

    async def skeleton(self) -> list[Entry]:
        """The root's own entries (folders with their mtime): which runs there are. A transport makes it one
        stat per root entry, never one per file (this default walks the whole tree)."""
        return [e for e in await self.walk(follow_links=False) if "/" not in e.rel]

    async def look(self, looker: Looker) -> None:
        """:meth:`skeleton` reported an entry at a time, then each folder of ``looker.known()`` that still is one
        (kind DIR, its mtime). A transport may report more folders."""
        tops, known = await self.skeleton(), [await self.stat(rel) for rel in looker.known()]
        for entry in tops:
            looker.entry(entry.rel, entry.kind, entry.mtime)
        for entry in known:
            if entry is not None and entry.kind == DIR:
                looker.entry(entry.rel, DIR, entry.mtime)

    @abstractmethod
    async def stat(self, rel: str) -> Entry | None:
        """``lstat`` of one path, None when it does not exist."""

    @abstractmethod
    async def read(self, rel: str, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes from ``offset`` (fewer at end of file)."""

    @abstractmethod
    async def write_at(self, rel: str, offset: int, data: bytes, *, truncate: bool = False) -> None:
        """Write ``data`` at ``offset``, creating the file; ``truncate`` empties it first."""

    async def write_final(self, rel: str, offset: int, data: bytes, *, truncate: bool, mtime: int,
                          verify: int, rename_to: str | None = None,
                          expect: tuple[int, bytes] | None = None) -> tuple[int, bytes]:
        """Write the last piece of a file, set its mtime, and read back (size, last ``verify`` bytes).

        With ``rename_to``, the file is then renamed over it -- only when the read-back equals
        ``expect`` (the source's size and tail). One call so that a remote side can pipeline all of
        it on one open handle: per file round trips, not bytes, bound a cold sync of small files.
        """
        await self.write_at(rel, offset, data, truncate=truncate)
        await self.set_mtime(rel, mtime)
        entry = await self.stat(rel)
        size = entry.size if entry else -1
        n = min(verify, max(size, 0))
        result = size, (await self.read(rel, size - n, n) if n else b"")
        if rename_to is not None and result == expect:
            await self.rename(rel, rename_to)
        return result

    @abstractmethod
    async def rename(self, src_rel: str, dst_rel: str) -> None:
        """Atomically replace ``dst_rel`` with ``src_rel``."""

    @abstractmethod
    async def remove(self, rel: str) -> None:
        """Delete a file (or a symlink itself, never its target)."""

    @abstractmethod
    async def makedirs(self, rel: str) -> None:
        """Create a directory and its parents inside the tree."""

    async def mkdir(self, rel: str) -> None:
        """Create one directory whose parent exists (an existing directory is fine): one request, not one
        per path component."""
        await self.makedirs(rel)

    @abstractmethod
    async def set_mtime(self, rel: str, mtime: int) -> None:
        """Copy the source's modification time, so the next quick check sees the file as unchanged."""

    @abstractmethod
    async def truncate(self, rel: str, size: int) -> None:
        """Cut a file to ``size`` bytes."""
