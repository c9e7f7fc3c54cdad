"""LightningCLI support: the CLI's full config goes into the run's ``config.yaml``.

Why: LightningCLI's ``SaveConfigCallback`` writes ``config.yaml`` into ``trainer.log_dir``, which is
the run folder when the logger is a :class:`RunLogger`. Two writers of one file collide: the
RunLogger rewrites ``config.yaml`` from its own config and the model's hyperparameters (the CLI's
trainer/data sections are lost), and the CLI refuses to start when the file exists (a resumed run,
or ``RunLogger(config=...)``). :class:`RunConfigCallback` hands the CLI config to the RunLogger
instead: one writer, merged, secrets redacted, written atomically, ``config_digest`` updated.

    from lightning.pytorch.cli import LightningCLI
    from lightning_track.training.lightning_cli import RunConfigCallback

    LightningCLI(MyModel, MyData, save_config_callback=RunConfigCallback)

With another logger (or none) it behaves exactly like Lightning's ``SaveConfigCallback``.
"""

from __future__ import annotations

from typing import Any

import yaml
from lightning.pytorch.cli import SaveConfigCallback
from typing_extensions import override

from ..callbacks.targets import find_run_logger

__all__ = ["RunConfigCallback", "cli_config_dict"]


def cli_config_dict(parser: Any, config: Any) -> dict[str, Any]:
    """The parsed CLI config as plain data, as ``parser.dump`` would write it (class_path/init_args)."""
    text = parser.dump(config, skip_none=False, skip_validation=True)
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ValueError(f"LightningCLI config dumps to {type(data).__name__}, expected a mapping")
    return data


class RunConfigCallback(SaveConfigCallback):
    """``SaveConfigCallback`` that records the CLI config through the RunLogger when there is one."""

    @override
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if find_run_logger(trainer) is None:
            super().setup(trainer, pl_module, stage)
            return
        # The RunLogger owns config.yaml: skip the file write (and its exists-check), keep the rest.
        to_log_dir, self.save_to_log_dir = self.save_to_log_dir, False
        try:
            super().setup(trainer, pl_module, stage)
        finally:
            self.save_to_log_dir = to_log_dir

    @override
    def save_config(self, trainer: Any, pl_module: Any, stage: str) -> None:
        logger = find_run_logger(trainer)
        if logger is None:
            return
        logger.log_hyperparams(cli_config_dict(self.parser, self.config))
