"""Every exception lightning_track raises on purpose, in one tree.

Why one module: a caller (a driver script, a CLI, a test) should be able to catch "anything this
library refused" with one class, and tell the kinds apart without knowing which module raised it.
Each class also keeps the built-in base it had before the tree existed, so ``except ValueError`` or
``except RuntimeError`` in existing code still catches it. Messages are one line naming the file,
key or value and the fix (:func:`one_line` flattens a foreign exception's text the same way).

::

    LightningTrackError
    ├── ConfigError(ValueError)            a config file, key or value that cannot be used
    │   └── FilterError                    an lt --filter expression that does not parse
    ├── RunFolderError(ValueError)         a run folder or one of its files that cannot be used
    │   ├── JsonlProblem                   one line of a JSONL file (path:line: reason)
    │   └── ResumeError                    a resume that would rewind or lose the record
    ├── RunNotFound(FileNotFoundError)     a run folder that does not exist (or a folder that is not a run)
    ├── WriterError(RuntimeError)          a sink failed while training (raised at the next log call)
    │   └── SinkHostError                  the sink host process died or replied with garbage
    ├── MigrationError                     lt-migrate
    │   ├── SourceError(ValueError)        SOURCE or --out unusable: nothing migrated
    │   └── CheckpointError(ValueError)    one checkpoint cannot be converted: the run goes on without it
    ├── SyncError(RuntimeError)            lt-sync: a problem retrying cannot fix (the loop stops)
    │   ├── UnsafePathError(ValueError)    a path that would leave the tree
    │   ├── HostKeyError                   unknown or changed host key (with the fingerprint and the fix)
    │   └── SSHSetupError                  authentication or SSH configuration
    ├── TransferError(RuntimeError)        lt-sync: one cycle's copy went wrong; the next cycle retries
    │   ├── VerifyError                    a copied file does not match its source
    │   ├── SourceChanged                  a source file changed while it was copied
    │   └── TransportError(OSError)        the connection failed or was lost (the SSH library's errors, mapped)
    └── ExportError(RuntimeError)          lt export: a run (or the tracker) that cannot be exported now
        └── ExportBusy                     another export of the run holds its lock (try again later)

``HealthCheckFailed`` (:mod:`lightning_track.callbacks.health`) stays outside the tree on purpose: it is
a ``SystemExit`` carrying exit code 86, so an unhealthy run ends with that code even when user code
catches ``Exception`` around ``trainer.fit``.

Torch-free (standard library only).
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "LightningTrackError", "ConfigError", "FilterError", "RunFolderError", "JsonlProblem", "ResumeError", "RunNotFound",
    "WriterError",
    "SinkHostError", "MigrationError", "SourceError", "CheckpointError", "SyncError", "UnsafePathError",
    "HostKeyError", "SSHSetupError", "TransferError", "VerifyError", "SourceChanged", "TransportError", "ExportError",
    "ExportBusy",
    "one_line",
]


class LightningTrackError(Exception):
    """Base of every error lightning_track raises on purpose."""


class ConfigError(LightningTrackError, ValueError):
    """A config file, key or value that cannot be used; the message names it and the fix."""


class FilterError(ConfigError):
    """A filter expression that does not parse; the message names the expression and the column."""


class RunFolderError(LightningTrackError, ValueError):
    """A run folder, or one of its files, that cannot be used as it is."""


class JsonlProblem(RunFolderError):
    """A line of a JSONL file that could not be used, with where and why."""

    def __init__(self, path: Path, lineno: int, reason: str) -> None:
        self.path, self.lineno, self.reason = path, lineno, reason
        super().__init__(f"{path}:{lineno}: {reason}")

    def __reduce__(self):  # type: ignore[no-untyped-def] # pickled across the sink host and workers
        return (type(self), (self.path, self.lineno, self.reason))


class ResumeError(RunFolderError):
    """A resume that would rewind the run or overwrite its record without an explicit opt-in."""


class RunNotFound(LightningTrackError, FileNotFoundError):
    """A run folder that does not exist, or a folder that is not a run; the message names the path."""


class WriterError(LightningTrackError, RuntimeError):
    """A sink failed on the writer thread; raised on the training thread at the next call."""


class SinkHostError(WriterError):
    """The sink host failed in a way that has no picklable exception (it died, an unpicklable error)."""


class MigrationError(LightningTrackError):
    """Base of lt-migrate's errors."""


class SourceError(MigrationError, ValueError):
    """SOURCE (or --out) cannot be used at all: nothing is migrated."""


class CheckpointError(MigrationError, ValueError):
    """A checkpoint that cannot be converted (its content); the run goes on without it."""


class SyncError(LightningTrackError, RuntimeError):
    """lt-sync: a problem that retrying cannot fix (missing source folder, bad arguments)."""


class UnsafePathError(SyncError, ValueError):
    """A path that would leave the tree (``..``, absolute, symlink out of the tree)."""


class HostKeyError(SyncError):
    """The server's host key is unknown or changed: refused, with its fingerprint and how to accept it."""


class SSHSetupError(SyncError):
    """Authentication or configuration failure that retrying will not fix."""


class TransferError(LightningTrackError, RuntimeError):
    """lt-sync: one cycle's copy went wrong in a way the next cycle may not repeat (``--every`` retries)."""


class VerifyError(TransferError):
    """A copied file does not match its source."""


class SourceChanged(TransferError):
    """A source file changed while it was being copied; the next cycle copies it again."""


class TransportError(TransferError, OSError):
    """The connection failed or was lost (the SSH library's own errors, mapped); ``--every`` retries it."""


class ExportError(LightningTrackError, RuntimeError):
    """lt export: the tracker is unreachable or refused the run, or another export of it is in progress;
    the export record holds only what the tracker confirmed."""


class ExportBusy(ExportError):
    """Another export of the run (``lt export``, a live sink) holds its lock; nothing was sent."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's text on one line (whitespace collapsed, cut at ``limit``), or its class name.

    ``OSError`` gives its ``strerror`` (``No space left on device``), not the errno tuple.
    """
    if isinstance(exc, OSError) and exc.strerror and not isinstance(exc, LightningTrackError):
        text = exc.strerror
    else:
        text = " ".join(str(exc).split())
    text = text or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
