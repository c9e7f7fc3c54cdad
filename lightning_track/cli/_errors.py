"""One table from the failures a command can meet to the line it prints and the code it exits with.

Every command (``lt`` and its subcommands, ``lt-run``, ``lt-sync``, ``lt-migrate``, ``lt-demo``) runs
its body through :func:`reported`, so a known failure reaches the user as one line on stderr naming the
file, key or value, never as a traceback. An exception outside the table is a bug and keeps its
traceback. The order matters: the first class that matches decides. A command whose contract gives
a failure another code (lt-run: anything before the command's own code exists is usage, 2) says so
as its own rows, ``reports(prefix, rules)``, checked after Ctrl-C and a closed pipe and before the table.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import ConfigError, LightningTrackError, SourceError, SyncError, one_line
from ..query.format import printable
from ..vocabulary import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, exit_status

__all__ = ["KNOWN_ERRORS", "Rules", "exit_code", "message", "reported", "reports"]

Rules = tuple[tuple[type[BaseException], int], ...]

#: Before any command's own rows: how a run is stopped or its reader went away is never an error.
_ALWAYS: Rules = (
    (KeyboardInterrupt, exit_status(-signal.SIGINT)),  # 130, as the shell reports a Ctrl-C
    (BrokenPipeError, EXIT_OK),  # `lt ls | head`: the reader has what it wanted
)

#: (exception class, exit code), first match wins. Usage: bad input, nothing was done.
KNOWN_ERRORS: Rules = (
    *_ALWAYS,
    (ConfigError, EXIT_USAGE),  # an argument, config key, pipeline file or filter
    (SourceError, EXIT_USAGE),  # lt-migrate's SOURCE or --out
    (SyncError, EXIT_USAGE),  # lt-sync: host key, authentication, SRC/DEST, --state
    (LightningTrackError, EXIT_FAILURE),  # a run folder or file that cannot be used, a sink, a transfer
    (OSError, EXIT_FAILURE),  # a full disk, a missing folder, a permission
)

F = TypeVar("F", bound=Callable[..., int])


def exit_code(exc: BaseException, rules: Rules = ()) -> int | None:
    """The exit code for ``exc`` (a command's own ``rules`` before the table), or None when it is not a
    known failure (a bug: let it show)."""
    for kind, code in (*_ALWAYS, *rules, *KNOWN_ERRORS[len(_ALWAYS):]):
        if isinstance(exc, kind):
            return code
    return None


def message(exc: BaseException) -> str:
    """``exc`` on one line; an ``OSError`` of ours or the system's names its file."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    text = one_line(exc)
    if isinstance(exc, OSError) and not isinstance(exc, LightningTrackError) and exc.filename is not None:
        name = str(exc.filename)
        if name not in text:
            text = f"{name}: {text}"
    return text


def reported(prefix: str, body: Callable[..., int], *args: Any, rules: Rules = ()) -> int:
    """``body(*args)``; a known failure becomes ``<prefix>: <message>`` on stderr and its exit code."""
    try:
        return int(body(*args) or 0)
    except BaseException as exc:
        code = exit_code(exc, rules)
        if code is None or isinstance(exc, SystemExit):
            raise
        if isinstance(exc, BrokenPipeError):
            try:  # Python's own flush at exit must not fail on the closed pipe again
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError):
                pass
            return code
        print(printable(f"{prefix}: {message(exc)}"), file=sys.stderr, flush=True)
        return code


def reports(prefix: str, rules: Rules = ()) -> Callable[[F], F]:
    """Decorate a command's ``main(argv)`` with :func:`reported` (and the command's own ``rules``)."""

    def wrap(main: F) -> F:
        @functools.wraps(main)
        def run(*args: Any, **kwargs: Any) -> int:
            return reported(prefix, functools.partial(main, *args, **kwargs), rules=rules)

        return run  # type: ignore[return-value]

    return wrap
