r"""Connecting over SSH: the refusal of an unknown or changed host key, the ciphers to offer, and the SSH
library's errors as the project's (one-line :class:`TransportError`\ s naming where).

Apart from ssh.py (the transport itself) to keep that module to the transport's operations.
"""

from __future__ import annotations

import asyncio
import functools
import getpass
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncssh
from asyncssh.config import SSHClientConfig
from asyncssh.encryption import get_default_encryption_algs

from ...errors import TransportError, one_line
from ..endpoints import Endpoint

__all__ = ["SSH_ERRORS", "host_key_message", "mapped", "preferred_ciphers", "transport_error"]

SSH_ERRORS = (asyncssh.Error, EOFError)  # what asyncssh raises for a failed connection or channel
_T = TypeVar("_T")


def transport_error(where: str, exc: BaseException, what: str | None = None) -> TransportError:
    """The one-line :class:`TransportError` for an error of the SSH library (or the socket under it) at ``where``."""
    if what is None:
        if isinstance(exc, (asyncssh.DisconnectError, EOFError)):
            what = "connection lost"
        elif isinstance(exc, asyncssh.ChannelOpenError):
            what = "the server refused an SFTP channel"
        elif isinstance(exc, asyncssh.SFTPError):
            what = "SFTP request failed"
        else:
            what = "SSH error"
    name, text = type(exc).__name__, one_line(exc)
    return TransportError(f"{where}: {what} ({name if text == name else f'{name}: {text}'})")


def mapped(method: Callable[..., Awaitable[_T]]) -> Callable[..., Awaitable[_T]]:
    """Raise the SSH library's errors from one operation of a transport as :class:`TransportError` naming the
    file (the operation's first argument when it is a path, else the endpoint)."""

    @functools.wraps(method)
    async def call(self: Any, *args: Any, **kwargs: Any) -> _T:
        try:
            return await method(self, *args, **kwargs)
        except SSH_ERRORS as exc:
            rel = args[0] if args and isinstance(args[0], str) else ""
            raise transport_error(f"{self.describe()}/{rel}" if rel else self.describe(), exc) from exc

    return call


async def host_key_message(endpoint: Endpoint, exc: Exception) -> str:
    """Build the refusal: what the server presented (fingerprint) and how to accept it knowingly."""
    try:  # resolve ~/.ssh/config aliases so the message names the real host and port
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
    except (*SSH_ERRORS, OSError, asyncio.TimeoutError):
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


def preferred_ciphers() -> list[str]:
    """asyncssh's defaults with AES-GCM first: it runs in OpenSSL, chacha20-poly1305 partly in Python."""
    algs = [a.decode() for a in get_default_encryption_algs()]
    fast = [a for a in ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com") if a in algs]
    return fast + [a for a in algs if a not in fast]
