"""What the machine offers: precision choice, dataloader settings, a device summary for meta.json."""

from __future__ import annotations

import os
from typing import Any

import torch

__all__ = ["auto_precision", "precision_for", "dataloader_kwargs", "device_summary"]


def precision_for(accelerator: str, capability: tuple[int, int] | None = None) -> str:
    """The Lightning ``precision`` string for an accelerator kind and CUDA compute capability.

    bf16 needs Ampere (capability 8.0) or newer; older CUDA cards get fp16 mixed precision with a
    loss scaler; CPUs stay in full precision, where bf16 autocast is usually slower.
    """
    if accelerator == "cuda":
        if capability is not None and capability[0] >= 8:
            return "bf16-mixed"
        return "16-mixed"
    if accelerator == "mps":
        return "bf16-mixed"
    return "32-true"


def auto_precision() -> str:
    """``"bf16-mixed"`` on CUDA >= 8.0 and MPS, ``"16-mixed"`` on older CUDA, ``"32-true"`` on CPU."""
    if torch.cuda.is_available():
        return precision_for("cuda", torch.cuda.get_device_capability(0))
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return precision_for("mps")
    return precision_for("cpu")


def dataloader_kwargs(cuda: bool | None = None) -> dict[str, Any]:
    """``pin_memory`` only where it helps (CUDA); ``num_workers = min(4, cpu count)``."""
    if cuda is None:
        cuda = torch.cuda.is_available()
    workers = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
    return {"pin_memory": bool(cuda), "num_workers": workers, "persistent_workers": workers > 0}


def device_summary() -> dict[str, Any]:
    """CUDA devices (name, capability, memory) when present, plus the precision we would pick."""
    summary: dict[str, Any] = {"cuda_available": torch.cuda.is_available(), "cuda_devices": []}
    if torch.cuda.is_available():
        summary["cuda_version"] = torch.version.cuda
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            summary["cuda_devices"].append(
                {
                    "index": index,
                    "name": props.name,
                    "capability": f"{props.major}.{props.minor}",
                    "memory_gb": round(props.total_memory / 2**30, 2),
                }
            )
    summary["auto_precision"] = auto_precision()
    return summary
