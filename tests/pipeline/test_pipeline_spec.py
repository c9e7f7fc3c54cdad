"""The pipeline file's rules, without starting anything: every bad input is one line naming the step."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_track.errors import ConfigError, RunFolderError
from lightning_track.launch.pipeline import load_pipeline, parse_pipeline, render_command
from lightning_track.launch.pipeline_state import PipelineState, format_status
from lightning_track.vocabulary import BLOCKED, DONE, FAILED, PENDING

CHAIN = {"steps": {
    "report": {"cmd": "lt report {train.run_dir} -o {train.run_dir}/report.html", "after": ["eval"]},
    "eval": {"cmd": "python eval.py --run {train.run_dir}", "after": "train"},
    "train": {"cmd": "python train.py --config cfg.yaml", "health_time": 600, "retries": 1},
}}


def refuse(data: object) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_pipeline(data, source="p.yaml")
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_chain_is_put_in_dependency_order() -> None:
    pipeline = parse_pipeline(CHAIN, default_name="exp")
    assert pipeline.order == ("train", "eval", "report")
    assert pipeline.name == "exp" and pipeline.root == "runs"
    assert pipeline.steps["train"].health_time == 600.0 and pipeline.steps["train"].retries == 1
    assert pipeline.steps["eval"].after == ("train",)
    assert pipeline.upstream("report") == {"train", "eval"}
    assert pipeline.downstream("train") == ["eval", "report"]
    assert pipeline.exp_id("eval") == "exp_eval"


def test_references_are_quoted_for_the_shell() -> None:
    pipeline = parse_pipeline(CHAIN)
    cmd = render_command(pipeline.steps["report"], {"train": {"run_dir": "/r/my run", "exp_id": "x"}})
    assert cmd == "lt report '/r/my run' -o '/r/my run'/report.html"


def test_a_reference_to_a_step_that_named_no_folder_says_so() -> None:
    pipeline = parse_pipeline(CHAIN)
    with pytest.raises(ConfigError, match=r"step 'eval': \{train.run_dir\} is unknown: step 'train' named no run"):
        render_command(pipeline.steps["eval"], {"train": {"run_dir": None}})


def test_other_braces_are_left_alone() -> None:
    pipeline = parse_pipeline({"steps": {"a": "find . -exec echo {} ;"}})
    assert render_command(pipeline.steps["a"], {}) == "find . -exec echo {} ;"


def test_a_cycle_is_named_step_by_step() -> None:
    message = refuse({"steps": {"a": {"cmd": "x", "after": ["c"]}, "b": {"cmd": "x", "after": ["a"]},
                                "c": {"cmd": "x", "after": ["b"]}}})
    assert "a -> c -> b -> a" in message and "remove one of these from an after list" in message


def test_a_step_after_itself() -> None:
    assert "waits for itself" in refuse({"steps": {"a": {"cmd": "x", "after": ["a"]}}})


def test_an_unknown_step_in_after() -> None:
    message = refuse({"steps": {"train": "x", "eval": {"cmd": "y", "after": ["trian"]}}})
    assert message == "p.yaml: step 'eval': after names unknown step 'trian'; known steps: train, eval"


def test_a_reference_to_a_step_not_upstream() -> None:
    message = refuse({"steps": {"train": "x", "eval": "python eval.py {train.run_dir}"}})
    assert message == ("p.yaml: step 'eval': {train.run_dir} names a step it does not run after; "
                       "add after: [train]")


def test_a_reference_to_an_unknown_step_or_field() -> None:
    assert "names unknown step 'nope'" in refuse({"steps": {"a": "echo {nope.run_dir}"}})
    assert "names no known field" in refuse({"steps": {"a": "x", "b": {"cmd": "echo {a.folder}", "after": ["a"]}}})


@pytest.mark.parametrize(("step", "expected"), [
    ({"after": []}, "step 'a': no command; add cmd:"),
    ({"cmd": "  "}, "step 'a': no command"),
    ({"cmd": "x", "health_time": -1}, "health_time must be a positive number"),
    ({"cmd": "x", "retries": "2"}, "retries must be a whole number"),
    ({"cmd": "x", "after": 3}, "after must be a list of step names"),
    ({"cmd": "x", "helth_time": 3}, "unknown key 'helth_time'"),
    (["x"], "expected a mapping"),
])
def test_bad_steps(step: object, expected: str) -> None:
    assert expected in refuse({"steps": {"a": step}})


def test_bad_files() -> None:
    assert "no steps" in refuse({"steps": {}})
    assert "unknown key 'step'" in refuse({"step": {}})
    assert "name 'a b'" in refuse({"name": "a b", "steps": {"a": "x"}})
    assert "step name 'a b'" in refuse({"steps": {"a b": "x"}})


def test_a_command_list_is_joined(tmp_path: Path) -> None:
    pipeline = parse_pipeline({"steps": {"a": {"cmd": ["python", "my script.py"]}}})
    assert pipeline.steps["a"].cmd == "python 'my script.py'"


def test_load_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text("steps:\n  a: {cmd: x\n")
    with pytest.raises(ConfigError, match=r"exp.yaml:\d+: .*fix the YAML"):
        load_pipeline(path)
    with pytest.raises(ConfigError, match="cannot read the pipeline file"):
        load_pipeline(tmp_path / "missing.yaml")
    path.write_text("steps:\n  a: {cmd: x}\n")
    assert load_pipeline(path).name == "exp"


def test_state_is_kept_and_resumed(tmp_path: Path) -> None:
    pipeline = parse_pipeline({"root": str(tmp_path), **CHAIN}, default_name="exp")
    state = PipelineState(pipeline)
    assert [state.state(n) for n in pipeline.order] == [PENDING] * 3
    state.update("train", state=DONE, cmd=pipeline.steps["train"].cmd, run_dir="/r/x", exit_code=0)
    state.update("eval", state="running")
    state.update("report", state=BLOCKED, reason="step 'eval' failed")
    again = PipelineState(pipeline)
    assert again.state("train") == DONE and again.values()["train"]["run_dir"] == "/r/x"
    assert again.state("eval") == "interrupted"  # its driver is gone
    assert again.prepare_run() == ["train"]
    assert again.state("eval") == PENDING and again.state("report") == PENDING
    again.reset(["train", *pipeline.downstream("train")], reason="--from train")
    assert PipelineState(pipeline).state("train") == PENDING
    assert len(format_status(again)) == 3


def test_a_changed_command_runs_again(tmp_path: Path) -> None:
    pipeline = parse_pipeline({"root": str(tmp_path), "steps": {"a": "echo 1"}}, default_name="exp")
    PipelineState(pipeline).update("a", state=DONE, cmd="echo 1")
    changed = parse_pipeline({"root": str(tmp_path), "steps": {"a": "echo 2"}}, default_name="exp")
    assert PipelineState(changed).state("a") == PENDING
    assert PipelineState(pipeline).state("a") == DONE
    PipelineState(pipeline).update("a", state=FAILED)
    assert PipelineState(pipeline).state("a") == FAILED


def test_sweep_values_cannot_hold_references() -> None:
    said = refuse({"steps": {"train": "x", "s": {"cmd": "python t.py", "after": ["train"],
                                                "grid": {"data.path": ["a", "{train.run_dir}"]}}}})
    assert "sweep value '{train.run_dir}' of 'data.path' holds the reference {train.run_dir}" in said
    said = refuse({"steps": {"s": {"cmd": "t", "random": {"count": 2, "params": {"x": {"choice": ["{s.exp_id}"]}}}}}})
    assert "holds the reference {s.exp_id}" in said


def test_control_characters_never_reach_an_sbatch_script() -> None:
    from lightning_track.launch.slurm import SlurmOptions

    assert "root 'runs\\n#SBATCH --x': control characters" in refuse({"root": "runs\n#SBATCH --x", "steps": {"a": "x"}})
    for option, kwargs in (("--partition", {"partition": "gpu\nrm -rf ~"}), ("--time", {"time": "1:00\r"}),
                           ("--gres", {"gres": "gpu:1\n"}), ("--slurm-arg", {"extra": ("--mem=1G", "--a\nb")})):
        with pytest.raises(ConfigError, match=f"^{option} .*: control characters"):
            SlurmOptions(**kwargs)
    assert SlurmOptions(partition="gpu", time="24:00:00", gres="gpu:1", extra=("--mem=32G",)).gres == "gpu:1"


def test_odd_numbers_and_state_files_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("steps:\n  a: {cmd: x, health_time: .nan}\n")
    with pytest.raises(ConfigError, match="health_time must be a positive number of seconds, got nan"):
        load_pipeline(path)
    path.write_text(f"root: {tmp_path}\nsteps:\n  a: {{cmd: x}}\n")
    state = tmp_path / "p.pipeline.json"
    state.write_text('{"steps": 5}')
    with pytest.raises(RunFolderError, match="'steps' is 5, expected an object of steps; move the file aside"):
        PipelineState(load_pipeline(path))
    assert state.read_text() == '{"steps": 5}'
