"""End to end: a generated legacy tree migrated through the CLI, checked as a user would."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from support.migrate import run_dir, tree_hashes
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_track.cli.migrate import main
from lightning_track.folder.fileio import iter_jsonl
from lightning_track.folder.layout import RunLayout
from lightning_track.folder.records import read_metrics
from lightning_track.vocabulary import iso_time

HF_RUN = "arc-challenge_lora_20250720_143052"
OLD_RUN = "gsm8k_full_ft_20250720_144752"
MIXED_RUN = "arc-challenge_qlora_20250720_150452"


def test_every_legacy_run_becomes_a_run_folder(migrated: dict) -> None:
    assert migrated["code"] == 0
    names = sorted(p.name for p in migrated["out"].iterdir() if not p.name.startswith("."))
    assert names == sorted([HF_RUN, OLD_RUN, MIXED_RUN])
    assert [layout.name for layout in RunLayout.list_runs(migrated["out"])] == [HF_RUN, OLD_RUN, MIXED_RUN]
    assert not list(migrated["out"].glob(".lt-migrate-staging*")), "staging folder left behind"
    for name in names:
        layout = RunLayout(migrated["out"] / name)
        for path in (layout.config_yaml, layout.metrics_jsonl, layout.metrics_csv, layout.summary_json,
                     layout.meta_json, layout.batch_tracking_jsonl, layout.checkpoint_mapping_json,
                     layout.line_checkpoint_mapping_json, layout.final_model_dir / "config.json"):
            assert path.exists(), path
        assert list(layout.tensorboard_dir.glob("events.out.tfevents.*"))


def test_source_tree_is_untouched(migrated: dict) -> None:
    assert migrated["before"] == migrated["after"]


def test_tensorboard_has_the_original_steps_and_wall_times(migrated: dict, example_tree: Path) -> None:
    legacy = run_dir(example_tree, 0) / "logs" / "batch_tracking_arc-challenge.jsonl"
    original = {obj["step"]: (obj["loss"], datetime.fromisoformat(obj["timestamp"]).timestamp())
                for _, obj in iter_jsonl(legacy)}
    acc = EventAccumulator(str(RunLayout(migrated["out"] / HF_RUN).tensorboard_dir))
    acc.Reload()
    events = acc.Scalars("train/loss")
    assert [e.step for e in events] == sorted(original)
    for event in events:
        loss, when = original[event.step]
        assert event.value == pytest.approx(loss, rel=1e-6)
        assert event.wall_time == pytest.approx(when, abs=1e-3)
    # eval metrics come from trainer_state.json log_history (eval every 50 steps)
    assert [e.step for e in acc.Scalars("val/loss")] == [50, 100]


def test_old_field_names_are_read_and_written_canonically(migrated: dict, example_tree: Path) -> None:
    layout = RunLayout(migrated["out"] / OLD_RUN)
    records = [obj for _, obj in iter_jsonl(layout.batch_tracking_jsonl)]
    assert len(records) == 120  # the partial last line of the killed run is dropped
    first = records[0]
    assert {"step", "line_indices", "learning_rate", "timestamp"} <= set(first)
    assert not {"global_step", "indices", "lr", "time"} & set(first)
    legacy_first = json.loads((run_dir(example_tree, 1) / "logs" / "batch_tracking_gsm8k.jsonl").open().readline())
    assert first["line_indices"] == legacy_first["indices"]
    assert datetime.fromisoformat(first["timestamp"]).timestamp() == pytest.approx(legacy_first["time"], abs=1e-3)
    assert first["timestamp"] == iso_time(legacy_first["time"])
    metrics = read_metrics(layout.metrics_jsonl)
    assert metrics[0].time == pytest.approx(legacy_first["time"], abs=1e-3)
    assert metrics[0].metrics["train/learning_rate"] == legacy_first["lr"]
    warnings = json.loads(migrated["report"].read_text())["runs"]
    old = next(r for r in warnings if r["target"].endswith(OLD_RUN))
    assert any("batch_tracking_gsm8k.jsonl:121: partial last line" in w for w in old["warnings"])


def test_tracking_timestamps_are_written_in_the_one_format(migrated: dict, example_tree: Path) -> None:
    """Legacy naive ISO strings (local time) and unix times alike become ``iso_time``: aware, microseconds."""
    legacy = run_dir(example_tree, 0) / "logs" / "batch_tracking_arc-challenge.jsonl"
    original = {obj["step"]: datetime.fromisoformat(obj["timestamp"]).timestamp() for _, obj in iter_jsonl(legacy)}
    records = [obj for _, obj in iter_jsonl(RunLayout(migrated["out"] / HF_RUN).batch_tracking_jsonl)]
    assert records and [r["timestamp"] for r in records] == [iso_time(original[r["step"]]) for r in records]
    for name in (HF_RUN, OLD_RUN, MIXED_RUN):
        for _, obj in iter_jsonl(RunLayout(migrated["out"] / name).batch_tracking_jsonl):
            when = datetime.fromisoformat(obj["timestamp"])
            assert when.tzinfo is not None and obj["timestamp"] == iso_time(when.timestamp()), (name, obj)


def test_config_is_renamed_by_the_rules_and_keeps_unknown_keys(migrated: dict) -> None:
    config = yaml.safe_load((migrated["out"] / HF_RUN / "config.yaml").read_text())
    training = config["training"]
    assert training["batch_size"] == 4 and "per_device_train_batch_size" not in training
    assert training["stage1_steps"] == 72 and training["learning_rate_stage1"] == pytest.approx(1e-4)
    assert "stage1" not in training and training["max_steps"] == 120 and training["seed"] == 42
    assert config["model"]["name"] == "tiny-net"  # no rule: carried over unchanged
    assert config["data"]["hf_token"] == "***REDACTED***"


def test_mappings_point_to_the_new_checkpoint_files(migrated: dict, example_tree: Path) -> None:
    for name in (HF_RUN, OLD_RUN, MIXED_RUN):
        layout = RunLayout(migrated["out"] / name)
        mapping = json.loads(layout.checkpoint_mapping_json.read_text())
        assert mapping, name
        for key, entry in mapping.items():
            assert key == Path(entry["path"]).stem and (layout.run_dir / entry["path"]).is_file()
            assert RunLayout.checkpoint_step(entry["path"]) == entry["step"]
        names = {n for ns in json.loads(layout.line_checkpoint_mapping_json.read_text()).values() for n in ns}
        assert names == set(mapping)
    # new-format legacy mapping: the lines are carried; old format: rebuilt from batch tracking
    legacy = json.loads((run_dir(example_tree, 0) / "logs" / "checkpoint_mapping_arc-challenge.json").read_text())
    new = json.loads(RunLayout(migrated["out"] / HF_RUN).checkpoint_mapping_json.read_text())
    assert new["checkpoint-step-060"]["lines"] == legacy["checkpoint-60"]["lines"]
    old_tracking = [obj for _, obj in iter_jsonl(RunLayout(migrated["out"] / OLD_RUN).batch_tracking_jsonl)]
    expected = sorted({i for obj in old_tracking if obj["step"] <= 30 for i in obj["line_indices"]})
    rebuilt = json.loads(RunLayout(migrated["out"] / OLD_RUN).checkpoint_mapping_json.read_text())
    assert rebuilt["checkpoint-step-030"]["lines"] == expected


def test_final_model_is_hard_linked_on_the_same_filesystem(migrated: dict, example_tree: Path) -> None:
    new = migrated["out"] / HF_RUN / "final_model" / "model.safetensors"
    old = run_dir(example_tree, 0) / "models" / "model.safetensors"
    assert os.stat(new).st_ino == os.stat(old).st_ino


def test_final_model_is_copied_across_filesystems(example_tree: Path, tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs a second filesystem (/dev/shm) to show the copy fallback")
    out = shm / f"lt-migrate-test-{os.getpid()}"
    try:
        code = main([str(run_dir(example_tree, 0)), "--out", str(out), "--no-tensorboard"])
        assert code == 0
        new = out / HF_RUN / "final_model" / "model.safetensors"
        old = run_dir(example_tree, 0) / "models" / "model.safetensors"
        assert new.read_bytes() == old.read_bytes() and os.stat(new).st_ino != os.stat(old).st_ino
    finally:
        import shutil

        shutil.rmtree(out, ignore_errors=True)


def test_meta_and_summary_record_provenance(migrated: dict, example_tree: Path) -> None:
    meta = json.loads((migrated["out"] / MIXED_RUN / "meta.json").read_text())
    origin = meta["migrated_from"]
    assert origin["source"] == str(run_dir(example_tree, 2)) and origin["project"] == "icoding"
    assert origin["legacy_timestamp"] == "20250720_150452"
    assert any("checkpoint_epoch_2.pth: step 120 already converted" in s for s in meta["skipped"])
    summary = json.loads((migrated["out"] / MIXED_RUN / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["last_step"] == 120 and summary["migrated"] is True
    assert summary["start_time"].startswith("2025-07-20T15:04:52")
    assert summary["start_time"] == iso_time(datetime(2025, 7, 20, 15, 4, 52).timestamp())
    assert summary["run_name"] == MIXED_RUN
    assert MIXED_RUN in (migrated["out"] / MIXED_RUN / "report_draft.md").read_text().splitlines()[0]


def test_rerun_skips_force_redoes_dry_run_writes_nothing(example_tree: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "runs"
    source = run_dir(example_tree, 1)
    assert main([str(source), "--out", str(out), "--dry-run"]) == 0
    assert not out.exists()
    assert "gsm8k_full_ft_20250720_144752" in capsys.readouterr().out
    assert main([str(source), "--out", str(out), "--no-tensorboard"]) == 0
    target = out / OLD_RUN
    stamp = (target / "meta.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main([str(source), "--out", str(out)]) == 0
    assert "already migrated" in capsys.readouterr().out
    assert (target / "meta.json").stat().st_mtime_ns == stamp
    (target / "metrics.csv").unlink()
    assert main([str(source), "--out", str(out), "--force", "--no-tensorboard"]) == 0
    assert (target / "metrics.csv").exists() and (target / "meta.json").stat().st_mtime_ns != stamp
    assert sorted(p.name for p in out.iterdir()) == [OLD_RUN]


def test_only_glob_selects_runs(example_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    assert main([str(example_tree), "--out", str(out), "--only", "*qlora*", "--no-tensorboard"]) == 0
    assert [p.name for p in out.iterdir()] == [MIXED_RUN]


@pytest.mark.parametrize("level", ["project", "dataset"])
def test_source_may_be_any_level(example_tree: Path, tmp_path: Path, level: str) -> None:
    source = example_tree / "icoding" if level == "project" else example_tree / "icoding" / "arc-challenge"
    out = tmp_path / "runs"
    assert main([str(source), "--out", str(out), "--dry-run", "--report", str(tmp_path / "r.json")]) == 0
    planned = {Path(r["target"]).name for r in json.loads((tmp_path / "r.json").read_text())["runs"]}
    assert planned == {HF_RUN, MIXED_RUN}


def test_example_generator_cli(tmp_path: Path) -> None:
    assert main(["--make-example", str(tmp_path / "ex")]) == 0
    assert len(list((tmp_path / "ex").glob("*/*/*/logs"))) == 3
    assert tree_hashes(tmp_path / "ex")


def test_rules_file_is_shipped_in_the_package_and_user_rules_extend_it(tmp_path: Path) -> None:
    from lightning_track.migrate import apply_config_rules, load_rules

    repo = Path(__file__).resolve().parents[2]
    shipped = repo / "lightning_track" / "resources" / "migrate_rules.yaml"
    assert (repo / "configs" / "migrate_rules.yaml").read_text() == shipped.read_text()
    custom = tmp_path / "rules.yaml"
    custom.write_text("config:\n  - {from: model.name, to: model_name}\n")
    config, applied = apply_config_rules({"model": {"name": "x", "hidden": 3}, "other": 1}, load_rules(custom))
    assert config == {"model_name": "x", "model": {"hidden": 3}, "other": 1} and applied == ["model.name -> model_name"]
    custom.write_text("config:\n  - {from: a}\n")
    with pytest.raises(ValueError, match=r"rules.yaml: config\[0\] must be"):
        load_rules(custom)


def test_legacy_text_files_are_carried_with_their_secrets_out(legacy_copy: Path, tmp_path: Path) -> None:
    """Every text file lt-migrate copies into a run is redacted by the secret rule: YAML/JSON by key (the YAML
    as written, comments kept), a log by the values the legacy config knows as secrets; the source untouched."""
    legacy = run_dir(legacy_copy, 0)
    config = legacy / "training_config.yaml"
    config.write_text("# the run's settings\n" + config.read_text() + "  tokenizer_name: gpt2  # kept\n")
    with (legacy / "logs" / "train.log").open("a") as log:
        log.write("login with hf_dummy_secret_value ok\nfetch https://ada:pw-in-url-1@data.example/d.json\n")
    (legacy / "models" / "generation_config.json").write_text(
        json.dumps({"max_new_tokens": 64, "pad_token_id": 0, "hub_token": "hf_modelsecret02"}))
    before = tree_hashes(legacy_copy)
    out = tmp_path / "runs"
    assert main([str(legacy), "--out", str(out), "--jobs", "1"]) == 0
    run = out / HF_RUN
    carried = (run / "legacy" / "training_config.yaml").read_text()
    assert carried.startswith("# the run's settings\n") and "hf_token: '***REDACTED***'\n" in carried
    assert yaml.safe_load(carried)["data"] == {"max_length": 512, "hf_token": "***REDACTED***",
                                               "tokenizer_name": "gpt2"}
    log = (run / "legacy" / "train.log").read_text()
    assert "login with ***REDACTED*** ok\nfetch https://***@data.example/d.json\n" in log
    assert json.loads((run / "final_model" / "generation_config.json").read_text()) == {
        "max_new_tokens": 64, "pad_token_id": 0, "hub_token": "***REDACTED***"}
    secrets = (b"hf_dummy_secret_value", b"pw-in-url-1", b"hf_modelsecret02")
    assert [p for p in run.rglob("*") if p.is_file() and any(s in p.read_bytes() for s in secrets)] == []
    assert tree_hashes(legacy_copy) == before  # the source keeps its files, secrets and all
    assert os.stat(run / "final_model" / "config.json").st_nlink > 1  # files without a secret are still linked
