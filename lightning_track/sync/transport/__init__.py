"""Moving bytes: one small interface (:mod:`.base`), a local (:mod:`.local`) and an SSH/SFTP (:mod:`.ssh`)
implementation.

``SSHTransport`` is imported on first use, so a local-only sync never imports asyncssh.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...errors import HostKeyError, SSHSetupError, UnsafePathError
from ...folder.fileio import inside
from ..endpoints import Endpoint
from .base import DIR, FILE, LINK, Entry, Looker, Transport, check_name, check_rel
from .local import LocalTransport

if TYPE_CHECKING:
    from .ssh import SSHTransport

__all__ = [
    "Entry",
    "Looker",
    "Transport",
    "LocalTransport",
    "SSHTransport",
    "UnsafePathError",
    "HostKeyError",
    "SSHSetupError",
    "check_rel",
    "check_name",
    "make_transport",
    "FILE",
    "DIR",
    "LINK",
    "inside",
]


def make_transport(endpoint: Endpoint) -> Transport:
    """The transport for one side of a sync (the SSH one, and asyncssh, imported only when a side is remote)."""
    if endpoint.is_remote:
        from .ssh import SSHTransport

        return SSHTransport(endpoint)
    return LocalTransport(endpoint.path)


def __getattr__(name: str) -> Any:
    if name == "SSHTransport":
        from .ssh import SSHTransport

        return SSHTransport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
