"""One sync cycle (scan both sides, plan, move bytes, verify) and the ``--every`` loop around it.

Why verification is "size + tail hash" and not a full re-read: over SFTP a full read-back would
double the traffic. Every byte we write comes from a source read at a fixed offset, and the last
``TAIL_BYTES`` of the result are read back from the destination and compared with the source's, so
a torn or misplaced write is caught; a mismatch re-copies the file whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SourceChanged, SyncError, TransferError, UnsafePathError, VerifyError
from ..vocabulary import format_bytes
from .bulk import WholeRunCopier, whole_runs
from .endpoints import Endpoint, parse_endpoint
from .manifest import RECENT_S, TAIL_BYTES, Manifest, is_append_only, part_path, scan, tail_hash
from .plan import APPEND, COPY, DELETE, REPLACE, Action, Plan, make_plan
from .runicorn import RunicornView
from .settled import settle, top_names, unsettled
from .state import SyncState, default_state_path
from .transport import Entry, Transport, make_transport

__all__ = ["SyncOptions", "CycleResult", "SyncSession", "sync_once", "run_loop", "FATAL_ERRORS",
           "RETRYABLE_ERRORS"]

CHUNK = 1 << 20  # bytes read from the source at once per file; with `parallel` files in flight, the memory bound
BATCH_TOPS = 1000  # top-level folders listed, planned and settled at once (a remote side: a listing a batch)
LOCAL_BATCH_TOPS = 100  # the same where both sides are local: a batch costs nothing more there, its memory less

# What stops ``run_loop``: a SyncError (host key, authentication, missing source, an unsafe path in a
# listing) does not go away by waiting. What it retries: TransferError (a lost connection is a
# TransportError) and any other OSError (a full disk, a local file vanished). VerifyError and
# SourceChanged are TransferErrors but never leave a cycle: they are reported per file.
FATAL_ERRORS: tuple[type[BaseException], ...] = (SyncError,)
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (TransferError, OSError)


@dataclass
class SyncOptions:
    """What one sync covers; mirrors the ``lt-sync`` flags."""

    include_checkpoints: bool = False
    runs_glob: str | None = None
    since_hours: float | None = None
    delete: bool = False
    dry_run: bool = False
    runicorn_root: str | None = None
    parallel: int = 64
    state_path: str | Path | None = None  # None: the default per SRC/DEST journal; "" disables it
    full: bool = False  # list every run, settled ones too (see settled.SETTLE_S)


@dataclass
class CycleResult:
    plan: Plan
    started: float
    finished: float = 0.0
    files: int = 0
    bytes_sent: int = 0
    copied: int = 0
    appended: int = 0
    replaced: int = 0
    deleted: int = 0
    recopied: int = 0  # appends whose destination tail no longer matched, or that failed verification
    skipped: list[str] = field(default_factory=list)  # source files that vanished or changed mid-copy
    errors: list[str] = field(default_factory=list)
    runicorn_runs: int = 0
    dry_run: bool = False
    runs_skipped: int = 0  # settled runs whose folders had not changed: not listed
    notes: list[str] = field(default_factory=list)  # one-line facts about how the pass went (said once)

    @property
    def refused(self) -> list[str]:
        return self.plan.refused

    @property
    def lag(self) -> float:
        """How old the newest mirrored data can be when the cycle ends (end minus scan start)."""
        return self.finished - self.started

    def status_line(self) -> str:
        when = time.strftime("%H:%M:%S", time.localtime(self.finished))
        if self.dry_run:
            p = self.plan
            return (f"{when} dry run: would copy {p.count(COPY)}, append {p.count(APPEND)}, replace "
                    f"{p.count(REPLACE)}, delete {p.count(DELETE)} ({format_bytes(p.bytes_planned)}); "
                    f"{p.unchanged} unchanged, {len(p.refused)} refused")
        text = (f"{when} {self.files} files ({self.copied} new, {self.appended} appended, {self.replaced} replaced, "
                f"{self.deleted} deleted), {format_bytes(self.bytes_sent)} sent, {self.plan.unchanged} unchanged, "
                f"lag {self.lag:.1f}s")
        if self.refused:
            text += f", {len(self.refused)} refused"
        if self.errors:
            text += f", {len(self.errors)} errors"
        return text


class SyncSession:
    """Both transports plus the state journal; keeps connections open across ``--every`` cycles."""

    def __init__(self, src: str | os.PathLike[str] | Endpoint, dest: str | os.PathLike[str] | Endpoint,
                 options: SyncOptions | None = None) -> None:
        self.src_ep = src if isinstance(src, Endpoint) else parse_endpoint(os.fspath(src))
        self.dest_ep = dest if isinstance(dest, Endpoint) else parse_endpoint(os.fspath(dest))
        self.options = options or SyncOptions()
        state_path = self.options.state_path
        if state_path is None:
            state_path = default_state_path(str(self.src_ep), str(self.dest_ep))
        self.state = SyncState(state_path or None)
        self.src: Transport | None = None
        self.dst: Transport | None = None
        self.runicorn: RunicornView | None = None

    async def connect(self) -> None:
        src, dst = make_transport(self.src_ep), make_transport(self.dest_ep)
        try:
            await src.open()
        except FileNotFoundError as exc:
            await src.close()
            raise SyncError(f"source {exc}") from None
        try:
            await dst.open(create=not self.options.dry_run)
        except FileNotFoundError:
            if not self.options.dry_run:
                await src.close()
                await dst.close()
                raise
            dst = None  # dry run into a destination that does not exist yet: everything is new
        except BaseException:
            await src.close()
            raise
        self.src, self.dst = src, dst
        if self.options.runicorn_root and dst is not None:
            self.runicorn = RunicornView(self.options.runicorn_root, self.dest_ep)
            await self.runicorn.open()

    async def close(self) -> None:
        for transport in (self.src, self.dst):
            if transport is not None:
                await transport.close()
        if self.runicorn is not None:
            await self.runicorn.close()
        self.src = self.dst = self.runicorn = None
        self.state.close()

    async def __aenter__(self) -> SyncSession:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- one cycle -------------------------------------------------------------------------------
    async def cycle(self, progress: Callable[[str, int], None] | None = None,
                    on_plan: Callable[[Plan], None] | None = None) -> CycleResult:
        """Scan, plan and (unless dry run) execute; returns what happened.

        ``on_plan`` sees the plan before any byte moves, ``progress`` each finished file (for a progress bar).
        """
        if self.src is None:
            await self.connect()
        assert self.src is not None
        opts = self.options
        started = time.time()
        filters = {"runs_glob": opts.runs_glob, "include_checkpoints": opts.include_checkpoints}
        cover = "checkpoints" if opts.include_checkpoints else ""
        tops, skipped, skipped_files, lacking = await self._unsettled(cover)
        if tops is None and self.runicorn is None:
            tops, lacking = await top_names(self.src, self.dst, opts.runs_glob)
        # a thousand runs at a time (a hundred locally): the listings of both sides never held whole (the plan
        # keeps only changes); each batch's listings are let go before the next is listed
        size = BATCH_TOPS if self.src.remote or (self.dst is not None and self.dst.remote) else LOCAL_BATCH_TOPS
        batches = [tops] if tops is None or self.runicorn is not None else \
            [tops[i:i + size] for i in range(0, len(tops), size)]
        plan = Plan(unchanged=skipped_files)
        src_m = Manifest()
        result = CycleResult(plan=plan, started=started, dry_run=opts.dry_run, runs_skipped=skipped)

        def copied(entry: Entry) -> None:
            result.copied += 1
            result.files += 1
            if progress is not None:
                progress(entry.rel, entry.size)

        # new runs are copied whole (bulk.py) while the next batch is listed; the other files once all are listed
        copier = None if opts.dry_run or self.dst is None else \
            WholeRunCopier(self.src, self.dst, self.state, result.notes, copied)
        copying: list[asyncio.Future[set[str]]] = []
        sent_before = self.dst.bytes_written if self.dst is not None else 0
        walks = contextlib.AsyncExitStack()  # each side's listing of every batch (over SSH: one command)
        try:
            if copier is not None and lacking:  # the mirror lacks one of the pass's runs
                copier.expect()
            src_walks = await walks.enter_async_context(contextlib.aclosing(self.src.walk_batches(batches)))
            dst_walks = None if self.dst is None else await walks.enter_async_context(
                contextlib.aclosing(self.dst.walk_batches(batches, follow_links=False)))
            for batch in batches:
                src_m, dst_m = await asyncio.gather(
                    self._scan(self.src, src_walks, since_hours=opts.since_hours, tops=batch, **filters),
                    self._scan(self.dst, dst_walks, follow_links=False, tops=batch, **filters))
                part = make_plan(src_m, dst_m, delete=opts.delete)
                plan.actions += part.actions
                plan.mkdirs += part.mkdirs
                plan.refused += part.refused
                plan.unchanged += part.unchanged
                if copier is not None:
                    await self._settle(src_m, dst_m, part, started, cover, batch)
                    whole = whole_runs(part, src_m, dst_m, started)
                    if whole:
                        copying.append(asyncio.ensure_future(copier.copy(whole)))
                if self.runicorn is None:  # not held while the next batch is listed (the view reads the one batch)
                    src_m, dst_m, part = Manifest(), Manifest(), Plan()
            if copier is not None:
                copier.no_more()  # the pull stream's last runs come once it ends
            placed: set[str] = set().union(*await asyncio.gather(*copying))
            if copier is not None:
                await copier.ended()
        finally:
            await walks.aclose()
            for task in copying:
                task.cancel()
            if copier is not None:
                await copier.finish()
        if on_plan is not None:
            on_plan(plan)
        if opts.dry_run or self.dst is None:
            result.finished = time.time()
            return result
        mkdirs = [d for d in plan.mkdirs if d.split("/", 1)[0] not in placed]
        for depth in sorted({d.count("/") for d in mkdirs}):
            await asyncio.gather(*(self.dst.mkdir(d) for d in mkdirs if d.count("/") == depth))
        gate = asyncio.Semaphore(max(1, opts.parallel))

        async def one(action: Action) -> None:
            async with gate:
                await self._execute(action, result, progress)

        await asyncio.gather(*(one(a) for a in plan.actions if not placed or a.rel.split("/", 1)[0] not in placed))
        self.state.compact()
        result.bytes_sent = self.dst.bytes_written - sent_before
        if self.runicorn is not None:
            view_before = self.runicorn.transport.bytes_written
            result.runicorn_runs = await self.runicorn.update(self._view_reader(), src_m, plan)
            result.bytes_sent += self.runicorn.transport.bytes_written - view_before
        result.finished = time.time()
        return result

    @staticmethod
    async def _scan(transport: Transport | None, walks: AsyncIterator[list[Entry]] | None, **how: Any) -> Manifest:
        """The manifest of the next batch of ``walks`` (``how``: :func:`scan`'s filters); empty for no side."""
        if transport is None or walks is None:
            return Manifest()
        return await scan(transport, walked=await anext(walks), **how)

    async def _unsettled(self, cover: str) -> tuple[list[str] | None, int, int, bool]:
        if self.dst is None or self.options.full:
            return None, 0, 0, False
        assert self.src is not None
        return await unsettled(self.state, self.src, self.dst, cover, self.options.runs_glob)

    async def _settle(self, src_m: Manifest, dst_m: Manifest, plan: Plan, started: float, cover: str,
                      listed: list[str] | None) -> None:
        await settle(self.state, src_m, dst_m, plan, started, cover, listed, self._view_reader(),
                     self.options.parallel)

    def _view_reader(self) -> Transport:
        """Where the Runicorn view reads run files: the local side when one side is local (the mirror
        holds the source's bytes once the cycle has copied them), else the source."""
        assert self.src is not None and self.dst is not None
        return self.dst if self.src.remote and not self.dst.remote else self.src

    async def _execute(self, action: Action, result: CycleResult, progress: Callable[[str, int], None] | None) -> None:
        assert self.dst is not None
        rel = action.rel
        try:
            if action.kind == DELETE:
                await self.dst.remove(rel)
                self.state.forget(rel)
                result.deleted += 1
            elif action.kind == APPEND:
                await self._append(action, result)
                result.appended += 1
            else:
                await self._copy_whole(action.rel, action.src, action.dst if action.kind == COPY else None)
                if action.kind == COPY:
                    result.copied += 1
                else:
                    result.replaced += 1
            result.files += 1
            if progress is not None:
                progress(rel, action.src.size if action.src else 0)
        except (FileNotFoundError, SourceChanged) as exc:
            result.skipped.append(f"{rel}: {exc or 'source vanished'}; retried next cycle")
        except UnsafePathError as exc:
            result.plan.refused.append(str(exc))
        except VerifyError as exc:
            result.errors.append(f"{rel}: {exc}")

    async def _copy_whole(self, rel: str, src: Entry | None, part: Entry | None, *, attempt: int = 0) -> None:
        """Copy into ``.NAME.lt-sync-part`` (continuing a matching leftover), verify, then rename over NAME."""
        assert self.src is not None and self.dst is not None and src is not None
        part_rel = part_path(rel)
        size = src.size
        offset = 0
        tail = b""
        if part is not None and attempt == 0 and self.state.partial_matches(rel, src) and 0 < part.size <= size:
            n = min(TAIL_BYTES, part.size)
            mine, theirs = await asyncio.gather(self.dst.read(part_rel, part.size - n, n),
                                                self.src.read(rel, part.size - n, n))
            if mine == theirs:
                offset, tail = part.size, theirs
        if offset == 0:
            self.state.start_partial(rel, src)
        trim = rel.endswith(".jsonl") and time.time() - src.mtime < RECENT_S
        first = offset == 0
        written = (-1, b"")
        while True:
            chunk = await self.src.read(rel, offset, min(CHUNK, size - offset))
            if offset + len(chunk) >= size and trim and chunk and not chunk.endswith(b"\n") and b"\n" in chunk:
                chunk = chunk[: chunk.rindex(b"\n") + 1]
                size = offset + len(chunk)
            if not chunk and offset < size:
                raise SourceChanged("source shrank during the copy")
            tail = (tail + chunk)[-TAIL_BYTES:]
            if offset + len(chunk) >= size:
                expect = (size, tail[-min(TAIL_BYTES, size):] if size else b"")
                # one read of the source: nothing can have changed between reads, so rename right away
                rename_to = rel if src.size <= CHUNK else None
                written = await self.dst.write_final(part_rel, offset, chunk, truncate=first, mtime=src.mtime,
                                                     verify=TAIL_BYTES, rename_to=rename_to, expect=expect)
                offset += len(chunk)
                break
            await self.dst.write_at(part_rel, offset, chunk, truncate=first)
            first = False
            offset += len(chunk)
        if src.size > CHUNK:  # several reads: make sure they all saw the same file
            now = await self.src.stat(rel)
            if now is None or (now.size, now.mtime) != (src.size, src.mtime) and not is_append_only(rel):
                await self._discard(part_rel)
                raise SourceChanged("source changed during the copy")
        if written != expect:
            if attempt == 0:
                return await self._copy_whole(rel, src, None, attempt=1)
            await self._discard(part_rel)
            raise VerifyError("size or checksum differs from the source after copying twice")
        if rename_to is None:
            await self.dst.rename(part_rel, rel)
        self.state.mark_done(rel, size, src.mtime, tail_hash(tail))

    async def _append(self, action: Action, result: CycleResult) -> None:
        """Send only the bytes after the destination's end, once its old tail matches the source."""
        assert self.src is not None and self.dst is not None and action.src and action.dst
        rel, src, old = action.rel, action.src, action.dst.size
        n = min(TAIL_BYTES, old)
        mine, theirs = await asyncio.gather(self.dst.read(rel, old - n, n), self.src.read(rel, old - n, n))
        if mine != theirs:
            result.recopied += 1
            await self._copy_whole(rel, src, None)
            return
        size, offset, tail = src.size, old, theirs
        trim = rel.endswith(".jsonl") and time.time() - src.mtime < RECENT_S
        written = None
        while offset < size:
            chunk = await self.src.read(rel, offset, min(CHUNK, size - offset))
            if not chunk:
                raise SourceChanged("source shrank during the append")
            if offset + len(chunk) >= size and trim and not chunk.endswith(b"\n"):
                if b"\n" not in chunk:
                    break
                chunk = chunk[: chunk.rindex(b"\n") + 1]
                size = offset + len(chunk)
            tail = (tail + chunk)[-TAIL_BYTES:]
            if offset + len(chunk) >= size:
                written = await self.dst.write_final(rel, offset, chunk, truncate=False, mtime=src.mtime,
                                                     verify=TAIL_BYTES)
            else:
                await self.dst.write_at(rel, offset, chunk)
            offset += len(chunk)
        size = offset
        if written is None:  # nothing whole to add yet (a line still being written)
            return
        if written != (size, tail[-min(TAIL_BYTES, size):]):
            result.recopied += 1
            await self._copy_whole(rel, src, None, attempt=1)
            return
        self.state.mark_done(rel, size, src.mtime, tail_hash(tail))

    async def _discard(self, part_rel: str) -> None:
        assert self.dst is not None
        try:
            await self.dst.remove(part_rel)
        except OSError:  # best effort: a leftover part file is re-listed and resumed or replaced
            pass


def sync_once(src: str | os.PathLike[str] | Endpoint, dest: str | os.PathLike[str] | Endpoint,
              options: SyncOptions | None = None, progress: Callable[[str, int], None] | None = None) -> CycleResult:
    """Run one complete cycle (connect, sync, close). The library entry point behind ``lt-sync``."""

    done: list[CycleResult] = []

    async def main() -> None:  # returns nothing: asyncio.run's end builds the main task's repr, result included
        session = SyncSession(src, dest, options)  # (its SIGINT handler restored), ~0.15 s for a 50,000-file plan
        try:
            await session.connect()
            done.append(await session.cycle(progress))
        finally:
            await session.close()

    asyncio.run(main())
    return done[0]


async def run_loop(
    session: SyncSession,
    every: float,
    on_cycle: Callable[[CycleResult], None],
    on_retry: Callable[[BaseException, float], None],
    *,
    stop: asyncio.Event | None = None,
    max_cycles: int | None = None,
    max_backoff: float = 60.0,
) -> int:
    """Mirror every ``every`` seconds until ``stop`` is set (or ``max_cycles``); returns cycles done.

    Dropped connections and other I/O errors are retried with exponential backoff (1 s doubling up
    to ``max_backoff``, with jitter); host-key, authentication and missing-source errors are fatal.
    """
    stop = stop or asyncio.Event()
    backoff = 1.0
    cycles = 0

    async def wait(seconds: float) -> None:
        try:
            await asyncio.wait_for(stop.wait(), timeout=max(0.0, seconds))
        except asyncio.TimeoutError:
            pass

    while not stop.is_set():
        began = time.monotonic()
        try:
            result = await session.cycle()
        except FATAL_ERRORS:
            raise
        except RETRYABLE_ERRORS as exc:
            await session.close()
            delay = min(max_backoff, backoff) * (1 + random.random() * 0.2)
            on_retry(exc, delay)
            backoff = min(max_backoff, backoff * 2)
            await wait(delay)
            continue
        backoff = 1.0
        cycles += 1
        on_cycle(result)
        if max_cycles is not None and cycles >= max_cycles:
            break
        await wait(every - (time.monotonic() - began))
    return cycles
