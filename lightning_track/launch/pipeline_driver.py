"""Run a checked :class:`~.pipeline.Pipeline` on this machine: ``lt run --pipeline FILE``.

Each step is a :func:`~.runner.run_command` (health-gated, its console captured, its run folder
post-processed, exactly as ``lt-run``), under the exp_id ``<pipeline>_<step>`` with its signals in
``<root>/signals``; the step's run folder is the one its command names in the run note. Steps start
as soon as every step they run ``after`` is done, up to ``jobs`` at once (each in a thread that waits
on its process). A failed step (after its retries) blocks every step downstream, and the driver says
which. The state file (:mod:`.pipeline_state`) is written at every change, so a re-run skips what is
done.

Ctrl+C (SIGINT) or SIGTERM to the driver is forwarded to the process group of every running step
(each runs in its own group, so a terminal's Ctrl+C would not reach it otherwise): they stop as under
lt-run, are recorded ``interrupted``, and no new step starts. A driver started with SIGINT ignored (a
script's ``... &``) keeps ignoring it, as its steps do: SIGTERM stops it. The driver, never the training process,
sends the notifications (:mod:`.notify`), and watches running steps' heartbeats for a run that went
silent.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, one_line
from ..redaction import redact_command
from ..vocabulary import (
    BLOCKED,
    DONE,
    EXIT_FAILURE,
    EXIT_OK,
    FAILED,
    HEALTHY,
    INTERRUPTED,
    PENDING,
    RETRYING,
    RUNNING,
    STALE,
    iso_time,
    stop_signals,
)
from .checkpoint_refs import checkpoint_values, evaluates_env
from .notices import WATCH_INTERVAL, failure_brief, metric_values, stale_notice
from .notify import Notifier
from .pipeline import Pipeline, expand_sweeps, render_command, trial_names
from .pipeline_state import PipelineState
from .sweep import trial_env

__all__ = ["PipelineResult", "run_pipeline", "schedule", "attempt_verdict", "EXIT_INTERRUPTED"]

EXIT_INTERRUPTED = 130  # the shell's code after Ctrl+C


@dataclass
class PipelineResult:
    exit_code: int
    state: PipelineState
    skipped: list[str]
    tables: dict[str, list[str]] = field(default_factory=dict)  # sweep step -> its trials by best metric


def _children() -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process().children()]
    except psutil.Error:
        return []


def schedule(order: Sequence[str], after: Mapping[str, Sequence[str]], states: Mapping[str, str], *,
             running: Collection[str], jobs: int, stopping: bool = False) -> tuple[dict[str, str], list[str]]:
    """One turn of the driver's loop (pure): ``(steps to record blocked -> why, steps to start now)``.

    A pending step whose dependency failed or is blocked is blocked (down a whole chain in one turn); a
    pending step starts only when every step it runs after is done, at most ``jobs`` running at once;
    nothing starts once the driver is stopping.
    """
    now = dict(states)
    blocked: dict[str, str] = {}
    for name in order:
        if now[name] != PENDING:
            continue
        bad = next((d for d in after[name] if now[d] in (FAILED, BLOCKED)), None)
        if bad is not None:
            blocked[name] = f"step {bad!r} {now[bad]}"
            now[name] = BLOCKED
    start: list[str] = []
    if stopping:
        return blocked, start
    for name in order:
        if len(running) + len(start) >= jobs:
            break
        if now[name] == PENDING and name not in running and all(now[d] == DONE for d in after[name]):
            start.append(name)
    return blocked, start


def attempt_verdict(exit_code: int, *, stopping: bool, attempt: int, retries: int) -> str:
    """What one attempt of a step leaves (pure): ``done``, ``interrupted``, ``failed`` once its retries are
    used up, else ``running``: it is retried, and no reader may see it failed in between (its dependants
    would be blocked for good)."""
    if stopping:
        return INTERRUPTED
    if exit_code == 0:
        return DONE
    return FAILED if attempt > retries else RUNNING


class _Driver:
    def __init__(self, pipeline: Pipeline, state: PipelineState, *, notifier: Notifier, log: Callable[[str], None],
                 grace: float, stale_after: float, console: bool) -> None:
        self.pipeline, self.state, self.notifier, self.log = pipeline, state, notifier, log
        self.grace, self.stale_after, self.console = grace, stale_after, console
        self.signals_dir = Path(pipeline.root) / "signals"
        self.stopping = threading.Event()
        self.stale_told: set[tuple[str, int, str]] = set()  # (step, attempt, stale or stalled) told

    # -- one step ------------------------------------------------------------------------------------
    def notify(self, event: str, name: str, line: str, /, **fields: Any) -> None:
        """``fields`` may hold ``step``: the training step (a failure's), while ``pipeline_step`` names the step."""
        self.notifier.send(event, f"{self.pipeline.name} {name}: {event}", f"{name}: {line}",
                           {"pipeline": self.pipeline.name, "pipeline_step": name, **fields})

    def run_step(self, name: str) -> None:
        from .runner import run_command

        step = self.pipeline.steps[name]
        exp_id = self.pipeline.exp_id(name)
        if name in self.pipeline.sweeps:  # every trial is done: rank them, the best trial's folder is the step's
            self.finish_sweep(name)
            return
        env = {**os.environ, **trial_env(self.pipeline.exp_id(step.trial.sweep), step.trial)} if step.trial else None
        attempt = 0
        while True:
            attempt += 1
            try:
                values, evaluates = checkpoint_values(step, self.state.values())
                cmd = render_command(step, values)
            except ConfigError as exc:
                self.state.update(name, state=FAILED, reason=str(exc), ended=iso_time())
                self.log(f"{name}: failed: {exc}")
                self.notify(FAILED, name, str(exc))
                return
            shown = redact_command(cmd)  # the real command only in memory: the state file and the log are mirrored
            step_env = {**(env or os.environ), **evaluates_env(evaluates)} if evaluates else env
            self.state.update(name, state=RUNNING, attempts=attempt, exp_id=exp_id, cmd=redact_command(step.cmd),
                              command=shown, checkpoints=[{k: r[k] for k in ("template", "run", "file", "step",
                                                                              "sha256")} for r in evaluates] or None,
                              started=iso_time(), ended=None, exit_code=None, reason=None, run_dir=None,
                              failure=None, previous=None)
            self.log(f"{name}: start{f' (attempt {attempt})' if attempt > 1 else ''}: {shown}")

            def on_event(kind: str, message: str, name: str = name) -> None:
                if kind in (HEALTHY, "kill", "error") or (kind == FAILED and not message.startswith("exit code")):
                    self.log(f"{name}: {message}")
                if kind == HEALTHY:
                    self.notify(HEALTHY, name, message, exp_id=exp_id)

            try:
                result = run_command(["/bin/sh", "-c", cmd], exp_id=exp_id, signals_dir=self.signals_dir,
                                     health_time=step.health_time, grace=self.grace, forward_signals=False,
                                     on_event=on_event, console=self.console, env=step_env)
            except (OSError, ValueError) as exc:
                self.state.update(name, state=FAILED, reason=one_line(exc), ended=iso_time())
                self.log(f"{name}: failed: {one_line(exc)}")
                self.notify(FAILED, name, one_line(exc))
                return
            run_dir = str(result.run_dir) if result.run_dir else None
            fields: dict[str, Any] = {"exit_code": result.exit_code, "duration_s": result.duration_s,
                                      "run_dir": run_dir, "ended": iso_time()}
            verdict = attempt_verdict(result.exit_code, stopping=self.stopping.is_set(), attempt=attempt,
                                      retries=step.retries)
            if verdict == DONE:
                summary = result.summary or {}
                self.state.update(name, state=DONE, reason=None, **fields)
                self.log(f"{name}: done in {result.duration_s:.1f} s" + (f": {run_dir}" if run_dir else ""))
                self.notify(DONE, name, f"done in {result.duration_s:.1f} s", exp_id=exp_id, run_dir=run_dir,
                            final=metric_values(summary.get("final")), best=metric_values(summary.get("best")))
                return
            reason, brief = failure_brief(result)
            if verdict == INTERRUPTED:
                self.state.update(name, state=INTERRUPTED, reason=f"interrupted: {reason}", **fields)
                self.log(f"{name}: interrupted")
                self.notify(INTERRUPTED, name, f"interrupted: {reason}", exp_id=exp_id, run_dir=run_dir)
                return
            if verdict == FAILED:
                self.state.update(name, state=FAILED, reason=reason, failure=brief or None, **fields)
                self.notify(FAILED, name, reason, exp_id=exp_id, run_dir=run_dir, attempt=attempt, **brief)
                self.log(f"{name}: failed: {reason}")
                return
            # retried: the step stays running (its dependants wait), the failed attempt only said
            self.state.update(name, reason=f"attempt {attempt} failed: {reason}; retrying")
            self.notify(RETRYING, name, reason, exp_id=exp_id, run_dir=run_dir, attempt=attempt, **brief)
            self.log(f"{name}: failed: {reason}; retrying ({attempt} of {step.retries} retries)")

    def finish_sweep(self, name: str) -> None:
        from .sweep_report import finish_sweep

        fields = finish_sweep(self.pipeline, self.state, name)
        self.state.update(name, state=DONE, cmd=redact_command(self.pipeline.steps[name].cmd),
                          exp_id=self.pipeline.exp_id(name), reason=None, **fields)
        best = fields.get("best")
        line = f"{fields['trials']} trials done" + (f"; best: trial {best['trial']} {best['metric']} "
                                                     f"{best['value']:.6g}" if best else "")
        if fields.get("no_run_dir"):
            line += f"; {fields['no_run_dir']}"
        self.log(f"{name}: {line}; table: {fields['table']}")
        self.notify(DONE, name, line, sweep=self.pipeline.exp_id(name), run_dir=fields.get("run_dir"),
                    best=best and {best["metric"]: best["value"]}, overrides=best and best["overrides"])

    # -- the heartbeat watch -------------------------------------------------------------------------
    def watch(self, running: list[str]) -> None:
        for name in running:
            attempt = int(self.state.get(name).get("attempts", 1))
            if (name, attempt, STALE) in self.stale_told:
                continue
            found = stale_notice(self.signals_dir, self.pipeline.exp_id(name), self.stale_after)
            if found is not None and (name, attempt, found[0]) not in self.stale_told:
                event, why, fields = found
                self.stale_told.add((name, attempt, event))  # each event told once per attempt
                self.log(f"{name}: {why}")
                self.notify(event, name, why, **fields)

    # -- the schedule --------------------------------------------------------------------------------
    def run(self, jobs: int) -> None:
        futures: dict[Future[None], str] = {}
        last_watch = time.monotonic()
        after = {name: self.pipeline.steps[name].after for name in self.pipeline.order}
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="lightning_track-step") as pool:
            while True:
                states = {name: self.state.state(name) for name in self.pipeline.order}
                blocked, start = schedule(self.pipeline.order, after, states, running=set(futures.values()),
                                          jobs=jobs, stopping=self.stopping.is_set())
                for name, reason in blocked.items():
                    self.state.update(name, state=BLOCKED, reason=reason)
                    self.log(f"{name}: not started: {reason}")
                for name in start:
                    self.state.update(name, state=RUNNING)  # before the thread can record its end
                    futures[pool.submit(self.run_step, name)] = name
                if not futures:
                    break
                finished, _ = wait(futures, timeout=0.2, return_when=FIRST_COMPLETED)
                for future in finished:
                    name = futures.pop(future)
                    exc = future.exception()
                    if exc is not None:  # a bug in the driver: recorded, never silent
                        self.state.update(name, state=FAILED, reason=f"driver error: {one_line(exc)}")
                        self.log(f"{name}: driver error: {one_line(exc)}")
                if self.stale_after > 0 and time.monotonic() - last_watch >= min(WATCH_INTERVAL, self.stale_after):
                    last_watch = time.monotonic()
                    self.watch(list(futures.values()))

    def forward(self, signum: int) -> None:
        self.stopping.set()
        for pid in _children():
            try:
                os.killpg(pid, signum)
            except (ProcessLookupError, PermissionError):
                try:
                    os.kill(pid, signum)
                except OSError:
                    pass


def run_pipeline(pipeline: Pipeline, *, jobs: int = 1, from_step: str | None = None, notifier: Notifier | None = None,
                 log: Callable[[str], None] = print, grace: float = 30.0, stale_after: float = 120.0,
                 console: bool = True) -> PipelineResult:
    """Run the pipeline to its end (or to Ctrl+C); exit code 0 (all done), 1 (a step failed), 130."""
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    pipeline = expand_sweeps(pipeline)  # a sweep step: one step per trial, then the step itself
    if from_step is not None and from_step not in pipeline.steps:
        raise ConfigError(f"--from {from_step!r}: no such step; steps: {', '.join(pipeline.order)}")
    state = PipelineState(pipeline, resume=False)
    held = state.lock()
    state = PipelineState(pipeline)  # read again under the lock: the last driver's steps are final now
    if from_step is not None:
        state.reset(trial_names(pipeline, [from_step, *pipeline.downstream(from_step)]), reason=f"--from {from_step}")
    skipped = state.prepare_run()
    if skipped:
        log(f"already done, skipped: {', '.join(skipped)} (--from STEP runs a step again)")
    driver = _Driver(pipeline, state, notifier=notifier or Notifier([]), log=log, grace=grace,
                     stale_after=stale_after, console=console)
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in stop_signals():  # an inherited ignored SIGINT stays ignored, as in the steps
            previous[sig] = signal.signal(sig, lambda signum, frame: driver.forward(signum))
    try:
        driver.run(jobs)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        held.close()
    states = [state.state(n) for n in pipeline.order]
    if driver.stopping.is_set():
        code = EXIT_INTERRUPTED
    elif all(s == DONE for s in states):
        code = EXIT_OK
    else:
        code = EXIT_FAILURE
    tables = _sweep_tables(pipeline, state, log)
    failed = [n for n in pipeline.order if state.state(n) == FAILED]
    blocked = [n for n in pipeline.order if state.state(n) == BLOCKED]
    if failed:
        log(f"failed: {', '.join(failed)}" + (f"; not started because of it: {', '.join(blocked)}" if blocked else ""))
    return PipelineResult(exit_code=code, state=state, skipped=skipped, tables=tables)


def _sweep_tables(pipeline: Pipeline, state: PipelineState, log: Callable[[str], None]) -> dict[str, list[str]]:
    if not pipeline.sweeps:
        return {}
    from .sweep_report import write_tables

    try:
        return write_tables(pipeline, state)
    except OSError as exc:  # the table is a convenience: the runs and the state file have it all
        log(f"sweep tables not written: {one_line(exc)}")
        return {}
