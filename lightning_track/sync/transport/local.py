"""A folder on this machine as a transport (the plain-file side of a sync, and the tests' fast path)."""

from __future__ import annotations

import asyncio
import os
import stat as stat_mod
from collections.abc import Collection, Iterable, Iterator

from ...folder.fileio import inside
from .base import DIR, FILE, LINK, Entry, Looker, Transport, check_name

__all__ = ["LocalTransport"]


class LocalTransport(Transport):
    """A folder on this machine. Writes never follow a symlink in the last path component."""

    async def open(self, *, create: bool = False) -> None:
        if create:
            os.makedirs(self.root, exist_ok=True)
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"{self.root}: no such folder")
        self._real_root = os.path.realpath(self.root)

    async def walk(self, *, follow_links: bool = True, tops: Collection[str] | None = None) -> list[Entry]:
        entries: list[Entry] = []
        real_root = os.path.realpath(self.root)

        def one(name: str, path: str, rel_dir: str, st: os.stat_result) -> tuple[str, str] | None:
            """One entry, from its ``lstat``; a folder's (path, rel) to list next."""
            check_name(name, rel_dir)
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if stat_mod.S_ISLNK(st.st_mode):
                target = os.path.realpath(path)
                if not follow_links:
                    entries.append(Entry(rel, LINK, note="symlink"))
                elif not inside(target, real_root):
                    entries.append(Entry(rel, LINK, note="symlink pointing out of the tree"))
                elif os.path.isdir(target):
                    entries.append(Entry(rel, LINK, note="symlink to a directory (not followed)"))
                elif os.path.isfile(target):
                    target_st = os.stat(target)
                    entries.append(Entry(rel, FILE, target_st.st_size, int(target_st.st_mtime)))
                else:
                    entries.append(Entry(rel, LINK, note="dangling symlink"))
            elif stat_mod.S_ISDIR(st.st_mode):
                entries.append(Entry(rel, DIR, mtime=int(st.st_mtime)))
                return path, rel
            elif stat_mod.S_ISREG(st.st_mode):
                entries.append(Entry(rel, FILE, st.st_size, int(st.st_mtime)))
            return None

        def listed(abs_dir: str) -> Iterator[os.DirEntry[str]]:
            with os.scandir(abs_dir) as it:
                return iter(sorted(it, key=lambda e: e.name))

        def visit(abs_dir: str, rel_dir: str) -> None:
            """Depth first, in name order; a stack of the folders being listed, not calls that call each other
            (a cycle of closures keeps the listing alive until a full collection)."""
            stack = [(listed(abs_dir), rel_dir)]
            while stack:
                items, rel_dir = stack[-1]
                item = next(items, None)
                if item is None:
                    stack.pop()
                    continue
                inner = one(item.name, item.path, rel_dir, item.stat(follow_symlinks=False))
                if inner is not None:
                    stack.append((listed(inner[0]), inner[1]))

        def named() -> None:  # only these top-level names: one lstat each, the root is not read again
            for name in sorted(tops or ()):
                path = os.path.join(self.root, name)
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    continue
                inner = one(name, path, "", st)
                if inner is not None:
                    visit(*inner)

        await asyncio.to_thread(visit if tops is None else named, *((self.root, "") if tops is None else ()))
        return entries

    async def skeleton(self) -> list[Entry]:
        return await asyncio.to_thread(lambda: [Entry(*found) for found in _root_look(self.root, ())])

    async def look(self, looker: Looker) -> None:
        def look() -> None:
            for rel, kind, _, mtime in _root_look(self.root, looker.known()):
                looker.entry(rel, kind, mtime)

        await asyncio.to_thread(look)

    async def stat(self, rel: str) -> Entry | None:
        try:
            st = os.lstat(self.abs(rel))
        except FileNotFoundError:
            return None
        kind = LINK if stat_mod.S_ISLNK(st.st_mode) else DIR if stat_mod.S_ISDIR(st.st_mode) else FILE
        return Entry(rel, kind, st.st_size, int(st.st_mtime))

    async def read(self, rel: str, offset: int, size: int) -> bytes:
        with open(self.abs(rel), "rb") as handle:
            handle.seek(offset)
            data = handle.read(size)
        self.bytes_read += len(data)
        return data

    async def write_at(self, rel: str, offset: int, data: bytes, *, truncate: bool = False) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_TRUNC if truncate else 0)
        fd = os.open(self.abs(rel), flags, 0o644)
        try:
            view = memoryview(data)
            pos = offset
            while view:
                written = os.pwrite(fd, view, pos)
                view, pos = view[written:], pos + written
        finally:
            os.close(fd)
        self.bytes_written += len(data)

    async def rename(self, src_rel: str, dst_rel: str) -> None:
        os.replace(self.abs(src_rel), self.abs(dst_rel))

    async def remove(self, rel: str) -> None:
        os.unlink(self.abs(rel))

    async def makedirs(self, rel: str) -> None:
        os.makedirs(self.abs(rel), exist_ok=True)

    async def mkdir(self, rel: str) -> None:
        try:
            os.mkdir(self.abs(rel))
        except FileExistsError:
            if not os.path.isdir(self.abs(rel)) or os.path.islink(self.abs(rel)):
                raise

    async def set_mtime(self, rel: str, mtime: int) -> None:
        os.utime(self.abs(rel), (mtime, mtime), follow_symlinks=False)

    async def truncate(self, rel: str, size: int) -> None:
        os.truncate(self.abs(rel), size)


def _root_look(root: str, known: Iterable[str]) -> Iterator[tuple[str, str, int, int]]:
    """Both looks' one walk: the root's own entries (name, kind, size, mtime), then each known folder that still
    is one (rel, DIR, 0, mtime); a name the mirror cannot hold raises as a listing does."""
    with os.scandir(root) as it:
        for item in it:
            check_name(item.name, "")
            st = item.stat(follow_symlinks=False)
            kind = (LINK if stat_mod.S_ISLNK(st.st_mode) else DIR if stat_mod.S_ISDIR(st.st_mode)
                    else FILE if stat_mod.S_ISREG(st.st_mode) else "")
            if kind:
                yield item.name, kind, st.st_size if kind == FILE else 0, int(st.st_mtime)
    for rel in known:
        try:
            st = os.lstat(f"{root}/{rel}")
        except OSError:
            continue
        if stat_mod.S_ISDIR(st.st_mode):
            yield rel, DIR, 0, int(st.st_mtime)
