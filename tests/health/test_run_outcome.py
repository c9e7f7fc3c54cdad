"""lt-run's decisions as plain functions: no process is started, no file is written."""

from __future__ import annotations

import signal
from pathlib import Path

from lightning_track.launch.outcome import (
    CHILD_FAILED,
    HEALTH_TIMEOUT,
    STOP_CHECKS,
    decide_outcome,
    health_timeout_failure,
    run_dir_from,
    signal_name,
    summary_update,
    watch_verdict,
)
from lightning_track.vocabulary import DONE, EXIT_HEALTH, FAILED, HEALTHY, exit_status

SIGTERM, SIGKILL, SIGINT = int(signal.SIGTERM), int(signal.SIGKILL), int(signal.SIGINT)


def test_runner_names_are_the_vocabularys():
    assert exit_status(-SIGTERM) == 143 and exit_status(0) == 0 and exit_status(3) == 3


# -- while the command runs ---------------------------------------------------------------------
def test_watch_keeps_waiting_until_the_deadline():
    assert watch_verdict({}, healthy=False, elapsed=0.5, health_time=1.0) is None
    assert watch_verdict({}, healthy=False, elapsed=1.0, health_time=1.0) == HEALTH_TIMEOUT
    assert watch_verdict({}, healthy=False, elapsed=1e9, health_time=None) is None  # no deadline given


def test_watch_healthy_once_means_no_deadline_any_more():
    assert watch_verdict({}, healthy=True, elapsed=5.0, health_time=1.0) is None
    assert watch_verdict({HEALTHY: {}}, healthy=True, elapsed=5.0, health_time=1.0) is None


def test_watch_the_childs_failure_wins_over_the_deadline():
    assert watch_verdict({FAILED: {"reason": "boom"}}, healthy=False, elapsed=5.0, health_time=1.0) == CHILD_FAILED
    assert watch_verdict({FAILED: {}, HEALTHY: {}}, healthy=True, elapsed=0.0, health_time=None) == CHILD_FAILED


def test_health_timeout_failure_record():
    assert health_timeout_failure(600, 600.12345) == {"check": "health_timeout", "reason": "not healthy within 600 s",
                                                     "value": 600.123, "threshold": 600}
    assert health_timeout_failure(1.5, 2)["reason"] == "not healthy within 1.5 s"


# -- once it has exited ---------------------------------------------------------------------------
def test_health_timeout_completes_lt_runs_own_failed_signal():
    failure = health_timeout_failure(1, 1.02)
    end = decide_outcome(-SIGTERM, seen={FAILED: {"reason": "not healthy within 1 s"}}, health_failure=failure,
                         stopped=True, duration_s=2.5, child_pid=42, run_dir="/runs/r")
    assert (end.exit_code, end.outcome, end.reason, end.interrupted) == (143, FAILED, "not healthy within 1 s", False)
    status, fields = end.signal
    assert status == FAILED
    assert fields == {**failure, "exit_code": 143, "duration_s": 2.5, "child_pid": 42, "writer": "lt-run",
                      "killed_by": "SIGTERM", "run_dir": "/runs/r"}


def test_a_command_stopped_for_its_health_never_exits_0():
    end = decide_outcome(0, seen={}, health_failure=health_timeout_failure(1, 1), stopped=True)
    assert end.exit_code == EXIT_HEALTH and end.outcome == FAILED
    end = decide_outcome(0, seen={FAILED: {"reason": "boom"}}, stopped=True)  # stopped after its own .failed
    assert (end.exit_code, end.outcome, end.reason, end.signal) == (EXIT_HEALTH, FAILED, "boom", None)


def test_sigkill_after_grace_is_named():
    end = decide_outcome(-SIGKILL, seen={}, health_failure=health_timeout_failure(1, 1), stopped=True)
    assert end.exit_code == 137 and end.signal[1]["killed_by"] == "SIGKILL"
    assert end.signal[1]["reason"] == "not healthy within 1 s"  # lt-run's reason, not the kill
    assert "run_dir" in end.signal[1] and end.signal[1]["run_dir"] is None  # dropped by write_signal


def test_the_childs_own_failed_signal_stands():
    end = decide_outcome(-SIGTERM, seen={FAILED: {"reason": "boom"}}, stopped=True)
    assert (end.exit_code, end.outcome, end.reason, end.signal) == (143, FAILED, "boom", None)
    end = decide_outcome(0, seen={FAILED: {}})  # a .failed without a reason (a shell script)
    assert (end.outcome, end.reason, end.exit_code) == (FAILED, None, 0)


def test_the_childs_own_done_stands_only_with_exit_0():
    end = decide_outcome(0, seen={DONE: {}, HEALTHY: {}})
    assert (end.exit_code, end.outcome, end.reason, end.signal) == (0, DONE, None, None)
    end = decide_outcome(1, seen={DONE: {}}, duration_s=1.0, child_pid=7)
    assert (end.outcome, end.reason) == (FAILED, "exit code 1")
    assert end.signal == (FAILED, {"check": "exit", "reason": "exit code 1", "exit_code": 1, "duration_s": 1.0,
                                   "child_pid": 7, "writer": "lt-run"})


def test_plain_success_gets_done_written_by_lt_run():
    end = decide_outcome(0, seen={}, duration_s=0.4, child_pid=9)
    assert (end.exit_code, end.outcome, end.reason) == (0, DONE, None)
    assert end.signal == (DONE, {"exit_code": 0, "duration_s": 0.4, "child_pid": 9, "writer": "lt-run"})


def test_plain_failure_and_kill_reasons():
    assert decide_outcome(3, seen={}).reason == "exit code 3"
    end = decide_outcome(-SIGKILL, seen={})
    assert (end.exit_code, end.reason) == (137, "killed by SIGKILL (exit code 137)")
    assert end.signal[1]["killed_by"] == "SIGKILL" and end.signal[1]["check"] == "exit"
    assert decide_outcome(-77, seen={}).reason == "killed by signal 77 (exit code 205)"


def test_a_forwarded_signal_is_an_interruption_even_with_exit_0():
    end = decide_outcome(7, seen={}, forwarded=[SIGTERM])
    assert (end.exit_code, end.outcome, end.interrupted) == (7, FAILED, True)
    assert end.reason == "stopped: lt-run received SIGTERM (exit code 7)"
    end = decide_outcome(0, seen={}, forwarded=[SIGINT, SIGTERM])  # the first signal names it
    assert (end.exit_code, end.outcome, end.reason) == (0, FAILED, "stopped: lt-run received SIGINT (exit code 0)")
    end = decide_outcome(0, seen={DONE: {}}, forwarded=[SIGINT])  # the command finished cleanly anyway
    assert (end.outcome, end.signal, end.interrupted) == (DONE, None, True)
    end = decide_outcome(-SIGTERM, seen={}, health_failure=health_timeout_failure(1, 1), stopped=True,
                         forwarded=[SIGTERM])
    assert not end.interrupted and end.reason == "not healthy within 1 s"  # lt-run's own stop comes first


def test_signal_name():
    assert signal_name(SIGTERM) == "SIGTERM" and signal_name(200) == "signal 200"


# -- the run folder ----------------------------------------------------------------------------
def test_summary_of_a_run_left_running():
    common = {"exit_code": 137, "duration_s": 3.0, "exp_id": "e"}
    status, extra = summary_update({"status": "running"}, outcome=FAILED, **common)
    assert status == "failed"
    assert extra == {"lt_run": {"exp_id": "e", "exit_code": 137, "duration_s": 3.0, "outcome": FAILED}}
    assert summary_update({}, outcome=FAILED, interrupted=True, **common)[0] == "interrupted"
    assert summary_update({"status": "running"}, outcome=DONE, **common)[0] is None


def test_summary_keeps_the_childs_final_status_and_failure():
    common = {"exit_code": 86, "duration_s": 3.0, "exp_id": "e", "outcome": FAILED}
    failure = health_timeout_failure(1, 1)
    status, extra = summary_update({"status": "completed"}, failure=failure, interrupted=True, **common)
    assert status is None and extra["failure"] == failure
    status, extra = summary_update({"status": "failed", "failure": {"check": "nonfinite_loss"}}, failure=failure,
                                   **common)
    assert status is None and "failure" not in extra


def test_run_dir_from_the_signals():
    assert run_dir_from({}) is None
    assert run_dir_from({HEALTHY: {"run_dir": "/a"}}) == Path("/a")
    assert run_dir_from({HEALTHY: {"run_dir": "/a"}, DONE: {"run_dir": "/b"}, FAILED: {"reason": "x"}}) == Path("/b")
    assert run_dir_from({FAILED: {"run_dir": ""}, HEALTHY: {"run_dir": "/a"}}) == Path("/a")


def test_lt_runs_health_verdict_replaces_the_childs_record_of_being_stopped():
    common = {"exit_code": 86, "duration_s": 9.0, "exp_id": "e", "outcome": FAILED}
    failure = health_timeout_failure(8, 8.2)
    terminated = {"check": "terminated", "reason": "SIGTERM received", "step": 40}
    for current in ({"status": "failed", "failure": terminated}, {"status": "interrupted", "failure": terminated},
                    {"status": "interrupted"}, {"status": "failed"}, {"status": "running"}, {}):
        status, extra = summary_update(current, failure=failure, **common)
        assert status == FAILED and extra["failure"] == failure, current
        assert extra["lt_run"].get("child_failure") == current.get("failure")
    # a Ctrl+C the guard recorded is a stop from outside too; a failure the child found itself is not
    status, extra = summary_update({"status": "failed", "failure": {"check": "interrupted"}}, failure=failure,
                                   **common)
    assert (status, extra["failure"]) == (FAILED, failure)
    assert summary_update({"status": "failed", "failure": {"check": "loss_threshold"}}, failure=failure,
                          **common) == (None, {"lt_run": {**common, "outcome": FAILED}})


def test_stop_checks_are_the_guards():
    from lightning_track.callbacks.health import checks

    assert STOP_CHECKS == checks.STOP_CHECKS


def test_signals_lt_run_writes_name_the_run_folder_when_known():
    end = decide_outcome(3, seen={}, duration_s=1.0, child_pid=7, run_dir="/runs/r")
    assert end.signal[1]["run_dir"] == "/runs/r"
    assert decide_outcome(0, seen={}, run_dir="/runs/r").signal[1]["run_dir"] == "/runs/r"
