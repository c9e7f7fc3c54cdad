"""A realistic legacy ``experiments/`` tree, for a first try of ``lt-migrate``, tests and the benchmark.

Three flavours of run are cycled, as the older scripts wrote them over time:

0. HF Trainer run: ``checkpoint-<step>/`` folders (safetensors, optimizer, scheduler, trainer_state),
   current tracking field names, new mapping format, full final model, nested training_config.yaml.
1. Older script: plain ``step_<n>.pt`` torch.save dicts with optimizer state, old field names
   (``global_step``, ``indices``, ``lr``, ``time``), old mapping format, killed mid-line (partial
   last line), a project name with underscores.
2. Mixed: HF folders without optimizer state plus ``checkpoint_epoch_<n>.pth`` bare state dicts,
   a LoRA-style adapter final model, no training_config.yaml.
"""

from __future__ import annotations

import json
import math
import os
import random
from datetime import datetime, timedelta
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from ..errors import SourceError

__all__ = ["TinyNet", "make_example", "EXAMPLE_RUNS"]

EXAMPLE_RUNS = (
    ("icoding", "arc-challenge", "lora"),
    ("my_proj", "gsm8k", "full_ft"),
    ("icoding", "arc-challenge", "qlora"),
)
BATCH = 4
IN_DIM = 32


class TinyNet(nn.Module):
    """The model the example runs trained: ``layers.0`` / ``layers.2`` linear layers."""

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(IN_DIM, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def hidden_for(ckpt_mb: float) -> int:
    """Hidden width whose float32 weights take about ``ckpt_mb`` megabytes."""
    return max(2, int(ckpt_mb * 1e6 / 4 / (IN_DIM + 2)))


def _legacy_config(steps: int, hidden: int, method: str) -> str:
    stage1 = max(1, steps * 3 // 5)
    return (
        f"model:\n  name: tiny-net\n  hidden: {hidden}\n  method: {method}\n"
        f"training:\n  per_device_train_batch_size: {BATCH}\n  max_steps: {steps}\n"
        "  gradient_accumulation_steps: 1\n  seed: 42\n"
        f"  stage1:\n    steps: {stage1}\n    learning_rate: 1.0e-4\n"
        f"  stage2:\n    steps: {steps - stage1}\n    learning_rate: 2.0e-5\n"
        "data:\n  max_length: 512\n  hf_token: hf_dummy_secret_value\n"
    )


def _optimizer_state(model: nn.Module, lr: float) -> dict:
    """A real AdamW state after one step (what HF / the old scripts saved)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    opt.step()
    opt.zero_grad(set_to_none=True)
    return opt.state_dict()


def make_example(
    dest: str | os.PathLike[str],
    *,
    runs: int = 3,
    steps: int = 120,
    checkpoints: int = 4,
    ckpt_mb: float = 0.05,
    seed: int = 0,
    logging_steps: int = 10,
    eval_steps: int = 50,
) -> list[Path]:
    """Write ``runs`` legacy runs under ``dest`` (= an ``experiments/`` folder); returns their folders."""
    root = Path(dest)
    if root.exists() and not root.is_dir():
        raise SourceError(f"{root}: not a folder; give a new or existing folder for the example tree")
    rng = random.Random(seed)
    torch.manual_seed(seed)
    hidden = hidden_for(ckpt_mb)
    made = []
    for i in range(runs):
        project, dataset, method = EXAMPLE_RUNS[i % len(EXAMPLE_RUNS)]
        started = datetime(2025, 7, 20, 14, 30, 52) + timedelta(days=i // 3, minutes=17 * i)
        run = root / project / dataset / f"{project}_{started:%Y%m%d_%H%M%S}_{method}"
        made.append(run)
        _make_run(run, i % 3, dataset, method, started, steps, checkpoints, hidden, rng, logging_steps, eval_steps)
    return made


def _make_run(run: Path, flavour: int, dataset: str, method: str, started: datetime, steps: int, n_ckpt: int,
              hidden: int, rng: random.Random, logging_steps: int, eval_steps: int) -> None:
    logs, ckdir, models = run / "logs", run / "checkpoints", run / "models"
    for folder in (logs, ckdir, models):
        folder.mkdir(parents=True, exist_ok=True)
    if flavour != 2:
        (run / "training_config.yaml").write_text(_legacy_config(steps, hidden, method), encoding="utf-8")
    steps_per_epoch = max(1, math.ceil(steps / 3))
    n_lines = steps_per_epoch * BATCH
    save_every = max(1, steps // max(1, n_ckpt))
    ckpt_steps = [s for s in range(save_every, steps + 1, save_every)][:n_ckpt]
    model = TinyNet(hidden)
    history: list[dict] = []
    seen: set[int] = set()
    mapping: dict = {}
    line_mapping: dict[str, list[str]] = {}
    order = list(range(n_lines))
    track_lines: list[str] = []
    t0 = started.timestamp() + 5.0
    loss = 2.5
    for step in range(1, steps + 1):
        epoch, batch_idx = (step - 1) // steps_per_epoch, (step - 1) % steps_per_epoch
        if batch_idx == 0:
            rng.shuffle(order)
        lines = order[batch_idx * BATCH:(batch_idx + 1) * BATCH]
        seen.update(lines)
        loss = max(0.05, loss * 0.985 + rng.uniform(-0.02, 0.02))
        lr = 1e-4 if step <= steps * 3 // 5 else 2e-5
        when = t0 + step * 0.5
        if flavour == 1:  # older tracker: other field names, unix time
            rec = {"global_step": step, "epoch": epoch, "batch_idx": batch_idx, "indices": lines,
                   "loss": round(loss, 6), "lr": lr, "time": round(when, 6)}
        else:
            rec = {"step": step, "epoch": epoch, "batch_idx": batch_idx, "stage": 1 if lr == 1e-4 else 2,
                   "line_indices": lines, "loss": round(loss, 6), "learning_rate": lr,
                   "timestamp": datetime.fromtimestamp(when).isoformat(timespec="microseconds")}
        track_lines.append(json.dumps(rec) + "\n")
        if step % logging_steps == 0:
            history.append({"epoch": round(step / steps_per_epoch, 4), "grad_norm": round(rng.uniform(0.1, 2), 4),
                            "learning_rate": lr, "loss": round(loss, 4), "step": step})
        if step % eval_steps == 0:
            history.append({"epoch": round(step / steps_per_epoch, 4), "eval_loss": round(loss * 1.1, 4),
                            "eval_runtime": 1.5, "step": step})
        if flavour == 2 and (batch_idx == steps_per_epoch - 1 or step == steps):  # end of an epoch
            path = f"checkpoints/checkpoint_epoch_{epoch}.pth"
            torch.save(model.state_dict(), run / path)  # a bare state_dict, no step inside
            mapping[f"checkpoint_epoch_{epoch}"] = {"step": step, "path": path, "lines": sorted(seen)}
            for line in sorted(seen):
                line_mapping.setdefault(str(line), []).append(f"checkpoint_epoch_{epoch}")
        if step in ckpt_steps:
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn_like(p) * 0.01)
            name = f"checkpoint-{step}"
            if flavour == 1:
                path = f"checkpoints/step_{step}.pt"
                torch.save({"model_state_dict": model.state_dict(), "optimizer_state_dict":
                            _optimizer_state(model, lr), "step": step, "epoch": epoch}, run / path)
                mapping[str(step)] = path
            else:
                folder = ckdir / name
                folder.mkdir()
                save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
                if flavour == 0:
                    torch.save(_optimizer_state(model, lr), folder / "optimizer.pt")
                    sched = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD(model.parameters(), lr=lr),
                                                              lambda s: 1.0)
                    torch.save(sched.state_dict(), folder / "scheduler.pt")
                    torch.save({"python": rng.getstate()[1][:4]}, folder / "rng_state.pth")
                state = {"global_step": step, "epoch": round(step / steps_per_epoch, 4), "max_steps": steps,
                         "logging_steps": logging_steps, "log_history": history}
                (folder / "trainer_state.json").write_text(json.dumps(state, indent=2), encoding="utf-8")
                path = f"checkpoints/{name}"
                mapping[name] = {"step": step, "path": path, "lines": sorted(seen)}
                for line in sorted(seen):
                    line_mapping.setdefault(str(line), []).append(name)
    with open(logs / f"batch_tracking_{dataset}.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(track_lines)
        if flavour == 1:  # killed while writing the next line
            handle.write(f'{{"global_step": {steps + 1}, "epoch": 2, "indi')
    (logs / f"checkpoint_mapping_{dataset}.json").write_text(json.dumps(mapping), encoding="utf-8")
    if flavour != 1:
        (logs / f"line_checkpoint_mapping_{dataset}.json").write_text(json.dumps(line_mapping), encoding="utf-8")
    (logs / "train.log").write_text(f"[{started:%Y-%m-%d %H:%M:%S}] training {method} on {dataset}\n",
                                    encoding="utf-8")
    # final model
    if flavour == 2:
        save_file({f"base_model.model.{k}.lora_A.weight": torch.randn(2, v.shape[-1])
                   for k, v in model.state_dict().items() if k.endswith("weight")},
                  models / "adapter_model.safetensors")
        (models / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}), encoding="utf-8")
    else:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, models / "model.safetensors")
    (models / "config.json").write_text(json.dumps({"model_type": "tiny-net", "hidden": hidden,
                                                    "in_dim": IN_DIM}), encoding="utf-8")
    (models / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 512}), encoding="utf-8")
