"""Parse the two sides of a sync: a local path, ``[user@]host[:port]:path`` or ``ssh://user@host[:port]/path``.

Why its own module: the rules for telling a remote spec from a local path are subtle (``./a:b`` is
local, ``host:2222:runs`` has a port), and every error must name the spec and what is wrong.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from ..errors import ConfigError
from ..folder.fileio import inside

__all__ = ["Endpoint", "parse_endpoint", "check_apart"]

_HOST = r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+)"
_SCP = re.compile(rf"^(?:(?P<user>[^@/:\s]+)@)?(?P<host>{_HOST})(?::(?P<port>\d+))?:(?P<path>.*)$")


@dataclass(frozen=True)
class Endpoint:
    """One side of a sync. ``host`` is None for a local path.

    A remote ``path`` is used as given: relative paths are relative to the remote login directory.
    """

    path: str
    host: str | None = None
    user: str | None = None
    port: int | None = None

    @property
    def is_remote(self) -> bool:
        return self.host is not None

    def __str__(self) -> str:
        if not self.is_remote:
            return self.path
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{user}{self.host}{port}:{self.path}"


def _check_port(spec: str, port: str | None) -> int | None:
    if port is None:
        return None
    value = int(port)
    if not 0 < value < 65536:
        raise ConfigError(f"{spec!r}: port {value} is out of range 1-65535")
    return value


def parse_endpoint(spec: str) -> Endpoint:
    """Parse a command-line side; raises ``ValueError`` with a one-line reason."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError("empty path: give a local folder, [user@]host[:port]:path or ssh://user@host[:port]/path")
    if "\x00" in spec:
        raise ConfigError(f"{spec!r}: NUL byte in path")
    if spec.startswith("ssh://"):
        parts = urlsplit(spec)
        if not parts.hostname:
            raise ConfigError(f"{spec!r}: no host in ssh:// URL")
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(f"{spec!r}: port is not a number in 1-65535") from None
        path = unquote(parts.path) or "."
        if path.startswith("/~/"):
            path = path[3:] or "."
        elif path == "/~":
            path = "."
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        return Endpoint(path=path, host=host.strip("[]"), user=unquote(parts.username) if parts.username else None,
                        port=port)
    # A path that starts like a path, or has a slash before any colon, is local (./a:b, /x/y:z).
    first_colon = spec.find(":")
    first_slash = spec.find("/")
    looks_local = (spec.startswith(("/", ".", "~")) or first_colon < 0
                   or (0 <= first_slash < first_colon))
    if not looks_local:
        match = _SCP.match(spec)
        if match is None:
            raise ConfigError(f"{spec!r}: not a local path, [user@]host[:port]:path or ssh://user@host[:port]/path")
        port = _check_port(spec, match["port"])
        return Endpoint(path=match["path"] or ".", host=match["host"].strip("[]"), user=match["user"], port=port)
    return Endpoint(path=os.path.abspath(os.path.expanduser(spec)))


def check_apart(src: Endpoint, dest: Endpoint) -> None:
    """Refuse a local DEST inside SRC (each pass would copy the mirror into itself, one level deeper)
    and a local SRC inside DEST (the mirror's files would be its own source)."""
    if src.is_remote or dest.is_remote:
        return
    a, b = os.path.realpath(src.path), os.path.realpath(dest.path)
    if a == b:
        raise ConfigError(f"SRC {src.path} and DEST {dest.path} are the same folder")
    if inside(b, a):
        raise ConfigError(f"DEST {dest.path} is inside SRC {src.path}; choose a mirror folder outside the source")
    if inside(a, b):
        raise ConfigError(f"SRC {src.path} is inside DEST {dest.path}; choose a mirror folder outside the source")
