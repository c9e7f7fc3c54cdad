"""Pull's first copy as one tar stream: the remote's ``tar -c`` of every new run of a pass, over one exec channel.

Why one stream: each remote command starts the account's shell and its start-up files (about 0.1-0.2 s of
the server's CPU each, ~0.3 s wall on the test sshd), so a command per group of runs cost a first copy of
10,000 runs more than its bytes did; rsync pays that once. The names go to tar's stdin batch by batch as the
engine lists them (GNU tar reads them as it goes); its output comes through a local pipe into a thread that
reads it with tarfile in stream mode and checks each member against the listing (a folder or plain file of a
run fed, with the listed size and mtime). Once all of a run's files came, one of WRITERS threads builds it
under ``STAGE/<run>`` (creating files is the kernel's work, faster several at once, as the earlier groups'
parallel ``tar -x`` were) and renames it into place, so a pass stopped at any point leaves whole runs or none.
A run with a member that fails a check, or whose members never all came (a file vanished: tar says so and
goes on), is left to the per-file path of the same pass; so is every run when the remote has no ``tar``.
A file changed while tar read it (tar warns, it had been quiet for RECENT_S) is forgotten by the journal,
so the next pass compares it with the source again.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import tarfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .manifest import TAIL_BYTES, tail_hash, top_name

__all__ = ["PullStream"]

Tails = dict[str, tuple[int, int, str]]  # file -> (size, mtime, tail hash): the journal's done records
WRITERS = 3  # threads writing runs (file creation is the cost: the kernel's, several at once go faster)
RUNS_HELD = 32  # runs read from the stream but not yet written, at most
_CHANGED = (": file changed as we read it", ": File shrank by ")  # GNU tar's warnings naming a file


@dataclass
class _Run:
    """One run fed to the stream: what its members must be, and how far they came."""

    files: dict[str, tuple[int, int]]  # file -> listed (size, mtime)
    dirs: dict[str, int]  # folder -> listed mtime
    left: int = 0
    tails: Tails = field(default_factory=dict)
    data: list[tuple[str, bytes, int]] = field(default_factory=list)  # (file, bytes, mode) until written
    over: bool = False  # placed or given up


class PullStream:
    """One remote ``tar -c`` for a pass: :meth:`feed` runs as they are listed, :meth:`close_input`, :meth:`end`."""

    def __init__(self, remote: Any, root: str, stage: str,
                 on_done: Callable[[str, Tails | None], None]) -> None:
        self.remote, self.root, self.stage, self.on_done = remote, root, stage, on_done
        self._runs: dict[str, _Run] = {}  # written by the loop before the names are sent, read by the thread
        self._proc: Any = None
        self._thread: asyncio.Future[None] | None = None
        self._stderr: asyncio.Future[bytes] | None = None
        self.read_any = False  # whether any member came (none and exit 126/127: no tar there)
        self._loop = asyncio.get_running_loop()

    async def start(self) -> bool:
        """Start the remote tar; False where the remote has no exec channel."""
        read_fd, write_fd = os.pipe()
        tar = shlex.quote(self.remote.TAR)
        try:
            self._proc = await self.remote.start(
                f"{tar} -cf - --no-recursion --dereference --null --verbatim-files-from -T -", write_fd)
        except BaseException:
            os.close(read_fd)
            os.close(write_fd)
            raise
        if self._proc is None:
            os.close(read_fd)
            os.close(write_fd)
            return False
        os.makedirs(self.stage, exist_ok=True)
        self._thread = asyncio.ensure_future(asyncio.to_thread(self._unpack, read_fd))
        self._stderr = asyncio.ensure_future(self._proc.stderr.read())
        return True

    async def feed(self, runs: list[Any]) -> None:
        """Send the names of ``runs`` (each a bulk.WholeRun: its folders first, parents before children)."""
        names = []
        for run in runs:
            files = {e.rel: (e.size, e.mtime) for e in run.files}
            self._runs[run.top] = _Run(files, dict(run.dirs), left=len(files))
            names += sorted(run.dirs)
            names += files
        self._proc.stdin.write(b"".join(n.encode("utf-8", "surrogateescape") + b"\0" for n in names))
        await self._proc.stdin.drain()

    def close_input(self) -> None:
        """No more names: tar ends once it has sent the last ones."""
        if self._proc is not None and not self._proc.stdin.is_closing():
            self._proc.stdin.write_eof()

    async def end(self, abort: bool = False) -> tuple[int | None, bytes, list[str]]:
        """Wait for the stream to end (``abort``: close it now); (exit status, stderr, files tar saw change).
        Every run not placed by then is given up (``on_done`` with None)."""
        if self._proc is None:
            return None, b"", []
        if abort:
            self._proc.close()
        assert self._thread is not None and self._stderr is not None
        try:
            await asyncio.shield(self._thread)
        finally:
            self._proc.close()  # the thread stopped reading (an error): the remote tar must not wait on us
            await self._proc.wait_closed()
        try:
            err = await self._stderr
        except (OSError, EOFError):
            err = b""
        for top, run in self._runs.items():
            if not run.over:
                self._give_up(top, run)
        changed = [line.split(": ", 1)[1].rsplit(": ", 1)[0] for line in err.decode(errors="replace").splitlines()
                   if line.startswith("tar: ") and any(c in line for c in _CHANGED)]
        return self._proc.exit_status, err, changed

    # -- the worker thread ----------------------------------------------------------------------
    def _give_up(self, top: str, run: _Run) -> None:
        """In the loop: the run's stage removed, the run left to the per-file path."""
        run.over = True
        shutil.rmtree(os.path.join(self.stage, top), ignore_errors=True)
        self.on_done(top, None)

    def _unpack(self, read_fd: int) -> None:
        """The stream read and checked member by member; each run whose last file came is built by a writer."""
        gate = threading.Semaphore(RUNS_HELD)
        with os.fdopen(read_fd, "rb", buffering=0) as raw, ThreadPoolExecutor(WRITERS) as writers:
            try:
                with tarfile.open(fileobj=raw, mode="r|") as tar:
                    for member in tar:
                        self.read_any = True
                        top = self._member(tar, member)
                        if top:
                            gate.acquire()  # runs read but not yet written: bounded (memory), the stream waits
                            writers.submit(self._build, top, self._runs[top]).add_done_callback(
                                lambda _: gate.release())
            except (tarfile.ReadError, EOFError):  # nothing came (no tar there) or the stream was cut
                pass

    def _member(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> str:
        """Check one member against the listing and keep a file's bytes; the run's name once all its files came."""
        top = top_name(m.name)
        run = self._runs.get(top)
        if run is None or run.over:
            return ""
        if m.isdir() and m.name in run.dirs:
            return ""
        source = tar.extractfile(m) if m.isreg() and run.files.get(m.name) == (m.size, int(m.mtime)) else None
        if source is None:  # not the listed member: the run goes file by file
            run.over = True
            self._loop.call_soon_threadsafe(self._give_up, top, run)
            return ""
        data = source.read()
        run.data.append((m.name, data, m.mode & 0o777))
        run.tails[m.name] = (m.size, int(m.mtime), tail_hash(data[-TAIL_BYTES:]))
        run.left -= 1
        if run.left:
            return ""
        run.over = True
        return top

    def _build(self, top: str, run: _Run) -> None:
        """A writer: the run under STAGE (folders, files with their listed mtimes, then the folders' own, deepest
        first), renamed into place; on any error it is removed and left to the per-file path."""
        where = os.path.join(self.stage, top)
        try:
            shutil.rmtree(where, ignore_errors=True)  # what an earlier, stopped pass left
            for rel in sorted(run.dirs):
                os.mkdir(os.path.join(self.stage, rel))
            for rel, data, mode in run.data:
                fd = os.open(os.path.join(self.stage, rel), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    mtime = run.files[rel][1]
                    os.utime(fd, (mtime, mtime))
                finally:
                    os.close(fd)
            run.data = []
            for rel in sorted(run.dirs, reverse=True):
                os.utime(os.path.join(self.stage, rel), (run.dirs[rel], run.dirs[rel]))
            os.rename(where, os.path.join(self.root, top))
        except OSError:  # a full disk, or the mirror made the run meanwhile: file by file
            run.data = []
            self._loop.call_soon_threadsafe(self._give_up, top, run)
            return
        self._loop.call_soon_threadsafe(self.on_done, top, run.tails)
