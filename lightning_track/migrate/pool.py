"""The whole migration: plan, settle what needs no work, convert the rest here or in worker processes.

Runs are independent and one run's work is mostly single-threaded Python, so ``jobs > 1`` converts
that many at once in worker processes; progress and reports always come back to this process, and
an interrupt (Ctrl-C, or this process killed) never leaves a half-built run in ``--out``.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import queue
import signal
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from . import loopstate
from .build import convert_run, remove_empty, staging_root
from .checkpoint_thread import ProgressFn
from .plan import MigrateOptions, PlannedRun, plan_migration
from .report import STATUS_FAILED, STATUS_PLANNED, STATUS_SKIPPED, MigrationReport, RunReport

__all__ = ["migrate", "default_jobs"]


def _report_without_work(plan: PlannedRun, dry_run: bool, options: MigrateOptions) -> RunReport | None:
    """The report of a run that is not converted (filtered, dry run, already migrated); None to convert it."""
    if plan.target is None and not plan.error:
        return RunReport(str(plan.legacy.path), None, STATUS_SKIPPED, "not matched by --only")
    if not (dry_run or (plan.already_migrated and not options.force)):
        return None
    report = RunReport(str(plan.legacy.path), str(plan.target) if plan.target else None, bytes=plan.size)
    if plan.error:
        report.status, report.reason = STATUS_FAILED, plan.error
    elif plan.already_migrated and not options.force:
        report.status, report.reason = STATUS_SKIPPED, "already migrated (use --force to redo)"
    else:
        report.status = STATUS_PLANNED
        report.warnings = list(plan.would_skip)
    return report


def migrate(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str] = "runs",
    *,
    dry_run: bool = False,
    only: str | None = None,
    options: MigrateOptions | None = None,
    jobs: int = 1,
    on_plan: Callable[[list[PlannedRun]], None] = lambda plans: None,
    on_bytes: ProgressFn = lambda n: None,
    on_run: Callable[[RunReport], None] = lambda r: None,
) -> MigrationReport:
    """Migrate every legacy run under ``source`` into ``out``; a bad run never stops the others.

    ``jobs > 1`` converts that many runs at once in worker processes (runs are independent; one
    run's work is mostly single-threaded Python); ``jobs=1`` converts them here, one after the other.
    ``on_bytes``/``on_run`` are always called in this process. Raises ``SourceError`` only when
    SOURCE/--out cannot be used at all.
    """
    options = options or MigrateOptions()
    out = Path(out)
    plans = plan_migration(source, out, only=only, force=options.force)
    on_plan(plans)
    reports: list[RunReport | None] = [None] * len(plans)
    todo: list[int] = []
    for i, plan in enumerate(plans):
        report = _report_without_work(plan, dry_run, options)
        if report is None and plan.error:
            report = convert_run(plan, out, options)  # fails at once, without touching anything
        if report is None:
            todo.append(i)
            continue
        reports[i] = report  # settled first; the report keeps the plan order
        on_bytes(plan.size)
        on_run(report)
    if todo:
        out.mkdir(parents=True, exist_ok=True)
    learner = loopstate.start_learning() if todo else None  # Lightning's loop state, once per version
    try:
        _convert_todo(plans, todo, out, options, jobs, reports, on_bytes, on_run)
    finally:
        if learner is not None:
            learner.stop()
    return MigrationReport(runs=[r for r in reports if r is not None], dry_run=dry_run)


def _convert_todo(plans: list[PlannedRun], todo: list[int], out: Path, options: MigrateOptions, jobs: int,
                  reports: list[RunReport | None], on_bytes: ProgressFn, on_run: Callable[[RunReport], None]) -> None:
    if jobs > 1 and len(todo) > 1:
        todo = _convert_in_workers(plans, todo, out, options, jobs, reports, on_bytes, on_run)
    for i in todo:  # in this process: --jobs 1, a single run, or runs no worker could take
        plan = plans[i]
        done = 0

        def count(n: int) -> None:
            nonlocal done
            done += n
            on_bytes(n)

        reports[i] = report = convert_run(plan, out, options, count)
        if plan.size > done:
            on_bytes(plan.size - done)
        on_run(report)


# -- worker processes ------------------------------------------------------------------------------------
def default_jobs() -> int:
    """1.5x the CPU count: a run is not all CPU (its checkpoint bytes are copied by the kernel, its files
    are read from disk), and with more runs in flight than cores the last runs share the cores instead
    of one finishing alone on a core while the others idle (3 runs on 2 cores: 9.4-10.8 s at 3 jobs
    vs 11.1-12.2 s at 2, benchmarks/results/migrate.md)."""
    return max(1, math.ceil(1.5 * (os.cpu_count() or 1)))


# The workers come from a fork server that has imported this module once: each worker
# starts in milliseconds, and unlike a plain fork() it never copies a parent holding locks of other
# threads (the rich progress thread writes to stderr). Neither torch nor Lightning is imported there:
# see rawtensors and loopstate.
_WORKER_PRELOAD = [__name__]
_worker_queue: Any = None
_worker_busy = threading.Event()


def _interrupt(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # one interrupt: let the staging clean-up finish
    raise KeyboardInterrupt


def _watch_parent() -> None:
    """Stop this worker when the migrating process is gone (SIGKILL): no orphan finishing runs behind a re-run.

    The parent's sentinel is a pipe that only the parent holds open, so it becomes ready exactly when
    the parent ends (the fork server in between does not keep it alive).
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return
    parent.join()
    if _worker_busy.is_set():
        os.kill(os.getpid(), signal.SIGINT)  # the run in flight removes its staging folder
        for _ in range(600):
            if not _worker_busy.is_set():
                break
            threading.Event().wait(0.05)
    os._exit(1)


def _worker_init(progress: Any) -> None:
    global _worker_queue
    _worker_queue = progress
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # idle: a Ctrl-C is the parent's business
    threading.Thread(target=_watch_parent, daemon=True).start()


def _worker_convert(index: int, plan: PlannedRun, out: Path, options: MigrateOptions) -> RunReport:
    progress = _worker_queue
    progress.put(("start", index, os.getpid()))
    _worker_busy.set()
    signal.signal(signal.SIGINT, _interrupt)
    try:
        return convert_run(plan, out, options, lambda n: progress.put(("bytes", index, n)), tidy_staging=False)
    except KeyboardInterrupt:  # the staging folder is already removed
        return RunReport(str(plan.legacy.path), str(plan.target), STATUS_FAILED,
                         f"{plan.legacy.path}: interrupted; re-run lt-migrate to convert it", bytes=plan.size)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _worker_busy.clear()


def _convert_in_workers(plans: list[PlannedRun], todo: list[int], out: Path, options: MigrateOptions, jobs: int,
                        reports: list[RunReport | None], on_bytes: ProgressFn,
                        on_run: Callable[[RunReport], None]) -> list[int]:
    """Convert ``plans[i]`` for each ``i`` in ``todo`` in up to ``jobs`` worker processes.

    Progress comes back through a queue; a run's bytes are topped up to its planned size when it
    ends. On an interrupt the runs in flight are interrupted too (each removes its staging folder)
    and waited for, so no half run is left behind. Returns the runs no worker started because the
    pool broke (workers that cannot start, e.g. ``python -`` has no main file to re-import): the
    caller converts those in this process.
    """
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_WORKER_PRELOAD)
    progress = ctx.Queue()
    received = dict.fromkeys(todo, 0)
    running: dict[int, int] = {}  # index -> worker pid
    started: set[int] = set()
    finished: set[int] = set()
    not_started: list[int] = []

    def drain() -> None:
        while True:
            try:
                kind, index, value = progress.get_nowait()
            except queue.Empty:
                return
            if index in finished:
                continue
            if kind == "start":
                running[index] = value
                started.add(index)
            else:
                received[index] += value
                on_bytes(value)

    # A Ctrl-C only sets a flag that the loop below checks: a KeyboardInterrupt raised at any point
    # (inside the executor's or the queue's locks) could deadlock the shutdown that must follow it.
    interrupted = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.set())
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=ctx, initializer=_worker_init,
                               initargs=(progress,))
    try:
        # largest runs first: the last run to start is a small one, so no worker idles long at the end
        order = sorted(todo, key=lambda i: -plans[i].size)
        futures: dict[Future[RunReport], int] = {pool.submit(_worker_convert, i, plans[i], out, options): i
                                                 for i in order}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
            drain()
            if interrupted.is_set():
                raise KeyboardInterrupt
            for future in done:
                i = futures[future]
                plan = plans[i]
                try:
                    report = future.result()
                except Exception as exc:  # noqa: BLE001 - a worker that died (killed, out of memory)
                    if isinstance(exc, BrokenProcessPool) and i not in started:
                        finished.add(i)
                        not_started.append(i)
                        continue
                    report = RunReport(str(plan.legacy.path), str(plan.target), STATUS_FAILED,
                                       f"{plan.legacy.path}: worker process failed ({type(exc).__name__}: {exc});"
                                       " re-run lt-migrate to convert it", bytes=plan.size)
                finished.add(i)
                running.pop(i, None)
                if plan.size > received[i]:
                    on_bytes(plan.size - received[i])
                reports[i] = report
                on_run(report)
    except BaseException:
        drain()
        for pid in running.values():
            try:
                os.kill(pid, signal.SIGINT)
            except OSError:
                pass
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        progress.close()
        remove_empty(staging_root(out))
    return sorted(not_started)
