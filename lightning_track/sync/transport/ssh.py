"""A folder on a remote machine through asyncssh's SFTP client.

Why SFTP only: the server side then needs nothing but sshd's sftp subsystem -- no rsync, no Python,
no shell commands. asyncssh's exceptions end here: every one is mapped to the project's tree, so the
engine and ``lt-sync`` decide "stop" or "retry next cycle" from the class alone, without knowing the
SSH library:

* unknown or changed host key -> :class:`HostKeyError`; authentication, ``~/.ssh/config`` or key
  loading failures -> :class:`SSHSetupError` (retrying cannot fix them: the loop stops);
* a connection that cannot be made, is lost or refuses a channel, and any failed SFTP request ->
  :class:`TransportError` (an ``OSError``; the next cycle retries), one line naming where;
* "no such file" where it is an answer, not a failure: ``stat`` returns None and ``read`` raises
  ``FileNotFoundError``, as :class:`LocalTransport` does.

Importing this module imports asyncssh (~0.2 s): :func:`make_transport` does so only for a remote side.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import posixpath
import shlex
import stat as stat_mod
from collections.abc import Callable, Collection
from typing import Any

import asyncssh

from ...errors import HostKeyError, SSHSetupError, one_line
from ...folder.fileio import inside
from ..endpoints import Endpoint
from .base import DIR, FILE, LINK, Entry, Looker, Transport, check_name
from .findstream import StreamedListing, find_each, find_stream
from .ssh_connect import SSH_ERRORS, host_key_message, preferred_ciphers
from .ssh_connect import mapped as _mapped
from .ssh_connect import transport_error as _transport_error

__all__ = ["SSHTransport"]

# What asyncssh raises once connected: its own errors, and EOFError from a channel closed under a request.
_SSH_ERRORS = SSH_ERRORS


class SSHTransport(StreamedListing, Transport):
    """A folder on a remote machine through asyncssh's SFTP client.

    asyncssh reads ``~/.ssh/config`` (Host aliases, HostName, Port, User, IdentityFile, ProxyJump),
    the default keys and ``SSH_AUTH_SOCK`` agent, and ``~/.ssh/known_hosts``; an unknown or changed
    host key is refused with :class:`HostKeyError`. No password is ever stored.
    """

    remote = True
    FIND = "find"  # GNU find on the remote side, for one-round-trip listings (SFTP when it is missing)
    TAR = "tar"  # GNU tar on the remote side, for new runs in one stream (sync/bulk.py; SFTP when it is missing)
    # Each remote command starts the account's shell, which reads its start-up files (sshd makes bash read
    # ~/.bashrc: `pyenv init` and the like, up to seconds), so a small look goes over SFTP instead: up to
    # SFTP_TOPS run folders walked (their readdirs in parallel), a root of up to SFTP_ROOT entries (a few
    # readdir round trips; a bigger one is left after those) with up to SFTP_STATS folders stat'ed
    SFTP_TOPS, SFTP_ROOT, SFTP_STATS = 8, 400, 256
    FEED_BYTES = 1 << 16  # a look's known folders are sent to the remote find this many bytes at a time

    def __init__(self, endpoint: Endpoint, *, connect_timeout: float = 20.0) -> None:
        super().__init__(endpoint.path)
        self.endpoint = endpoint
        self.connect_timeout = connect_timeout
        self._conn: Any = None
        self._sftp: Any = None
        self._real_root = ""
        self._write_len = 32768
        self._find_ok: bool | None = None  # None: not tried yet
        self.tar_ok: bool | None = None  # False once the remote could not run TAR (sync/bulk.py)

    def describe(self) -> str:
        return str(self.endpoint)

    async def open(self, *, create: bool = False) -> None:
        ep = self.endpoint
        kwargs: dict[str, Any] = {"connect_timeout": self.connect_timeout, "keepalive_interval": 15,
                                  "encryption_algs": preferred_ciphers()}
        if ep.user:
            kwargs["username"] = ep.user
        if ep.port:
            kwargs["port"] = ep.port
        try:
            self._conn = await asyncssh.connect(ep.host, **kwargs)
        except asyncssh.HostKeyNotVerifiable as exc:
            raise HostKeyError(await host_key_message(ep, exc)) from None
        except asyncssh.PermissionDenied as exc:
            raise SSHSetupError(f"{ep.host}: authentication failed ({exc.reason}); load a key into ssh-agent or set "
                                f"IdentityFile in ~/.ssh/config") from None
        except asyncssh.ConfigParseError as exc:
            raise SSHSetupError(f"~/.ssh/config: {exc}") from None
        except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as exc:
            raise SSHSetupError(f"{ep.host}: cannot load the SSH key ({one_line(exc)}); check IdentityFile in "
                                f"~/.ssh/config or load the key into ssh-agent") from None
        except asyncio.TimeoutError as exc:  # before OSError: on Python 3.11+ it is one
            raise _transport_error(self.describe(), exc, f"cannot connect within {self.connect_timeout:g}s") from exc
        except (*_SSH_ERRORS, OSError) as exc:  # refused, unreachable, dropped during the handshake
            raise _transport_error(self.describe(), exc, "cannot connect") from exc
        await self._open_root(create)

    @_mapped
    async def _open_root(self, create: bool) -> None:
        """Start SFTP and resolve the root; ``FileNotFoundError`` when it is not a folder (and not created)."""
        ep = self.endpoint
        self._sftp = await self._conn.start_sftp_client()
        home = await self._sftp.realpath(".")
        self.root = posixpath.normpath(posixpath.join(home, ep.path))
        if create:
            await self._sftp.makedirs(self.root, exist_ok=True)
        if not await self._sftp.isdir(self.root):
            raise FileNotFoundError(f"{ep.host}:{self.root}: no such folder on the remote side")
        self._real_root = await self._sftp.realpath(self.root)
        self._write_len = self._sftp.limits.max_write_len  # 255 KiB from OpenSSH's limits@openssh.com

    async def close(self) -> None:
        self._drop_lister()
        if self._sftp is not None:
            self._sftp.exit()
            self._sftp = None
        if self._conn is not None:
            self._conn.close()
            try:
                await asyncio.wait_for(self._conn.wait_closed(), 5)
            except (asyncio.TimeoutError, *_SSH_ERRORS, OSError):
                pass
            self._conn = None

    async def _find(self, paths: str, expr: str = "", stdin: bytes | None = None) -> list[Entry] | None:
        """The tree as the remote GNU ``find`` prints it, in one round trip (:func:`.findstream.find_stream`);
        None where the remote has no shell access or no GNU find (callers then list over SFTP)."""
        entries: list[Entry] = []

        def each(rel: str, kind: str, size: int, mtime: int) -> None:
            entries.append(Entry(rel, kind, size, mtime))

        return entries if await find_stream(self, paths, expr, [stdin] if stdin else None, each) else None

    @_mapped
    async def run(self, command: str, stdin: bytes = b"") -> tuple[int, bytes, bytes] | None:
        """``command`` through the remote shell, in the root: (exit status, stdout, stderr); None where the
        account has no exec channel (SFTP only)."""
        if self._conn is None:
            return None
        try:
            done = await self._conn.run(f"cd {shlex.quote(self.root)} && {command}", input=stdin, encoding=None,
                                        check=False)
        except asyncssh.ChannelOpenError:
            return None
        return (-1 if done.exit_status is None else done.exit_status), done.stdout or b"", done.stderr or b""

    @_mapped
    async def start(self, command: str, stdout: int) -> Any:
        """``command`` through the remote shell, in the root, its stdout written into the local pipe ``stdout``
        (closed when the command ends; the pace is the reader's); None where there is no exec channel."""
        if self._conn is None:
            return None
        try:
            return await self._conn.create_process(f"cd {shlex.quote(self.root)} && {command}", encoding=None,
                                                   stdout=stdout)
        except asyncssh.ChannelOpenError:
            return None

    async def _resolve_links(self, links: list[str], follow_links: bool) -> list[Entry]:
        entries = []
        for rel in links:
            if not follow_links:
                entries.append(Entry(rel, LINK, note="symlink"))
                continue
            try:
                target = await self._sftp.realpath(self.abs(rel))
                attrs = await self._sftp.stat(target)
            except asyncssh.SFTPError:
                entries.append(Entry(rel, LINK, note="dangling symlink"))
                continue
            if not inside(target, self._real_root):
                entries.append(Entry(rel, LINK, note="symlink pointing out of the tree"))
            elif stat_mod.S_ISDIR(attrs.permissions or 0):
                entries.append(Entry(rel, LINK, note="symlink to a directory (not followed)"))
            else:
                entries.append(Entry(rel, FILE, attrs.size or 0, int(attrs.mtime or 0)))
        return entries

    @_mapped
    async def walk(self, *, follow_links: bool = True, tops: Collection[str] | None = None) -> list[Entry]:
        if tops is not None:
            tops = sorted(tops)
            if not tops:
                return []
            for name in tops:
                check_name(name, "")
        if tops is not None and len(tops) <= self.SFTP_TOPS and self._sftp is not None:
            return await self._sftp_walk(follow_links, set(tops))
        found = await (self._find(".") if tops is None else
                       self._find("TOPS", stdin=b"".join(f"./{t}".encode("utf-8", "surrogateescape") + b"\0"
                                                         for t in tops)))
        if found is not None:
            links = [e.rel for e in found if e.kind == LINK]
            return [e for e in found if e.kind != LINK] + await self._resolve_links(links, follow_links)
        return await self._sftp_walk(follow_links, None if tops is None else set(tops))

    async def _sftp_walk(self, follow_links: bool, tops: set[str] | None) -> list[Entry]:
        """One readdir per folder, folders in parallel; ``tops``: those top-level names only, each stat'ed
        (pipelined) rather than the root listed (a root of thousands of runs is tens of round trips)."""
        sftp = self._sftp
        entries: list[Entry] = []

        async def place(items: list[tuple[str, Any]]) -> list[str]:
            """The entries of one folder's listing; its folders (to list next)."""
            subdirs, links = [], []
            for rel, attrs in items:
                mode = attrs.permissions or 0
                if stat_mod.S_ISLNK(mode):
                    links.append(rel)
                elif stat_mod.S_ISDIR(mode):
                    entries.append(Entry(rel, DIR, mtime=int(attrs.mtime or 0)))
                    subdirs.append(rel)
                elif stat_mod.S_ISREG(mode):
                    entries.append(Entry(rel, FILE, attrs.size or 0, int(attrs.mtime or 0)))
            entries.extend(await self._resolve_links(links, follow_links))
            return subdirs

        async def listed(rel_dir: str) -> list[str]:
            items = []
            for item in sorted(await sftp.readdir(self.abs(rel_dir)), key=lambda n: n.filename):
                if item.filename not in (".", ".."):
                    check_name(item.filename, rel_dir)
                    items.append((f"{rel_dir}/{item.filename}" if rel_dir else item.filename, item.attrs))
            return await place(items)

        if tops is None:
            level = [""]
        else:
            names = sorted(tops)
            found = await asyncio.gather(*(self._lstat(name) for name in names))
            level = await place([(name, attrs) for name, attrs in zip(names, found, strict=True) if attrs is not None])
        while level:  # a level of folders at once (not calls that call each other: a cycle keeps the listing)
            level = [sub for subs in await asyncio.gather(*(listed(d) for d in level)) for sub in subs]
        return entries

    async def _sftp_root(self, limit: int | None, each: Callable[[str, str, int], None] | None = None
                         ) -> list[Entry] | None:
        """The root's entries over SFTP (one round trip per ~100); None once more than ``limit``. With ``each``:
        each entry reported as read instead (name, kind, mtime), none kept."""
        tops: list[Entry] = []
        async with contextlib.aclosing(self._sftp.scandir(self.root)) as items:
            async for item in items:
                name, mode = item.filename, item.attrs.permissions or 0
                if name in (".", ".."):
                    continue
                check_name(name, "")
                kind = LINK if stat_mod.S_ISLNK(mode) else DIR if stat_mod.S_ISDIR(mode) else FILE if \
                    stat_mod.S_ISREG(mode) else ""
                if kind and each is not None:
                    each(name, kind, int(item.attrs.mtime or 0))
                elif kind:
                    tops.append(Entry(name, kind, item.attrs.size or 0 if kind == FILE else 0,
                                      int(item.attrs.mtime or 0)))
                if limit is not None and len(tops) > limit:
                    return None
        return tops

    @_mapped
    async def skeleton(self) -> list[Entry]:
        """A small root (SFTP_ROOT) over SFTP; else one ``find`` for the root's entries: the command that then
        lists the pass's runs (``_root_look``), else one of its own, else SFTP."""
        tops = await self._sftp_root(self.SFTP_ROOT)
        if tops is None:
            listed: list[Entry] = []
            found = listed if await self._root_look(lambda *e: listed.append(Entry(*e))) else await self._find("STAT")
            tops = found if found is not None else await self._sftp_root(None) or []
        return tops

    @_mapped
    async def look(self, looker: Looker) -> None:
        """A small root (SFTP_ROOT) with few known folders (SFTP_STATS) over SFTP; else one remote ``find`` for the
        root's entries and a stat of each known folder, its output reported as it comes (never held whole);
        where the remote cannot run it, the root's listing over SFTP as it comes."""
        known = looker.known_count()  # O(settled runs): asked once a look
        tops = await self._sftp_root(self.SFTP_ROOT) if known <= self.SFTP_STATS else None
        if tops is None:
            if await self._find_each(looker, known):
                return
            looker.reset()
            await self._sftp_root(None, looker.entry)
        else:
            for entry in tops:
                looker.entry(entry.rel, entry.kind, entry.mtime)
        batch: list[str] = []
        for rel in itertools.chain(looker.known(), [None]):  # a few hundred stats in flight at once
            if rel is not None:
                batch.append(rel)
            if batch and (rel is None or len(batch) >= self.SFTP_STATS):
                found = await asyncio.gather(*(self._lstat(one) for one in batch))
                for one, attrs in zip(batch, found, strict=True):
                    if attrs is not None and stat_mod.S_ISDIR(attrs.permissions or 0):
                        looker.entry(one, DIR, int(attrs.mtime or 0))
                batch = []

    async def _lstat(self, rel: str) -> Any:
        """The SFTP attributes of ``rel`` itself; None where it is gone (since the root or a pass looked at it)."""
        try:
            return await self._sftp.lstat(self.abs(rel))
        except asyncssh.SFTPNoSuchFile:
            return None

    async def _find_each(self, looker: Looker, known: int) -> bool:
        """``_find("STAT")`` reported as its output comes (:func:`.findstream.find_each`); with no ``known`` folders
        (``looker.known_count()``), the command that then lists the pass's runs (``_root_look``: one command).
        False: look over SFTP."""
        if not known:
            if await self._root_look(lambda rel, kind, _size, mtime: looker.entry(rel, kind, mtime)):
                return True
            looker.reset()
        return await find_each(self, looker, self.FEED_BYTES, known)

    @_mapped
    async def stat(self, rel: str) -> Entry | None:
        try:
            attrs = await self._sftp.lstat(self.abs(rel))
        except asyncssh.SFTPNoSuchFile:
            return None
        mode = attrs.permissions or 0
        kind = LINK if stat_mod.S_ISLNK(mode) else DIR if stat_mod.S_ISDIR(mode) else FILE
        return Entry(rel, kind, attrs.size or 0, int(attrs.mtime or 0))

    @_mapped
    async def read(self, rel: str, offset: int, size: int) -> bytes:
        try:
            async with self._sftp.open(self.abs(rel), "rb", encoding=None) as handle:
                data = await handle.read(size, offset)
        except asyncssh.SFTPNoSuchFile:
            raise FileNotFoundError(f"{self.describe()}/{rel}: vanished") from None
        self.bytes_read += len(data)
        return data

    @_mapped
    async def write_at(self, rel: str, offset: int, data: bytes, *, truncate: bool = False) -> None:
        flags = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | (asyncssh.FXF_TRUNC if truncate else 0)
        async with self._sftp.open(self.abs(rel), flags, encoding=None) as handle:
            await handle.write(data, offset)
        self.bytes_written += len(data)

    @_mapped
    async def write_final(self, rel: str, offset: int, data: bytes, *, truncate: bool, mtime: int,
                          verify: int, rename_to: str | None = None,
                          expect: tuple[int, bytes] | None = None) -> tuple[int, bytes]:
        """Three round trips per file: open; the writes, the mtime and the read-back pipelined on the handle;
        close and (when verified) rename pipelined.

        Requests on one SFTP session are handled in order by the server (OpenSSH's sftp-server is a
        single loop; the protocol requires it for requests on the same file), so the read-back sees
        the writes. Reading ``verify + 1`` bytes ending one past the expected end checks size and
        tail at once: a short read at end of file returns exactly the tail when the size is right.
        """
        sftp = self._sftp
        flags = asyncssh.FXF_READ | asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | (asyncssh.FXF_TRUNC if truncate else 0)
        # block_size=0: every write/read is exactly one request, so the order we issue them is the wire order
        handle = await sftp.open(self.abs(rel), flags, encoding=None, block_size=0)
        renamed = False
        try:
            block = max(1, min(self._write_len, 1 << 20))
            end = offset + len(data)
            n = min(verify, end)
            view = memoryview(data)
            ops = [handle.write(data if len(data) <= block else bytes(view[i:i + block]), offset + i)
                   for i in range(0, len(data), block)]
            ops.append(handle.utime((mtime, mtime)))
            ops.append(handle.read(n + 1, end - n))
            results = await asyncio.gather(*ops, return_exceptions=True)
            failed = next((r for r in results if isinstance(r, BaseException)), None)
            if failed is not None:
                raise failed
            tail = results[-1]
            if len(tail) == n:
                size = end
            else:  # not the expected size: report the real one (rare; the caller re-copies, the tail is moot)
                size = (await handle.stat()).size or 0
                tail = tail[-n:] if n else b""
            result = size, tail
            if rename_to is not None and result == expect:
                await asyncio.gather(handle.close(), sftp.posix_rename(self.abs(rel), self.abs(rename_to)))
                renamed = True
        finally:
            if not renamed:
                await handle.close()
        self.bytes_written += len(data)
        self.bytes_read += len(tail)
        return result

    @_mapped
    async def mkdir(self, rel: str) -> None:
        try:
            await self._sftp.mkdir(self.abs(rel))
        except asyncssh.SFTPError:
            if not await self._sftp.isdir(self.abs(rel)):
                raise

    @_mapped
    async def rename(self, src_rel: str, dst_rel: str) -> None:
        await self._sftp.posix_rename(self.abs(src_rel), self.abs(dst_rel))

    @_mapped
    async def remove(self, rel: str) -> None:
        await self._sftp.remove(self.abs(rel))

    @_mapped
    async def makedirs(self, rel: str) -> None:
        await self._sftp.makedirs(self.abs(rel), exist_ok=True)

    @_mapped
    async def set_mtime(self, rel: str, mtime: int) -> None:
        await self._sftp.utime(self.abs(rel), (mtime, mtime))

    @_mapped
    async def truncate(self, rel: str, size: int) -> None:
        await self._sftp.truncate(self.abs(rel), size)
