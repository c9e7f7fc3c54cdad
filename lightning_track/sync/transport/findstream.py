"""The remote ``find`` listing: its record format, parsed, and one command for every batch of a pass.

Why one command for the pass: each remote command starts the account's shell and its start-up files
(~0.1 s of the server's CPU each on the test sshd, ~0.25 s wall), and a pass of 10,000 runs lists them a
thousand at a time. So the names of every batch go to one ``xargs`` on stdin, which runs ``find`` on at most
a batch's worth of them at a time; after each ``find`` the remote shell prints an end record (its exit
status, how many names it was given, and what it said on stderr), in the same stream after the listing
itself. A batch is handed out once the end records cover its last name, so a ``find`` that complained of
anything but a file vanishing mid-listing is known before its batches are used: those batches are walked
the usual way (their own command, else SFTP, which raises the error by name), as without the stream. The
caller reads batch after batch; the remote side runs ahead only as far as the SSH channel's window.

A look at a big root with no known folders to stat (``skeleton``, ``look``) is made by the same command: the
root's entries first, handed on as they are read, then it waits for the names (:func:`root_command`), so a pass
of many runs starts one shell for its look and its listing.
:class:`StreamedListing` is that part of ssh.py's SSHTransport.

The listings by one ``find`` each (:func:`find_stream`, :func:`find_each`) are read the same way: the output
parsed as it comes (:func:`parse_record`, the one parser of find's records) and handed on an entry at a time,
never held whole (a root of 100,000 runs is never one buffer); a look's stdin is fed in pieces as the remote
reads it. The transport keeps whether find works there (``_find_ok``: None until tried, False for SFTP from then
on).
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Iterator, Sequence
from typing import Any

import asyncssh

from .base import DIR, FILE, LINK, Entry, Looker, Transport, check_name
from .ssh_connect import SSH_ERRORS, mapped

__all__ = ["FIND_FORMAT", "FindStream", "StreamedListing", "find_each", "find_stream", "parse_record",
           "parse_records", "read_root", "root_command", "stream_command"]

Each = Callable[[str, str, int, int], None]  # an entry as it comes: (rel, kind, size, mtime)

FIND_FORMAT = "%y\\t%s\\t%T@\\t%p\\0"  # find expands the escapes
_KINDS = {"f": FILE, "d": DIR, "l": LINK}
_END = b"\x01"  # an end record starts so; a listing record starts with find's %y letter
_ROOT_END = b"\x02"  # root_command's record after the root's entries
# names per find of a root_command, whose batches are not known when it starts: engine.BATCH_TOPS, so that each
# find is one batch (a find that complains sends only the batches it listed the usual way)
PER_FIND = 1000
_VANISHED = "No such file or directory"


def parse_record(record: bytes) -> tuple[str, str, int, int] | None:
    """One ``find -printf FIND_FORMAT`` record (NUL removed) as (rel, kind, size, mtime), None for a kind not
    listed; ValueError for anything else (a start-up file printing, a name that is not UTF-8) and
    :class:`UnsafePathError` (a ValueError) for an unsafe name."""
    kind, size, mtime, path = record.decode("utf-8").split("\t", 3)
    rel = path[2:] if path.startswith("./") else path
    if kind not in _KINDS or not rel:
        return None
    if "//" in f"/{rel}/" or "/./" in f"/{rel}/" or "/../" in f"/{rel}/" or "\0" in rel:
        head = ""
        for name in rel.split("/"):  # raises, naming the bad component
            check_name(name, head)
            head = f"{head}/{name}" if head else name
    return rel, _KINDS[kind], int(size) if kind == "f" else 0, int(mtime.split(".")[0])


def parse_records(records: Iterable[bytes]) -> list[Entry]:
    """:func:`parse_record` of each record, as entries."""
    return [Entry(*found) for found in map(parse_record, records) if found is not None]


def complaints_ok(status: int, err: str) -> bool:
    """A find's exit is fine: 0, or non-zero where every complaint is a name that vanished (a live run's temp
    file; a run on one side only, which the other side's listing is asked for too)."""
    if status == 0:
        return True
    lines = [line for line in err.splitlines() if line.strip()]
    return bool(lines) and all(line.endswith(_VANISHED) for line in lines)


def stream_command(find: str, per_find: int) -> str:
    """The remote command (run in the root): NUL-separated ``./name``s on stdin, ``find`` on up to ``per_find``
    of them at a time, each followed by its end record ``\\1status\\tcount\\tstderr\\0``."""
    script = (f'exec 3>&1; err=$({find} "$@" -printf {shlex.quote(FIND_FORMAT)} 2>&1 >&3); s=$?; '
              "printf '\\001%s\\t%s\\t%s\\0' \"$s\" \"$#\" \"$err\"")
    return f"LC_ALL=C xargs -0 -r -n {max(1, per_find)} sh -c {shlex.quote(script)} sh"


def root_command(find: str) -> str:
    """The root's entries (one ``find``, its end record ``\2status\tstderr\0``), then :func:`stream_command`
    waiting for names: the look at the root and the listing of its runs in one command, one shell start-up."""
    root = (f"exec 3>&1; err=$(LC_ALL=C {find} . -mindepth 1 -maxdepth 1 -printf {shlex.quote(FIND_FORMAT)} "
            "2>&1 >&3); printf '\\002%s\\t%s\\0' \"$?\" \"$err\"")
    return f"sh -c {shlex.quote(root)}; {stream_command(find, PER_FIND)}"  # sh: whatever the login shell


async def read_root(stdout: Any, each: Each) -> Any | None:
    """The root's entries from :func:`root_command`'s stdout, handed to ``each`` as they come; the reader of the
    rest (the listing of the names sent next), or None where they are no answer (what ``each`` got is void).
    ValueError where the output is not find's."""
    rest = b""
    while data := await stdout.read(1 << 16):
        records = (rest + data).split(b"\0")
        rest = records.pop()
        for at, record in enumerate(records):
            if record[:1] == _ROOT_END:
                status, err = record[1:].decode("utf-8", "replace").split("\t", 1)
                return _Replay(b"\0".join([*records[at + 1:], rest]), stdout) if complaints_ok(int(status), err) \
                    else None
            found = parse_record(record)
            if found is not None:
                each(*found)
    return None


async def find_stream(transport: Any, paths: str, expr: str, stdin: Iterable[bytes] | None, each: Each) -> bool:
    """The tree as GNU ``find`` on ``transport``'s remote side prints it (one command of its own), reported as it
    comes: ``each(rel, kind, size, mtime)`` (the output never held whole), ``stdin`` fed as the remote reads it.
    False where find cannot answer (no shell access, no GNU find, output that is not find's): then what was
    reported is no answer.

    ``paths`` is ``.``, ``TOPS`` (NUL-separated ``./name`` on stdin, through ``xargs``: their trees) or
    ``STAT`` (the root's entries, then each ``./path`` on stdin itself, not its contents). A non-zero exit
    is accepted only when every complaint is a file that vanished mid-listing (a live run's temp file);
    anything else (an unreadable folder) falls back to SFTP, whose listing raises it by name.
    """
    conn = transport._conn
    if transport._find_ok is False or conn is None:  # no connection of its own: an SFTP session only
        return False
    find = transport.FIND
    fmt = shlex.quote(FIND_FORMAT)
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
                    found = parse_record(record)
                    if found is not None:
                        each(*found)
            except ValueError:  # not find's output (a shell start-up file printing, a name SFTP cannot spell)
                bad = True
        await proc.wait_closed()
        err = (await complaints).decode(errors="replace")
    finally:
        writer.cancel()
        complaints.cancel()
        proc.close()
    status = proc.exit_status
    if status != 0 and (not got or not complaints_ok(-1 if status is None else status, err)):
        if not got and transport._find_ok is None:
            transport._find_ok = False  # no GNU find (BSD find has no -printf): SFTP from now on
        return False
    transport._find_ok = not bad
    return not bad


async def find_each(transport: Any, looker: Looker, feed_bytes: int, known: int) -> bool:
    """The root's entries, then each of ``looker.known()`` itself (fed ``feed_bytes`` at a time as the remote reads
    them; ``known``: the caller's ``looker.known_count()``, none fed at 0), reported to ``looker`` as find's output
    comes; False where find cannot answer."""

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

    return await find_stream(transport, "STAT", "", fed() if known else None, each)


class _Replay:
    """A reader that gives ``first`` before reading on from ``reader``."""

    def __init__(self, first: bytes, reader: Any) -> None:
        self.first, self.reader = first, reader

    async def read(self, n: int) -> bytes:
        if self.first:
            data, self.first = self.first, b""
            return data
        return await self.reader.read(n)


class FindStream:
    """The listing of ``batches`` (top-level names, in this order) from one :func:`stream_command`'s stdout."""

    def __init__(self, stdout: Any, batches: Sequence[Sequence[str]], close: Callable[[], None] | None = None) -> None:
        self.stdout = stdout  # asyncssh's reader (bytes)
        self.close = close or (lambda: None)  # the command's end, once the batches are read (or the pass stops)
        self.batches = batches
        self.ends: list[int] = []  # where each batch ends in the run of every name
        for batch in batches:
            self.ends.append((self.ends[-1] if self.ends else 0) + len(batch))
        self.ready: dict[int, list[Entry] | None] = {}  # complete batches (None: to be walked the usual way)
        self.filling: dict[int, list[Entry]] = {}
        self.failed: set[int] = set()
        self._at = 0  # the batch the listing is in now
        self._names = set(batches[0]) if batches else set()
        self._covered = 0  # names the end records have accounted for
        self._done = 0  # batches complete so far
        self._rest = b""
        self.over = False  # end of the stream, or a record that is not find's: the rest is walked the usual way
        self.broken = False  # a record that is not find's (the caller stops using find)

    async def batch(self, k: int) -> list[Entry] | None:
        """Batch ``k``'s entries (links not resolved); None where it must be walked the usual way."""
        self._advance()
        while k not in self.ready and not self.over:
            data = await self.stdout.read(1 << 18)
            if not data:
                self.over = True
                break
            try:
                self._feed(data)
            except ValueError:
                self.over = self.broken = True
        return self.ready.pop(k, None)

    def _feed(self, data: bytes) -> None:
        records = (self._rest + data).split(b"\0")
        self._rest = records.pop()
        listing: list[bytes] = []
        for record in records:
            if record[:1] != _END:
                listing.append(record)
                continue
            self._place(listing)
            listing = []
            status, count, err = record[1:].decode("utf-8", "replace").split("\t", 2)
            start, self._covered = self._covered, self._covered + int(count)
            if not complaints_ok(int(status), err):
                self.failed.update(k for k, end in enumerate(self.ends)
                                   if end > start and end - len(self.batches[k]) < self._covered)
            self._advance()
        self._place(listing)

    def _advance(self) -> None:
        """The batches whose every name the end records now cover are ready."""
        while self._done < len(self.ends) and self.ends[self._done] <= self._covered:
            entries = self.filling.pop(self._done, [])
            self.ready[self._done] = None if self._done in self.failed else entries
            self._done += 1

    def _place(self, records: list[bytes]) -> None:
        """Listing records into their batch's entries (the listing follows the names' order)."""
        for entry in parse_records(records):
            top = entry.rel.split("/", 1)[0]
            while top not in self._names:
                self._at += 1
                if self._at >= len(self.batches):
                    raise ValueError(f"{entry.rel!r}: not under a name asked for")
                self._names = set(self.batches[self._at])
            self.filling.setdefault(self._at, []).append(entry)


class StreamedListing(Transport):
    """SSHTransport's listing of many batches by one remote command (it has ``_conn``, ``root``, ``FIND``,
    ``_find_ok``, ``walk`` and ``_resolve_links``)."""

    _conn: Any
    _find_ok: bool | None
    _lister: tuple[Any, Any] | None = None  # root_command's process and reader, once it listed the root
    FIND: str

    async def _resolve_links(self, links: list[str], follow_links: bool) -> list[Entry]:
        raise NotImplementedError

    async def walk_batches(self, batches: Sequence[Collection[str] | None], *,
                           follow_links: bool = True) -> AsyncIterator[list[Entry]]:
        """Several batches of runs: one remote command lists them all (findstream.py), batch by batch as asked;
        a batch that command could not list well is walked the usual way (``walk``)."""
        many = len(batches) > 1 or self._lister is not None  # one batch: its own find, unless one is waiting
        stream = await self._list_stream(batches) if many and None not in batches else None
        self._drop_lister()  # a root_command not used for these batches
        try:
            for k, batch in enumerate(batches):
                found = None if stream is None else await self._streamed(stream, k, follow_links)
                yield await self.walk(follow_links=follow_links, tops=batch) if found is None else found
                found = None  # not held while the next batch is listed
        finally:
            if stream is not None:
                stream.close()

    @mapped
    async def _list_stream(self, batches: Sequence[Collection[str] | None]) -> FindStream | None:
        """The remote command that lists every batch, its names sent; None where find is not to be used."""
        if self._find_ok is False or self._conn is None:
            return None
        names = [sorted(batch or ()) for batch in batches]
        for name in (name for batch in names for name in batch):
            check_name(name, "")
        proc, stdout = self._lister or (None, None)  # the command that listed the root, waiting for names
        self._lister = None
        if proc is None:
            command = stream_command(self.FIND, max(map(len, names)))
            try:
                proc = await self._conn.create_process(f"cd {shlex.quote(self.root)} && {command}", encoding=None)
            except asyncssh.ChannelOpenError:  # an SFTP-only account
                self._find_ok = False
                return None
            stdout = proc.stdout
        proc.stdin.write(b"".join(f"./{n}".encode("utf-8", "surrogateescape") + b"\0" for b in names for n in b))
        proc.stdin.write_eof()
        return FindStream(stdout, names, proc.close)

    async def _root_look(self, each: Each) -> bool:
        """The root's entries by a root_command, handed to ``each`` as they come, the command kept to list the
        batches of runs that follow (one shell start-up for both); False where it could not (what ``each`` got
        is void: the caller asks a find of its own)."""
        self._drop_lister()
        if self._find_ok is False or self._conn is None:
            return False
        try:
            proc = await self._conn.create_process(f"cd {shlex.quote(self.root)} && {root_command(self.FIND)}",
                                                   encoding=None)
        except asyncssh.ChannelOpenError:
            return False
        rest = None
        try:
            rest = await read_root(proc.stdout, each)
        except ValueError:  # not find's output: the caller's own find decides
            pass
        finally:
            if rest is None:
                proc.close()
            else:
                self._lister = (proc, rest)
        return rest is not None

    def _drop_lister(self) -> None:
        if self._lister is not None:
            self._lister[0].close()
            self._lister = None

    @mapped
    async def _streamed(self, stream: FindStream, k: int, follow_links: bool) -> list[Entry] | None:
        found = await stream.batch(k)
        if stream.broken:  # not find's output: SFTP from now on, as ``_find`` decides
            self._find_ok = False
        if found is None:
            return None
        links = [e.rel for e in found if e.kind == LINK]
        return [e for e in found if e.kind != LINK] + await self._resolve_links(links, follow_links)
