"""The pipeline driver's decisions as pure functions (which step starts, which is blocked, what an attempt leaves),
and the retried-step race with a slow state file."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lightning_track.launch import pipeline_state
from lightning_track.launch.pipeline import parse_pipeline
from lightning_track.launch.pipeline_driver import attempt_verdict, run_pipeline, schedule
from lightning_track.vocabulary import BLOCKED, DONE, FAILED, INTERRUPTED, PENDING, RUNNING

#   a -> b -> d      c (independent)      e after a and c
ORDER = ("a", "c", "b", "d", "e")
AFTER = {"a": (), "c": (), "b": ("a",), "d": ("b",), "e": ("a", "c")}


def turn(states: dict[str, str], running: set[str] = frozenset(), jobs: int = 2, stopping: bool = False):
    full = {name: states.get(name, PENDING) for name in ORDER}
    return schedule(ORDER, AFTER, full, running=running, jobs=jobs, stopping=stopping)


def test_jobs_2_starts_only_steps_whose_dependencies_are_done() -> None:
    assert turn({}) == ({}, ["a", "c"])  # two independent steps at once
    assert turn({}, jobs=1) == ({}, ["a"])
    assert turn({"a": RUNNING}, running={"a"}) == ({}, ["c"])  # b waits for a, though a slot is free
    assert turn({"a": RUNNING, "c": DONE}, running={"a"}) == ({}, [])  # b and e both wait for a
    assert turn({"a": DONE, "c": RUNNING}, running={"c"}) == ({}, ["b"])  # e still waits for c
    assert turn({"a": DONE, "c": DONE}) == ({}, ["b", "e"])
    assert turn({"a": DONE, "c": DONE, "b": RUNNING, "e": RUNNING}, running={"b", "e"}) == ({}, [])  # full


def test_a_failed_step_blocks_its_whole_chain_in_one_turn_and_nothing_else() -> None:
    blocked, start = turn({"a": FAILED})
    assert blocked == {"b": "step 'a' failed", "d": "step 'b' blocked", "e": "step 'a' failed"}
    assert start == ["c"]
    assert turn({"a": DONE, "b": INTERRUPTED}) == ({}, ["c"])  # an interrupted step blocks nothing: a re-run


def test_a_step_being_retried_blocks_nothing() -> None:
    """Between two attempts the step is running (never failed): its dependants wait."""
    assert turn({"a": RUNNING, "c": DONE}, running={"a"}) == ({}, [])


def test_stopping_starts_nothing() -> None:
    assert turn({}, stopping=True) == ({}, [])
    assert turn({"a": FAILED}, stopping=True)[1] == []


@pytest.mark.parametrize(("exit_code", "stopping", "attempt", "retries", "verdict"), [
    (0, False, 1, 0, DONE), (0, False, 2, 1, DONE),
    (4, False, 1, 0, FAILED), (4, False, 1, 1, RUNNING), (4, False, 2, 1, FAILED), (4, False, 2, 3, RUNNING),
    (130, True, 1, 3, INTERRUPTED), (0, True, 1, 0, INTERRUPTED),  # stopped: never retried, never "done"
])
def test_what_an_attempt_leaves(exit_code: int, stopping: bool, attempt: int, retries: int, verdict: str) -> None:
    assert attempt_verdict(exit_code, stopping=stopping, attempt=attempt, retries=retries) == verdict


def test_a_retried_step_never_blocks_its_dependants_on_a_slow_disk(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The save after the first attempt failed takes 0.3 s (a slow disk), longer than the driver's 0.2 s look at
    the states: the step that fails once and succeeds on its retry must never be seen failed."""
    save = pipeline_state.PipelineState._save
    seen: list[dict[str, str]] = []

    def slow_save(self: pipeline_state.PipelineState) -> None:
        seen.append({name: entry["state"] for name, entry in self.steps.items()})
        if self.steps["flaky"].get("reason") and self.steps["flaky"]["state"] != DONE:  # between the attempts
            time.sleep(0.3)
        save(self)

    monkeypatch.setattr(pipeline_state.PipelineState, "_save", slow_save)
    marker = tmp_path / "tried"
    pipeline = parse_pipeline({"root": str(tmp_path / "runs"), "steps": {
        "flaky": {"cmd": f"test -e {marker} || {{ touch {marker}; exit 4; }}", "retries": 1},
        "after": {"cmd": "true", "after": ["flaky"]}}}, default_name="race")
    lines: list[str] = []
    result = run_pipeline(pipeline, jobs=2, log=lines.append, stale_after=0, console=False)
    assert result.exit_code == 0, lines
    assert [result.state.state(n) for n in ("flaky", "after")] == [DONE, DONE]
    assert result.state.get("flaky")["attempts"] == 2
    assert all(states["flaky"] != FAILED and states["after"] != BLOCKED for states in seen)
    assert "flaky: failed: exit code 4; retrying (1 of 1 retries)" in lines
