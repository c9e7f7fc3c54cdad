"""Listings through the remote GNU ``find``: one round trip for a tree (SFTP needs one or more per folder),
its output read and reported an entry at a time as it comes (a root of 100,000 runs is never one buffer).

Apart from ssh.py (the transport itself) because it is one job: the command, the feeding of its stdin, the
parsing of ``find -printf``'s records and the verdict on its exit. The transport keeps whether find works
there (``_find_ok``: None until tried, False for SFTP from then on).
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import asyncssh

from .base import DIR, FILE, LINK, Looker, check_name
from .ssh_connect import SSH_ERRORS

__all__ = ["find_stream", "find_each"]

_KINDS = {"f": FILE, "d": DIR, "l": LINK}


async def find_stream(transport: Any, paths: str, expr: str, stdin: Iterable[bytes] | None,
                      each: Callable[[str, str, int, int], None]) -> bool:
    """The tree as GNU ``find`` on ``transport``'s remote side prints it, reported as it comes: ``each(rel, kind,
    size, mtime)`` (the output never held whole), ``stdin`` fed as the remote reads it. False where find cannot
    answer (no shell access, no GNU find, output that is not find's): then what was reported is no answer.

    ``paths`` is ``.``, ``TOPS`` (NUL-separated ``./name`` on stdin, through ``xargs``: their trees) or
    ``STAT`` (the root's entries, then each ``./path`` on stdin itself, not its contents). A non-zero exit
    is accepted only when every complaint is a file that vanished mid-listing (a live run's temp file);
    anything else (an unreadable folder) falls back to SFTP, whose listing raises it by name.
    """
    conn = transport._conn
    if transport._find_ok is False or conn is None:  # no connection of its own: an SFTP session only
        return False
    find = transport.FIND
    fmt = shlex.quote("%y\\t%s\\t%T@\\t%p\\0")  # find expands the escapes
    inner = f'exec {find} "$@" {"-maxdepth 0" if paths == "STAT" else expr} -printf {fmt}'
    xargs = f"LC_ALL=C xargs -0 -r sh -c {shlex.quote(inner)} sh"  # stdin must be given (and is closed)
    if paths == "TOPS":  # the names on stdin: the trees under them
        cmd = xargs
    elif paths == "STAT":  # the root's own entries, then each path on stdin itself
        cmd = f"LC_ALL=C {find} . -mindepth 1 -maxdepth 1 -printf {fmt}" + (f" && {xargs}" if stdin else "")
    else:
        cmd = f"LC_ALL=C {find} . -mindepth 1 {expr} -printf {fmt}"
    try:
        proc = await conn.create_process(f"cd {shlex.quote(transport.root)} && {cmd}", encoding=None)
    except asyncssh.ChannelOpenError:  # an SFTP-only account (ForceCommand internal-sftp and the like)
        transport._find_ok = False
        return False

    async def feed() -> None:
        try:
            for data in stdin or ():
                proc.stdin.write(data)
                await proc.stdin.drain()
            proc.stdin.write_eof()
        except (OSError, *SSH_ERRORS):  # the command ended before reading it all
            pass

    writer, complaints = asyncio.ensure_future(feed()), asyncio.ensure_future(proc.stderr.read())
    rest, got, bad = b"", False, False
    try:
        while chunk := await proc.stdout.read(1 << 16):
            got = True
            if bad:
                continue  # to its end, for its exit status
            records = (rest + chunk).split(b"\0")
            rest = records.pop()
            try:
                for record in records:
                    kind, size, mtime, path = record.decode("utf-8").split("\t", 3)
                    rel = path[2:] if path.startswith("./") else path
                    if kind not in _KINDS or not rel:
                        continue
                    head = ""
                    for name in rel.split("/"):
                        check_name(name, head)
                        head = f"{head}/{name}" if head else name
                    each(rel, _KINDS[kind], int(size) if kind == "f" else 0, int(mtime.split(".")[0]))
            except ValueError:  # not find's output (a shell start-up file printing, a name SFTP cannot spell)
                bad = True
        await proc.wait_closed()
        err = (await complaints).decode(errors="replace")
    finally:
        writer.cancel()
        complaints.cancel()
        proc.close()
    if proc.exit_status != 0:
        lines = [line for line in err.splitlines() if line.strip()]
        if not got or not lines or not all(line.endswith("No such file or directory") for line in lines):
            if not got and transport._find_ok is None:
                transport._find_ok = False  # no GNU find (BSD find has no -printf): SFTP from now on
            return False
    transport._find_ok = not bad
    return not bad


async def find_each(transport: Any, looker: Looker, feed_bytes: int) -> bool:
    """The root's entries, then each of ``looker.known()`` itself (fed ``feed_bytes`` at a time as the remote reads
    them), reported to ``looker`` as find's output comes; False where find cannot answer."""

    def fed() -> Iterator[bytes]:
        chunk = bytearray()
        for rel in looker.known():
            chunk += f"./{rel}".encode("utf-8", "surrogateescape") + b"\0"
            if len(chunk) >= feed_bytes:
                yield bytes(chunk)
                chunk.clear()
        yield bytes(chunk)

    def each(rel: str, kind: str, size: int, mtime: int) -> None:
        if "/" not in rel or kind == DIR:
            looker.entry(rel, kind, mtime)

    return await find_stream(transport, "STAT", "", fed() if looker.known_count() else None, each)
