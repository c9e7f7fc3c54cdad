"""Precision and dataloader decisions (capability faked where there is no GPU), Slurm/torchrun in meta.json."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from lightning_track import RunLogger
from lightning_track.run import hardware
from lightning_track.run.hardware import auto_precision, dataloader_kwargs, device_summary, precision_for


@pytest.mark.parametrize(
    ("accelerator", "capability", "expected"),
    [("cuda", (9, 0), "bf16-mixed"), ("cuda", (8, 0), "bf16-mixed"), ("cuda", (8, 6), "bf16-mixed"),
     ("cuda", (7, 5), "16-mixed"), ("cuda", (6, 1), "16-mixed"), ("cuda", None, "16-mixed"),
     ("mps", None, "bf16-mixed"), ("cpu", None, "32-true")],
)
def test_precision_for(accelerator: str, capability: tuple[int, int] | None, expected: str) -> None:
    assert precision_for(accelerator, capability) == expected


@pytest.mark.parametrize(("capability", "expected"), [((8, 0), "bf16-mixed"), ((7, 0), "16-mixed")])
def test_auto_precision_with_a_faked_cuda_device(monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int],
                                                 expected: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert auto_precision() == expected


def test_auto_precision_on_mps_and_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert auto_precision() == "bf16-mixed"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert auto_precision() == "32-true"


def test_dataloader_kwargs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    assert dataloader_kwargs(cuda=True) == {"pin_memory": True, "num_workers": 4, "persistent_workers": True}
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    assert dataloader_kwargs(cuda=False) == {"pin_memory": False, "num_workers": 2, "persistent_workers": True}
    assert dataloader_kwargs()["pin_memory"] is torch.cuda.is_available()


def test_device_summary_here() -> None:
    summary = device_summary()
    assert summary["cuda_available"] is torch.cuda.is_available()
    assert len(summary["cuda_devices"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert summary["auto_precision"] == auto_precision()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_device_summary_on_a_real_gpu() -> None:
    summary = device_summary()
    first = summary["cuda_devices"][0]
    major, minor = torch.cuda.get_device_capability(0)
    assert first["capability"] == f"{major}.{minor}" and first["memory_gb"] > 1
    assert summary["auto_precision"] == ("bf16-mixed" if major >= 8 else "16-mixed")


def test_meta_json_records_slurm_job_and_devices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "424242")
    monkeypatch.setenv("SLURM_JOB_NAME", "train-lora")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    logger = RunLogger("d", "m", root=tmp_path, sinks=())
    logger.finalize("success")
    meta = json.loads(logger.layout.meta_json.read_text())
    assert meta["launcher"]["SLURM_JOB_ID"] == "424242"
    assert meta["launcher"]["SLURM_JOB_NAME"] == "train-lora" and meta["launcher"]["SLURM_ARRAY_TASK_ID"] == "3"
    assert meta["devices"]["auto_precision"] == hardware.auto_precision()
