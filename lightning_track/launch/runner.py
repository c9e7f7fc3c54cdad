"""The library behind ``lt-run``: launch a training command, act on its health, post-process it.

Why: a run that never becomes healthy should not hold a GPU for hours, and a Slurm chain
(``sbatch --dependency=afterok``) must see the training's own exit status.

How the child is told where to signal: ``lt-run`` exports ``LIGHTNING_TRACK_EXP_ID`` and
``LIGHTNING_TRACK_SIGNALS_DIR``; a :class:`~lightning_track.callbacks.health.HealthGuard` in the child
uses them unless it was given its own values. How ``lt-run`` learns the child's run folder, first
found first: ``run_dir=`` (``--run-dir``); the run note ``<signals_dir>/<exp_id>.run`` (one line, the
absolute run folder) that the child writes as soon as the folder exists (a HealthGuard at setup, a
RunLogger started under lt-run), so a child stopped before any health signal is still
post-processed; the ``run_dir`` field of the signals' JSON twins.

The child runs in its own process group (so a terminal's Ctrl+C reaches it once, through
``lt-run``); SIGINT/SIGTERM sent to ``lt-run`` are forwarded to that group, and terminating
means SIGTERM to the group, then SIGKILL after ``grace`` seconds. Started with SIGINT ignored (a
script's ``lt-run ... &``), lt-run and the command keep ignoring it (:func:`~..vocabulary.stop_signals`).

This module does the I/O (the process, its signals, the files); what to make of what it sees
(when to stop the child, the exit code, the outcome, what lt-run writes) is decided in
:mod:`.outcome`.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, RunNotFound
from ..folder import signals
from ..folder.layout import RunLayout, sanitize_name
from ..redaction import command_secrets, redact_command, secret_values
from ..vocabulary import (
    ENV_EXP_ID,
    ENV_SIGNALS_DIR,
    FAILED,
    HEALTHY,
    run_name_time,
    stop_signals,
)
from .console import LaunchConsole
from .outcome import (
    CHILD_FAILED,
    HEALTH_TIMEOUT,
    WRITER,
    decide_outcome,
    health_timeout_failure,
    run_dir_from,
    summary_update,
    watch_verdict,
)

__all__ = ["RunResult", "run_command", "finish_run_dir", "default_exp_id"]

Event = Callable[[str, str], None]  # (kind, message) -> None, for a console


@dataclass
class RunResult:
    """What happened to one launched command."""

    exit_code: int  # what lt-run exits with: the child's (128 + N when signal N killed it)
    child_returncode: int | None  # Popen's returncode (negative: killed by that signal)
    exp_id: str
    outcome: str  # DONE or FAILED (lightning_track.vocabulary)
    reason: str | None
    healthy: bool
    duration_s: float
    run_dir: Path | None
    signals: dict[str, dict[str, Any]] = field(default_factory=dict)
    summary: dict[str, Any] | None = None
    post_process_error: str | None = None
    interrupted: bool = False  # stopped by a SIGINT/SIGTERM that lt-run forwarded (not by its health)


def default_exp_id(cmd: Sequence[str]) -> str:
    """``<script stem>_<YYYYmmdd_HHMMSS>``: ``python train.py`` -> ``train_20250720_143052``."""
    script = next((a for a in cmd[1:] if a.endswith(".py")), cmd[0] if cmd else "run")
    stem = Path(script).stem or "run"
    try:
        stem = sanitize_name(stem)
    except ValueError:
        stem = "run"
    return f"{stem}_{run_name_time()}"


class _Child:
    def __init__(self, cmd: Sequence[str], env: Mapping[str, str], cwd: str | None, **stdio: Any) -> None:
        try:
            self.proc = subprocess.Popen(list(cmd), env=dict(env), cwd=cwd, start_new_session=True, **stdio)
        except OSError as exc:
            raise OSError(f"cannot start {redact_command(shlex.join(cmd))}: {exc.strerror or exc}") from None

    def send(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        except PermissionError:
            self.proc.send_signal(sig)

    def wait_group(self, timeout: float) -> bool:
        """After the command exited on a signal: wait up to ``timeout`` s for the processes it left in its group
        (a ``/bin/sh -c`` dies at once on SIGTERM while the training it started still checkpoints and writes its
        signal); True when none is left. Zombies (exited, not yet reaped by anyone) do not count."""
        import psutil

        deadline = time.monotonic() + timeout
        while True:
            left = []
            for pid in psutil.pids():
                try:
                    if os.getpgid(pid) == self.proc.pid and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                        left.append(pid)
                except (OSError, psutil.Error):
                    continue
            if not left or time.monotonic() > deadline:
                return not left
            time.sleep(0.05)

    def terminate(self, grace: float, on_event: Event) -> None:
        """SIGTERM to the group, SIGKILL after ``grace`` s (also for leftover grandchildren)."""
        self.send(signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            on_event("kill", f"still running {grace:g} s after SIGTERM: SIGKILL")
            self.send(signal.SIGKILL)
            self.proc.wait()


def run_command(
    cmd: Sequence[str],
    *,
    exp_id: str | None = None,
    signals_dir: str | os.PathLike[str] = "runs/signals",
    health_time: float | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    grace: float = 30.0,
    poll_interval: float = 0.25,
    do_post_process: bool = True,
    forward_signals: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    on_event: Event | None = None,
    console: bool = True,
) -> RunResult:
    """Run ``cmd`` to the end, watching ``<signals_dir>/<exp_id>.*``; see the module doc.

    * no ``.healthy`` within ``health_time`` s: ``.failed`` ("not healthy within N s"), terminate;
    * ``.failed`` written by the child: terminate it (after ``grace`` s for it to exit by itself);
    * on exit: ``.done``/``.failed`` if the child wrote neither, then :func:`post_process` of the
      run folder (when known). ``forward_signals`` installs SIGINT/SIGTERM handlers (main thread).

    ``console``: the command's stdout and stderr pass through lt-run into the run's ``logs.txt`` from the
    first byte (see :mod:`.console`); the terminal shows the same as without it.
    """
    if not cmd:
        raise ConfigError("no command given (usage: lt-run [options] -- CMD ...)")
    if health_time is not None and health_time <= 0:
        raise ConfigError(f"--health-time must be positive, got {health_time}")
    notify: Event = on_event or (lambda kind, message: None)
    exp_id = signals.check_exp_id(exp_id) if exp_id is not None else default_exp_id(cmd)
    signals_path = Path(signals_dir).resolve()
    signals_path.mkdir(parents=True, exist_ok=True)
    # Old signals of this exp_id are removed, not filtered by time: file mtimes come from a coarse
    # (or, on NFS, another machine's) clock and cannot be compared with ours reliably.
    stale = signals.clear_signals(signals_path, exp_id)
    note = signals.run_note_path(signals_path, exp_id)
    if note.exists():  # an earlier launch's folder is not this one's
        note.unlink(missing_ok=True)
        stale.append(note)
    child_env = dict(os.environ if env is None else env)
    child_env[ENV_EXP_ID] = exp_id
    child_env[ENV_SIGNALS_DIR] = str(signals_path)

    capture: LaunchConsole | None = None
    if console:
        try:
            capture = LaunchConsole(secrets=command_secrets(shlex.join(cmd)) | secret_values(environ=child_env))
            child_env = capture.env(child_env)
        except OSError as exc:
            notify("info", f"console output is not captured: {exc.strerror or exc}")
    t0 = time.monotonic()
    try:
        child = _Child(cmd, child_env, cwd, **(capture.child_fds() if capture is not None else {}))
    finally:
        if capture is not None:
            capture.started()
    # Said once the command runs: the first message loads the terminal's console (rich, ~0.1 s), and a
    # Slurm job or a pipeline step waits for the command's start, not for lt-run's words.
    if stale:
        notify("info", f"removed {len(stale)} old signal file(s) of {exp_id}")
    shown = redact_command(shlex.join(cmd))
    notify("start", f"pid {child.proc.pid}: {shown} (exp_id {exp_id}, signals in {signals_path})")

    forwarded: list[int] = []
    previous: dict[int, Any] = {}
    if forward_signals and threading.current_thread() is threading.main_thread():
        def forward(signum: int, frame: Any) -> None:
            forwarded.append(signum)
            child.send(signum)

        for sig in stop_signals():  # an inherited ignored SIGINT stays ignored, as in the command
            previous[sig] = signal.signal(sig, forward)

    healthy = False
    stopped = False  # lt-run terminated the child
    lt_failure: dict[str, Any] | None = None  # lt-run's own failure (health timeout)
    known_dir = Path(run_dir) if run_dir is not None else None
    if known_dir is not None and capture is not None:
        capture.set_log(RunLayout(known_dir).logs_txt)

    def learn_run_dir(seen: Mapping[str, Mapping[str, Any]]) -> None:
        nonlocal known_dir
        if known_dir is None:
            known_dir = signals.read_run_note(signals_path, exp_id) or run_dir_from(seen)
            if known_dir is not None:
                notify("info", f"run folder {known_dir}")
                if capture is not None:  # what it printed so far, and from now on
                    capture.set_log(RunLayout(known_dir).logs_txt)

    try:
        while child.proc.poll() is None:
            seen = signals.read_signals(signals_path, exp_id)
            learn_run_dir(seen)
            if not healthy and HEALTHY in seen:
                healthy = True
                notify(HEALTHY, f"healthy after {time.monotonic() - t0:.1f} s: {signals.format_signal(seen[HEALTHY])}")
            elapsed = time.monotonic() - t0
            verdict = watch_verdict(seen, healthy=healthy, elapsed=elapsed, health_time=health_time)
            if verdict == CHILD_FAILED:
                stopped = True
                notify(FAILED, f"child reported {signals.format_signal(seen[FAILED])}; "
                               f"waiting up to {grace:g} s for it to exit")
                try:
                    child.proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    child.terminate(grace, notify)
                break
            if verdict == HEALTH_TIMEOUT:
                assert health_time is not None
                stopped = True
                lt_failure = health_timeout_failure(health_time, elapsed)
                signals.write_signal(signals_path, exp_id, FAILED, **lt_failure,
                                     run_dir=str(known_dir) if known_dir else None, child_pid=child.proc.pid,
                                     writer=WRITER)
                notify(FAILED, f"{lt_failure['reason']}: SIGTERM, SIGKILL after {grace:g} s")
                child.terminate(grace, notify)
                break
            try:  # back at once when the command ends (a short step is not held for the rest of a poll)
                child.proc.wait(timeout=poll_interval)
            except subprocess.TimeoutExpired:
                pass
        returncode = child.proc.wait()
        if (forwarded or stopped) and not child.wait_group(grace):
            notify("kill", f"processes of the command still running {grace:g} s after it exited: SIGKILL")
            child.send(signal.SIGKILL)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    duration = round(time.monotonic() - t0, 3)

    seen = signals.read_signals(signals_path, exp_id)
    learn_run_dir(seen)  # before lt-run writes a signal of its own over the child's
    found_dir = known_dir
    if capture is not None:  # the command's last words are on the terminal before lt-run's verdict
        written = capture.finish(RunLayout.launch_logs(signals_path, exp_id))
        if found_dir is None and written is not None:
            notify("info", f"console output of the command kept in {written}")
    end = decide_outcome(returncode, seen=seen, health_failure=lt_failure, stopped=stopped, forwarded=forwarded,
                         duration_s=duration, child_pid=child.proc.pid,
                         run_dir=str(found_dir) if found_dir else None)
    if end.signal is not None:
        status, fields = end.signal
        signals.write_signal(signals_path, exp_id, status, **fields)
    seen = signals.read_signals(signals_path, exp_id)
    notify(end.outcome, f"exit code {end.exit_code} after {duration:.1f} s" + (f": {end.reason}" if end.reason else ""))

    result = RunResult(exit_code=end.exit_code, child_returncode=returncode, exp_id=exp_id, outcome=end.outcome,
                       reason=end.reason, healthy=healthy, duration_s=duration, run_dir=found_dir, signals=seen,
                       interrupted=end.interrupted)
    if do_post_process:
        if found_dir is None:
            notify("info", f"no run folder known (no --run-dir, no {note.name}, no run_dir in the signals): "
                           "skipping post-processing")
        else:
            try:
                result.summary = finish_run_dir(found_dir, exit_code=end.exit_code, duration_s=duration,
                                                exp_id=exp_id, outcome=end.outcome, failure=lt_failure,
                                                interrupted=end.interrupted)
                notify("post", f"post-processed {found_dir}")
            except (OSError, ValueError) as exc:
                result.post_process_error = str(exc)
                notify("error", f"post-processing {found_dir} failed: {exc}")
    return result


def finish_run_dir(
    run_dir: str | os.PathLike[str],
    *,
    exit_code: int,
    duration_s: float,
    exp_id: str,
    outcome: str,
    failure: Mapping[str, Any] | None = None,
    interrupted: bool = False,
) -> dict[str, Any]:
    """Post-process a run folder after its process ended; mark it failed if the child never could.

    A child killed before it finalized leaves ``status: running``; that becomes ``failed`` (or
    ``interrupted`` when lt-run forwarded a signal). The child's own final status is kept otherwise,
    except after lt-run's own ``failure`` (a health timeout), which replaces the child's record of
    being stopped (:func:`~.outcome.summary_update`).
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise RunNotFound(f"{path}: run folder does not exist")
    from ..derived.summary import SummaryFile, post_process  # after the command: not in the way of its start

    summary_json = RunLayout(path).summary_json
    current = SummaryFile(summary_json).read() if summary_json.exists() else {}
    status, extra = summary_update(current, exit_code=exit_code, duration_s=duration_s, exp_id=exp_id,
                                   outcome=outcome, failure=failure, interrupted=interrupted)
    return post_process(path, status=status, extra=extra)
