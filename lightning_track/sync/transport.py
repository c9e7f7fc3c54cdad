"""Moving bytes: one small interface, a local and an SSH (SFTP) implementation.

Why SFTP only: the server side then needs nothing but sshd's sftp subsystem -- no rsync, no Python,
no shell commands. Every operation takes a path *relative to the transport's root* and checks it,
so no caller can name a file outside the tree (``..``, absolute paths, NUL bytes are refused).
"""

from __future__ import annotations

import asyncio
import getpass
import os
import posixpath
import stat as stat_mod
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .endpoints import Endpoint

__all__ = [
    "Entry",
    "Transport",
    "LocalTransport",
    "SSHTransport",
    "UnsafePathError",
    "HostKeyError",
    "SSHSetupError",
    "check_rel",
    "make_transport",
]

FILE, DIR, LINK = "file", "dir", "link"


class UnsafePathError(ValueError):
    """A path that would leave the tree (``..``, absolute, symlink out of the tree)."""


class HostKeyError(RuntimeError):
    """The server's host key is unknown or changed: refused, with its fingerprint and how to accept it."""


class SSHSetupError(RuntimeError):
    """Authentication or configuration failure that retrying will not fix."""


@dataclass(frozen=True)
class Entry:
    """One item of a tree listing. ``mtime`` is whole seconds (SFTP v3 has no finer times)."""

    rel: str
    kind: str  # "file" | "dir" | "link" (a symlink that is not followed; ``note`` says why)
    size: int = 0
    mtime: int = 0
    note: str = ""


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


def _inside(target: str, root: str) -> bool:
    return target == root or target.startswith(root.rstrip("/") + "/")


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
    async def walk(self, *, follow_links: bool = True) -> list[Entry]:
        """Every file, directory and symlink under the root.

        With ``follow_links`` a symlink to a file inside the tree is listed as that file; every other
        symlink (out of the tree, to a folder, dangling, or any symlink without ``follow_links``) is a
        ``link`` entry with the reason it is not followed.
        """

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


class LocalTransport(Transport):
    """A folder on this machine. Writes never follow a symlink in the last path component."""

    async def open(self, *, create: bool = False) -> None:
        if create:
            os.makedirs(self.root, exist_ok=True)
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"{self.root}: no such folder")
        self._real_root = os.path.realpath(self.root)

    async def walk(self, *, follow_links: bool = True) -> list[Entry]:
        entries: list[Entry] = []
        real_root = os.path.realpath(self.root)

        def visit(abs_dir: str, rel_dir: str) -> None:
            with os.scandir(abs_dir) as it:
                items = sorted(it, key=lambda e: e.name)
            for item in items:
                check_name(item.name, rel_dir)
                rel = f"{rel_dir}/{item.name}" if rel_dir else item.name
                if item.is_symlink():
                    target = os.path.realpath(item.path)
                    if not follow_links:
                        entries.append(Entry(rel, LINK, note="symlink"))
                    elif not _inside(target, real_root):
                        entries.append(Entry(rel, LINK, note="symlink pointing out of the tree"))
                    elif os.path.isdir(target):
                        entries.append(Entry(rel, LINK, note="symlink to a directory (not followed)"))
                    elif os.path.isfile(target):
                        st = os.stat(target)
                        entries.append(Entry(rel, FILE, st.st_size, int(st.st_mtime)))
                    else:
                        entries.append(Entry(rel, LINK, note="dangling symlink"))
                elif item.is_dir(follow_symlinks=False):
                    entries.append(Entry(rel, DIR))
                    visit(item.path, rel)
                elif item.is_file(follow_symlinks=False):
                    st = item.stat(follow_symlinks=False)
                    entries.append(Entry(rel, FILE, st.st_size, int(st.st_mtime)))

        await asyncio.to_thread(visit, self.root, "")
        return entries

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


def _ssh_errors() -> tuple[type[BaseException], ...]:
    import asyncssh

    return (asyncssh.Error, OSError)


async def _host_key_message(endpoint: Endpoint, exc: Exception) -> str:
    """Build the refusal: what the server presented (fingerprint) and how to accept it knowingly."""
    import asyncssh

    try:  # resolve ~/.ssh/config aliases so the message names the real host and port
        from asyncssh.config import SSHClientConfig

        paths = [str(p) for p in [Path("~/.ssh/config").expanduser()] if p.is_file()]
        config = SSHClientConfig.load(None, paths, False, False, False, getpass.getuser(), endpoint.user or (),
                                      endpoint.host, endpoint.port or ())
        host = str(config.get("Hostname", endpoint.host) or endpoint.host)
        port = int(endpoint.port or config.get("Port", 22) or 22)
    except (ValueError, OSError, KeyError, asyncssh.Error):
        host, port = endpoint.host, endpoint.port or 22
    target = host if port == 22 else f"[{host}]:{port}"
    try:
        key = await asyncssh.get_server_host_key(endpoint.host, port=endpoint.port or ())
    except (asyncssh.Error, OSError):
        key = None
    known = Path("~/.ssh/known_hosts").expanduser()
    changed = False
    if known.is_file():
        try:
            trusted = asyncssh.match_known_hosts(asyncssh.read_known_hosts(str(known)), host, host, port)[0]
            changed = bool(trusted)
        except (ValueError, OSError):
            changed = False
    if key is None:
        what = "could not be read"
    else:
        what = f"{key.get_algorithm()} {key.get_fingerprint('sha256')}"
    scan = f"ssh-keyscan {'-p ' + str(port) + ' ' if port != 22 else ''}{host} >> ~/.ssh/known_hosts"
    if changed:
        return (f"host key for {target} has CHANGED and does not match ~/.ssh/known_hosts (server now presents "
                f"{what}); refused. If the change is expected, remove the old key with `ssh-keygen -R '{target}'` "
                f"and accept the new one after checking its fingerprint: `{scan}`")
    return (f"host key for {target} is unknown (server presents {what}); refused. Check the fingerprint with the "
            f"server's admin, then accept it with `ssh -p {port} {host}` (answer yes) or `{scan}`")


def _preferred_ciphers() -> list[str]:
    """asyncssh's defaults with AES-GCM first: it runs in OpenSSL, chacha20-poly1305 partly in Python."""
    from asyncssh.encryption import get_default_encryption_algs

    algs = [a.decode() for a in get_default_encryption_algs()]
    fast = [a for a in ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com") if a in algs]
    return fast + [a for a in algs if a not in fast]


class SSHTransport(Transport):
    """A folder on a remote machine through asyncssh's SFTP client.

    asyncssh reads ``~/.ssh/config`` (Host aliases, HostName, Port, User, IdentityFile, ProxyJump),
    the default keys and ``SSH_AUTH_SOCK`` agent, and ``~/.ssh/known_hosts``; an unknown or changed
    host key is refused with :class:`HostKeyError`. No password is ever stored.
    """

    remote = True

    def __init__(self, endpoint: Endpoint, *, connect_timeout: float = 20.0) -> None:
        super().__init__(endpoint.path)
        self.endpoint = endpoint
        self.connect_timeout = connect_timeout
        self._conn: Any = None
        self._sftp: Any = None
        self._real_root = ""
        self._write_len = 32768

    def describe(self) -> str:
        return str(self.endpoint)

    async def open(self, *, create: bool = False) -> None:
        import asyncssh

        ep = self.endpoint
        kwargs: dict[str, Any] = {"connect_timeout": self.connect_timeout, "keepalive_interval": 15,
                                  "encryption_algs": _preferred_ciphers()}
        if ep.user:
            kwargs["username"] = ep.user
        if ep.port:
            kwargs["port"] = ep.port
        try:
            self._conn = await asyncssh.connect(ep.host, **kwargs)
        except asyncssh.HostKeyNotVerifiable as exc:
            raise HostKeyError(await _host_key_message(ep, exc)) from None
        except asyncssh.PermissionDenied as exc:
            raise SSHSetupError(f"{ep.host}: authentication failed ({exc.reason}); load a key into ssh-agent or set "
                                f"IdentityFile in ~/.ssh/config") from None
        except asyncssh.ConfigParseError as exc:
            raise SSHSetupError(f"~/.ssh/config: {exc}") from None
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
        if self._sftp is not None:
            self._sftp.exit()
            self._sftp = None
        if self._conn is not None:
            self._conn.close()
            try:
                await asyncio.wait_for(self._conn.wait_closed(), 5)
            except (asyncio.TimeoutError, *_ssh_errors()):
                pass
            self._conn = None

    async def walk(self, *, follow_links: bool = True) -> list[Entry]:
        import asyncssh

        sftp = self._sftp
        entries: list[Entry] = []

        async def visit(rel_dir: str) -> None:
            names = await sftp.readdir(self.abs(rel_dir))
            subdirs = []
            links = []
            for item in sorted(names, key=lambda n: n.filename):
                name = item.filename
                if name in (".", ".."):
                    continue
                check_name(name, rel_dir)
                rel = f"{rel_dir}/{name}" if rel_dir else name
                mode = item.attrs.permissions or 0
                if stat_mod.S_ISLNK(mode):
                    links.append(rel)
                elif stat_mod.S_ISDIR(mode):
                    entries.append(Entry(rel, DIR))
                    subdirs.append(rel)
                elif stat_mod.S_ISREG(mode):
                    entries.append(Entry(rel, FILE, item.attrs.size or 0, int(item.attrs.mtime or 0)))
            for rel in links:
                if not follow_links:
                    entries.append(Entry(rel, LINK, note="symlink"))
                    continue
                try:
                    target = await sftp.realpath(self.abs(rel))
                    attrs = await sftp.stat(target)
                except asyncssh.SFTPError:
                    entries.append(Entry(rel, LINK, note="dangling symlink"))
                    continue
                if not _inside(target, self._real_root):
                    entries.append(Entry(rel, LINK, note="symlink pointing out of the tree"))
                elif stat_mod.S_ISDIR(attrs.permissions or 0):
                    entries.append(Entry(rel, LINK, note="symlink to a directory (not followed)"))
                else:
                    entries.append(Entry(rel, FILE, attrs.size or 0, int(attrs.mtime or 0)))
            await asyncio.gather(*(visit(d) for d in subdirs))

        await visit("")
        return entries

    async def stat(self, rel: str) -> Entry | None:
        import asyncssh

        try:
            attrs = await self._sftp.lstat(self.abs(rel))
        except asyncssh.SFTPNoSuchFile:
            return None
        mode = attrs.permissions or 0
        kind = LINK if stat_mod.S_ISLNK(mode) else DIR if stat_mod.S_ISDIR(mode) else FILE
        return Entry(rel, kind, attrs.size or 0, int(attrs.mtime or 0))

    async def read(self, rel: str, offset: int, size: int) -> bytes:
        import asyncssh

        try:
            async with self._sftp.open(self.abs(rel), "rb", encoding=None) as handle:
                data = await handle.read(size, offset)
        except asyncssh.SFTPNoSuchFile:
            raise FileNotFoundError(f"{self.describe()}/{rel}: vanished") from None
        self.bytes_read += len(data)
        return data

    async def write_at(self, rel: str, offset: int, data: bytes, *, truncate: bool = False) -> None:
        import asyncssh

        flags = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | (asyncssh.FXF_TRUNC if truncate else 0)
        async with self._sftp.open(self.abs(rel), flags, encoding=None) as handle:
            await handle.write(data, offset)
        self.bytes_written += len(data)

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
        import asyncssh

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

    async def mkdir(self, rel: str) -> None:
        import asyncssh

        try:
            await self._sftp.mkdir(self.abs(rel))
        except asyncssh.SFTPError:
            if not await self._sftp.isdir(self.abs(rel)):
                raise

    async def rename(self, src_rel: str, dst_rel: str) -> None:
        await self._sftp.posix_rename(self.abs(src_rel), self.abs(dst_rel))

    async def remove(self, rel: str) -> None:
        await self._sftp.remove(self.abs(rel))

    async def makedirs(self, rel: str) -> None:
        await self._sftp.makedirs(self.abs(rel), exist_ok=True)

    async def set_mtime(self, rel: str, mtime: int) -> None:
        await self._sftp.utime(self.abs(rel), (mtime, mtime))

    async def truncate(self, rel: str, size: int) -> None:
        await self._sftp.truncate(self.abs(rel), size)


def make_transport(endpoint: Endpoint) -> Transport:
    """The transport for one side of a sync."""
    return SSHTransport(endpoint) if endpoint.is_remote else LocalTransport(endpoint.path)
