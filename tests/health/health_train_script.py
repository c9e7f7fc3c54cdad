"""A real training script for the health tests: ``python health_train_script.py`` (the toy model, broken on purpose)."""

from __future__ import annotations

import argparse

import lightning as L

from lightning_track.training.toy import ToyRegression, regression_data


def main() -> None:
    from lightning_track import HealthGuard, RunLogger

    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True)
    p.add_argument("--max-steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--nan-at", type=int)
    p.add_argument("--nan-rank", type=int)
    p.add_argument("--sleep-at", type=int)
    p.add_argument("--sleep-s", type=float, default=0.0)
    p.add_argument("--stall-timeout", type=lambda v: v if v == "auto" else float(v))
    p.add_argument("--stall-floor", type=float, help="HealthGuard's floor for --stall-timeout auto")
    p.add_argument("--run-stall-floor", type=float, default=300.0, help="RunLogger's stall_floor (what lt judges)")
    p.add_argument("--heartbeat", type=float, default=5.0)
    p.add_argument("--stall-grace", type=float, default=30.0)
    p.add_argument("--step-sleep", type=float, default=0.0)
    p.add_argument("--ddp", action="store_true")
    p.add_argument("--no-guard", action="store_true", help="a RunLogger and no HealthGuard")
    a = p.parse_args()
    ddp = {"strategy": "ddp", "devices": 2} if a.ddp else {"devices": 1}
    trainer = L.Trainer(
        max_steps=a.max_steps, accelerator="cpu", logger=RunLogger("toy", "script", root=a.root, sinks=(),
                                                                    heartbeat_interval=a.heartbeat,
                                                                    stall_floor=a.run_stall_floor),
        callbacks=[] if a.no_guard else [HealthGuard(warmup_steps=a.warmup, stall_timeout=a.stall_timeout,
                                                     stall_grace=a.stall_grace, stall_floor=a.stall_floor)],
        enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False, log_every_n_steps=1,
        **ddp,
    )
    trainer.fit(ToyRegression(nan_at=a.nan_at, nan_rank=a.nan_rank, sleep_at=a.sleep_at, sleep_s=a.sleep_s,
                          step_sleep=a.step_sleep), regression_data())


if __name__ == "__main__":
    main()
