"""``environment.json``: what was installed and set where a run trained, so a later run (``lt reproduce``)
can say what differs. Read by :class:`~lightning_track.run.capture.CodeCapture` on its thread.

Every installed distribution and version (editable installs with their path and commit), Python,
platform, torch with its CUDA, cuDNN and NCCL versions, the GPU driver and GPUs (NVML, when present), the
environment variables that change training (secret names redacted by :mod:`lightning_track.redaction`),
and the seed Lightning was given.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from ..errors import one_line
from ..redaction import redact_env

__all__ = ["capture_environment", "training_env", "ENV_PREFIXES", "SEED_ENV"]

ENV_PREFIXES = ("CUDA_", "NCCL_", "OMP_", "SLURM_", "PL_", "HF_", "TORCH_")
SEED_ENV = "PL_GLOBAL_SEED"  # set by Lightning's seed_everything


def training_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment variables that change training (``CUDA_*``, ``NCCL_*``, ...), secrets redacted."""
    env = os.environ if environ is None else environ
    return redact_env({key: value for key, value in sorted(env.items()) if key.startswith(ENV_PREFIXES)})


def _editable(dist: Any, git_timeout: float) -> dict[str, Any] | None:
    """Path (and commit, when it is a git checkout) of an editable install, from PEP 610's direct_url.json."""
    import json

    text = dist.read_text("direct_url.json")
    if not text:
        return None
    try:
        direct = json.loads(text)
    except ValueError:
        return None
    if not (direct.get("dir_info") or {}).get("editable"):
        return None
    url = str(direct.get("url", ""))
    path = url[len("file://"):] if url.startswith("file://") else url
    found: dict[str, Any] = {"path": path}
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True,
                             timeout=git_timeout, check=False)
        if out.returncode == 0:
            found["commit"] = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return found


def _torch_versions() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"torch": None}
    found: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda,
                             "cuda_available": bool(torch.cuda.is_available())}
    try:
        found["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except Exception:  # noqa: BLE001 - a broken CUDA install is recorded as unknown, never raised
        found["cudnn"] = None
    try:
        nccl = torch.cuda.nccl.version() if torch.cuda.is_available() else None
        found["nccl"] = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else nccl
    except Exception:  # noqa: BLE001
        found["nccl"] = None
    return found


def _gpus() -> dict[str, Any]:
    from .system import gpu_unavailable_reason

    nvml, why = gpu_unavailable_reason()
    if nvml is None:
        return {"gpus": [], "note": why}
    try:
        driver = nvml.nvmlSystemGetDriverVersion()
        gpus = []
        for i in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            name = nvml.nvmlDeviceGetName(handle)
            gpus.append({"index": i, "name": name.decode() if isinstance(name, bytes) else name,
                         "memory_bytes": int(nvml.nvmlDeviceGetMemoryInfo(handle).total)})
        return {"driver": driver.decode() if isinstance(driver, bytes) else driver, "gpus": gpus}
    except Exception as exc:  # noqa: BLE001 - NVML's own error types
        return {"gpus": [], "note": f"NVML: {one_line(exc)}"}


def name_and_version(dist: Any) -> tuple[str | None, str | None]:
    """A distribution's ``Name`` and ``Version`` from the head of its metadata file.

    Why not ``dist.metadata``: it parses the whole file (descriptions of hundreds of lines) with the email
    parser, twice with ``dist.version``; for every installed distribution that was ~0.07 s of the training
    process's GIL at the start of a run. Both fields come first in every metadata version; a file where
    they do not falls back to the parser."""
    text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    name = version = None
    for line in text.splitlines():
        if not line:
            break  # the end of the headers
        if name is None and line.startswith("Name:"):
            name = line[5:].strip()
        elif version is None and line.startswith("Version:"):
            version = line[8:].strip()
        if name and version:
            return name, version
    meta = dist.metadata
    return meta["Name"], meta["Version"]


def capture_environment(environ: Mapping[str, str] | None = None, git_timeout: float = 5.0) -> dict[str, Any]:
    """``environment.json``: what was installed and set where the run trained."""
    from importlib import metadata

    env = os.environ if environ is None else environ
    packages: dict[str, str] = {}
    editable: dict[str, Any] = {}
    for dist in metadata.distributions():
        name, version = name_and_version(dist)
        if not name or name in packages:
            continue  # the first on sys.path is the one imported
        packages[name] = version  # type: ignore[assignment]
        found = _editable(dist, git_timeout)
        if found is not None:
            editable[name] = found
    seed = env.get(SEED_ENV)
    return {
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "platform": {"system": platform.system(), "release": platform.release(), "machine": platform.machine(),
                     "platform": platform.platform()},
        "packages": dict(sorted(packages.items(), key=lambda kv: kv[0].lower())),
        "editable": editable,
        **_torch_versions(),
        **_gpus(),
        "env": training_env(env),
        "seed": int(seed) if seed and seed.lstrip("-").isdigit() else seed,
    }
