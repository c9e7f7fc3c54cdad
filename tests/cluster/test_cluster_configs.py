"""configs/*.yaml match the code (keys and defaults), and from_config builds a working run from them."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import lightning as L
import pytest
from omegaconf import OmegaConf
from support.cluster import CONFIGS

import lightning_track
from lightning_track import RunLayout, RunLogger, read_metrics
from lightning_track.errors import ConfigError
from lightning_track.run.config import load_config
from lightning_track.training.configure import (
    CALLBACKS,
    ENABLED,
    build_callbacks,
    trainer_kwargs,
)
from lightning_track.training.demo import DemoDataModule, DemoModule

MISSING = "???"


def _class(spec: str) -> type:
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _params(cls: type) -> dict[str, inspect.Parameter]:
    return {k: p for k, p in inspect.signature(cls.__init__).parameters.items() if k != "self"}


def _same(yaml_value: object, default: object) -> bool:
    if isinstance(default, tuple):
        default = list(default)
    return yaml_value == default


def test_default_yaml_lists_every_knob_with_its_real_default() -> None:
    cfg = OmegaConf.to_container(OmegaConf.load(CONFIGS / "default.yaml"), resolve=False)
    sections = {"logger": RunLogger, **{f"callbacks.{n}": _class(s) for n, s in CALLBACKS.items()}}
    assert sorted(cfg["callbacks"]) == sorted(CALLBACKS)  # every callback has a section
    for where, cls in sections.items():
        section = cfg["logger"] if where == "logger" else cfg["callbacks"][where.split(".")[1]]
        params = _params(cls)
        expected = set(params) - {"config"}  # from_config passes the whole config as RunLogger(config=)
        assert set(section) - {ENABLED} == expected, f"{where} keys differ from {cls.__name__}'s parameters"
        for key, value in section.items():
            if key == ENABLED:
                continue
            default = params[key].default
            if default is inspect.Parameter.empty:
                assert value == MISSING, f"{where}.{key} is required and must be ???"
            else:
                assert _same(value, default), f"{where}.{key}: yaml says {value!r}, {cls.__name__} says {default!r}"


@pytest.mark.parametrize("name", ["demo.yaml", "remote_gpu.yaml"])
def test_other_configs_only_use_existing_keys(name: str) -> None:
    cfg = load_config(CONFIGS / name, ["logger.dataset=d", "logger.method=m"])
    plain = OmegaConf.to_container(cfg, resolve=True)
    logger_params = _params(RunLogger)
    assert set(plain["logger"]) <= set(logger_params), set(plain["logger"]) - set(logger_params)
    for cb_name, args in (plain.get("callbacks") or {}).items():
        assert cb_name in CALLBACKS
        if isinstance(args, dict):
            assert set(args) - {ENABLED} <= set(_params(_class(CALLBACKS[cb_name]))), cb_name
    assert set(plain["trainer"]) <= set(_params(L.Trainer))
    if name == "demo.yaml":
        assert set(plain["model"]) <= set(_params(DemoModule)) and set(plain["data"]) <= set(_params(DemoDataModule))
    assert trainer_kwargs(cfg)["precision" if "precision" in plain["trainer"] else "max_steps"] is not None
    build_callbacks(cfg.callbacks)  # every callback section constructs


def test_packaged_demo_config_is_the_repo_one() -> None:
    from lightning_track.training.demo import DEMO_CONFIG

    assert Path(DEMO_CONFIG).read_text() == (CONFIGS / "demo.yaml").read_text()


def test_migrate_rules_load_with_their_own_loader() -> None:
    rules_mod = pytest.importorskip("lightning_track.migrate.rules")
    rules = rules_mod.load_rules(CONFIGS / "migrate_rules.yaml")
    assert rules is not None


def test_remote_gpu_yaml_holds_the_seed_checkpoint_policy() -> None:
    cfg = load_config(CONFIGS / "remote_gpu.yaml", ["logger.dataset=d", "logger.method=m"])
    (ckpt,) = [c for c in build_callbacks(cfg.callbacks) if type(c).__name__ == "StepCheckpoint"]
    saved = [s for s in range(1, cfg.trainer.max_steps + 1) if ckpt.is_due(s)]
    assert saved == list(range(76, 126))
    kwargs = trainer_kwargs(cfg)
    assert kwargs["strategy"] == "ddp" and kwargs["precision"] == "32-true"  # "auto" resolved; no GPU here


def test_from_config_builds_a_run_that_trains(tmp_path: Path) -> None:
    cfg = OmegaConf.create({
        "logger": {"dataset": "blobs", "method": "cfg", "root": str(tmp_path), "sinks": ["tensorboard"]},
        "callbacks": {"step_checkpoint": {"every_n_steps": 4, "start_step": 4}, "health_guard": {"enabled": False},
                      "final_model": False, "preemption": {},
                      "lr": {"class_path": "lightning.pytorch.callbacks.LearningRateMonitor",
                             "init_args": {"logging_interval": "step"}}},
        "trainer": {"max_steps": 8, "accelerator": "cpu", "precision": "auto", "log_every_n_steps": 1,
                    "enable_progress_bar": False, "enable_model_summary": False, "limit_val_batches": 0,
                    "num_sanity_val_steps": 0},
        "model": {"lr": 0.02, "api_key": "s3cret"},
    })
    logger, callbacks = lightning_track.from_config(cfg)
    assert [type(c).__name__ for c in callbacks] == ["StepCheckpoint", "PreemptionHandler", "LearningRateMonitor"]
    trainer = L.Trainer(logger=logger, callbacks=callbacks, **trainer_kwargs(cfg))
    trainer.fit(DemoModule(lr=0.02, max_steps=8), datamodule=DemoDataModule(n_train=256, n_val=32))
    (run,) = RunLayout.list_runs(tmp_path)
    assert [s for s, _ in run.step_checkpoints()] == [4, 8]
    written = OmegaConf.load(run.config_yaml)
    assert written.trainer.max_steps == 8 and written.callbacks.step_checkpoint.start_step == 4
    assert written.model.api_key == "***REDACTED***"  # the whole config is recorded, secrets redacted
    assert "lr-AdamW" in {k for r in read_metrics(run.metrics_jsonl) for k in r.metrics}
    assert json.loads(run.summary_json.read_text())["status"] == "completed"


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"callbacks": {}}, "logger: the config has no 'logger' section"),
        ({"logger": {"method": "m"}}, "logger.dataset: required"),
        ({"logger": {"dataset": "???", "method": "m"}}, "logger.dataset: Missing mandatory value"),
        ({"logger": {"dataset": "d", "method": "m", "sink": []}}, "logger.sink: not a parameter of RunLogger"),
        ({"logger": {"dataset": "d", "method": "m"}, "callbacks": {"step_checkpoint": {"every_n_step": 2}}},
         "callbacks.step_checkpoint.every_n_step: not a parameter of StepCheckpoint"),
        ({"logger": {"dataset": "d", "method": "m"}, "callbacks": {"step_checkpoint": {"every_n_steps": 0}}},
         "callbacks.step_checkpoint: StepCheckpoint: every_n_steps must be an integer >= 1"),
        ({"logger": {"dataset": "d", "method": "m"}, "callbacks": {"nope": {}}}, "callbacks.nope: unknown callback"),
        ({"logger": {"dataset": "d", "method": "m"}, "callbacks": {"preemption": {"enabled": "yes"}}},
         "callbacks.preemption.enabled: must be true or false"),
        ({"logger": {"dataset": "d", "method": "m"}, "callbacks": {"x": {"class_path": "no.such.Thing"}}},
         "callbacks.x.class_path: cannot import 'no.such.Thing'"),
        ({"logger": {"dataset": "d/", "method": "///"}}, "logger: method '///' is empty"),
    ],
)
def test_bad_config_gives_one_line_error_naming_the_key_and_writes_nothing(tmp_path: Path, cfg: dict,
                                                                           message: str) -> None:
    if "logger" in cfg:
        cfg["logger"]["root"] = str(tmp_path / "runs")
    with pytest.raises(ConfigError) as raised:
        lightning_track.from_config(cfg)
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert not (tmp_path / "runs").exists()


def test_bad_trainer_key_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"trainer.max_step: not a parameter of Trainer"):
        trainer_kwargs({"trainer": {"max_step": 3}})
    with pytest.raises(ConfigError, match=r"nope.yaml: no such config file"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("logger: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not a valid YAML config"):
        load_config(bad)
