"""``lt-sync``: an incremental, live mirror of run folders over SSH (SFTP only on the server side).

Split rsync-style into deciding what changed (:mod:`.manifest`, :mod:`.plan`) and moving bytes
(:mod:`.transport`, :mod:`.engine`); :mod:`.runicorn` keeps a Runicorn viewer's storage up to date.
Errors are :mod:`lightning_track.errors`' ``SyncError`` (retrying cannot fix it) and ``TransferError``
(the next ``--every`` cycle retries); the SSH library's own exceptions never leave :mod:`.transport`.
"""

from __future__ import annotations

from ..errors import HostKeyError, SSHSetupError, SyncError, TransferError, TransportError, UnsafePathError
from .endpoints import Endpoint, parse_endpoint
from .engine import CycleResult, SyncOptions, SyncSession, run_loop, sync_once
from .many import ManySync, Source, SourcePass, plan_sources, read_sources_file, source_folder

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
    "TransferError",
    "TransportError",
    "sync_once",
    "run_loop",
    "ManySync",
    "Source",
    "SourcePass",
    "plan_sources",
    "read_sources_file",
    "source_folder",
]
