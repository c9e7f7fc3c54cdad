"""``lt-demo``: train a small real model on synthetic data and write a complete run folder."""

from __future__ import annotations

import argparse
import logging
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..derived.plots import wait_for_plots
from ..errors import ConfigError
from ..folder.layout import RunLayout
from ..vocabulary import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from ._errors import reports

__all__ = ["main", "run_demo"]


def run_demo(config_path: str | None = None, overrides: list[str] | None = None, quiet: bool = False) -> Path:
    """Train the demo model with RunLogger (and every callback available); return the run folder.

    A config that cannot be used raises :class:`~lightning_track.errors.ConfigError` before anything
    is created."""
    import lightning as L
    from omegaconf import OmegaConf

    from ..training.configure import build_logger, check_section, trainer_kwargs
    from ..training.demo import DemoDataModule, DemoModule, load_demo_config

    cfg = load_demo_config(config_path, overrides)
    plain = OmegaConf.to_container(cfg, resolve=True)
    # Everything that can be wrong in the config (keys, value types) is checked before the run
    # folder exists: a bad value leaves nothing behind.
    trainer_options = trainer_kwargs(cfg)
    check_section(DemoModule, plain.get("model") or {}, "model")
    check_section(DemoDataModule, plain.get("data") or {}, "data")
    callbacks = demo_callbacks(cfg)
    try:
        L.seed_everything(int(cfg.seed), verbose=False)
    except (TypeError, ValueError):
        raise ConfigError(f"seed: {cfg.seed!r} is not an int") from None
    data = DemoDataModule(**cfg.data)
    steps = trainer_options.get("max_steps") or -1
    if steps > 0 and trainer_options.get("max_epochs") is None:
        # Bounded by steps alone, Lightning's max_epochs is -1 and its bar reads "Epoch 2/-2": give it the
        # epochs those steps take (the steps still end the run).
        batches = math.ceil(data.hparams.n_train / data.hparams.batch_size)
        per_epoch = math.ceil(batches / trainer_options.get("accumulate_grad_batches", 1))
        trainer_options["max_epochs"] = math.ceil(steps / per_epoch)
    logger = build_logger(cfg.logger, config=plain)
    with _lightning_hints_off():
        trainer = L.Trainer(
            logger=logger,
            callbacks=callbacks,
            enable_progress_bar=not quiet,
            enable_model_summary=False,
            **trainer_options,
        )
        trainer.fit(DemoModule(**cfg.model), datamodule=data)
    return logger.run_dir


# What Lightning says to every run that a demo's reader cannot act on: the demo is not started by srun
# (on a machine with Slurm), a cloud product's tips, a deprecation between Lightning and torch.
_HINTS = (r"The `srun` command is available on your system but is not used", r"`isinstance\(treespec, LeafSpec\)`")
_TIP = "💡 Tip:"


class _NoTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_TIP)


@contextmanager
def _lightning_hints_off() -> Iterator[None]:
    """Lightning's hints above left out of the demo's screen, only while it trains, only these."""
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    tips = _NoTips()
    rank_zero.addFilter(tips)
    try:
        with warnings.catch_warnings():
            for pattern in _HINTS:
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        rank_zero.removeFilter(tips)


def demo_callbacks(cfg) -> list:  # noqa: ANN001 - an OmegaConf node
    """The project's callbacks, configured from ``cfg.callbacks`` (each may be switched off)."""
    from ..training.configure import build_callbacks

    return build_callbacks(cfg.get("callbacks"))


# bad input (a config key or value) is usage, nothing created; a value training itself refuses is a failure
@reports("lt-demo: error", rules=((ConfigError, EXIT_USAGE), (ValueError, EXIT_FAILURE)))
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lt-demo",
        description="Train a small model on synthetic data with lightning_track and print where the run is.",
    )
    parser.add_argument("--config", help="YAML config (default: the packaged configs/demo.yaml)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. trainer.max_steps=50")
    args = parser.parse_args(argv)
    for item in args.overrides:
        if "=" not in item:
            parser.error(f"override {item!r} is not KEY=VALUE")
    run_dir = run_demo(args.config, args.overrides, quiet=args.quiet)
    wait_for_plots(run_dir)  # drawn after fit returns; the listing below shows the whole folder
    print(f"\nRun folder: {run_dir}")
    for name in sorted(p.name + ("/" if p.is_dir() else "") for p in run_dir.iterdir()):
        print(f"  {name}")
    print("\nLook at it:")
    print(f"  lt show {run_dir}     # status, config, metrics, checkpoints, console tail")
    print(f"  lt ls {run_dir.parent}     # every run, one line each; lt report RUN ... -o report.html")
    print(f"  tensorboard --logdir {run_dir.parent}")
    print(f"  cat {RunLayout(run_dir).summary_json}")
    print(f"  lt board {run_dir.parent}     # SwanLab's board on http://127.0.0.1:5092 (swanlab[dashboard])")
    swanlab_dir = RunLayout(run_dir).swanlab_dir
    if swanlab_dir.is_dir():  # the opt-in swanlab sink wrote a SwanLab run
        print(f"  swanlab sync {swanlab_dir}/run-*     # upload the SwanLab run later")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
