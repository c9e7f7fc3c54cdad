"""``lt-sync``: an incremental, live mirror of run folders over SSH (SFTP only on the server side).

Split rsync-style into deciding what changed (:mod:`.manifest`, :mod:`.plan`) and moving bytes
(:mod:`.transport`, :mod:`.engine`); :mod:`.runicorn` keeps a Runicorn viewer's storage up to date.
"""

from __future__ import annotations

from .endpoints import Endpoint, parse_endpoint
from .engine import CycleResult, SyncError, SyncOptions, SyncSession, run_loop, sync_once
from .transport import HostKeyError, SSHSetupError, UnsafePathError

__all__ = [
    "Endpoint",
    "parse_endpoint",
    "SyncOptions",
    "SyncSession",
    "CycleResult",
    "SyncError",
    "HostKeyError",
    "SSHSetupError",
    "UnsafePathError",
    "sync_once",
    "run_loop",
]
