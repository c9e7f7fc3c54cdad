"""``meta.json``: where and how a run was started, so a result can be traced back to its origin."""

from __future__ import annotations

import getpass
import json
import os
import platform
import socket
import sys
from importlib import metadata
from typing import Any

from ..folder.checkpoint_index import EVALUATED
from ..redaction import redact_argv
from ..vocabulary import ENV_EVALUATES, SLURM_ENV, SLURM_JOB_ID, iso_time
from .environment import name_and_version

__all__ = ["collect_meta", "package_versions", "slurm_info", "expand_nodelist", "evaluated_checkpoints"]

_LAUNCHER_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK", "GROUP_RANK",
                  "MASTER_ADDR", "MASTER_PORT", "CUDA_VISIBLE_DEVICES")
_SLURM_KEEP = ("SLURM_JOB_ID", "SLURM_JOB_NAME", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_PROCID",
               "SLURM_LOCALID", "SLURM_NODEID", "SLURM_NNODES", "SLURM_NTASKS", "SLURM_JOB_NODELIST",
               "SLURM_JOB_PARTITION", "SLURM_RESTART_COUNT", "SLURM_SUBMIT_DIR")


def package_versions(names: tuple[str, ...] = ("torch", "lightning", "swanlab", "tensorboard",
                                               "lightning-track")) -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:  # the metadata's headers only (on the training thread at the start of fit): not metadata.version's parse
            versions[name] = name_and_version(metadata.distribution(name))[1]
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def launcher_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    env = os.environ if environ is None else environ
    found = {k: env[k] for k in _LAUNCHER_VARS if k in env}
    found.update({k: v for k, v in env.items() if k.startswith("TORCHELASTIC_")})
    found.update({k: env[k] for k in _SLURM_KEEP if k in env})
    return found


def evaluated_checkpoints(environ: dict[str, str] | None = None) -> list[dict[str, Any]] | None:
    """The checkpoints of other runs a pipeline gave this run's command (``ENV_EVALUATES``, set by the
    driver for ``{step.best_ckpt}``): source run, path relative to it, step, SHA-256. A value that is not a
    JSON list of objects is kept as one problem entry rather than dropped silently."""
    raw = (os.environ if environ is None else environ).get(ENV_EVALUATES)
    if not raw:
        return None
    try:
        found = json.loads(raw)
    except ValueError as exc:
        found = exc
    if isinstance(found, list) and all(isinstance(r, dict) for r in found):
        return found
    return [{"problem": f"{ENV_EVALUATES} is not a JSON list of objects ({str(found)[:80]}); ignored"}]


def expand_nodelist(text: str) -> list[str]:
    """Slurm's compact host list (``gpu[01-03,07],cpu1``) as names, in order (``scontrol show hostnames``)."""
    names: list[str] = []
    depth, part, parts = 0, "", []
    for char in text:
        depth += (char == "[") - (char == "]")
        if char == "," and depth == 0:
            parts.append(part)
            part = ""
        else:
            part += char
    parts.append(part)
    for item in filter(None, (p.strip() for p in parts)):
        prefix, bracket, rest = item.partition("[")
        if not bracket:
            names.append(item)
            continue
        ranges, _, suffix = rest.partition("]")
        for piece in ranges.split(","):
            low, dash, high = piece.partition("-")
            if not dash:
                names.append(f"{prefix}{low}{suffix}")
                continue
            width = len(low) if low.startswith("0") else 0
            names += [f"{prefix}{n:0{width}d}{suffix}" for n in range(int(low), int(high) + 1)]
    return names


def slurm_info(environ: dict[str, str] | None = None) -> dict[str, Any] | None:
    """The Slurm job this process runs in (job id, array job and task, restart count, nodes, ...), or None
    outside Slurm. ``restart_count`` is 0 on the first run and counts requeues after it."""
    env = os.environ if environ is None else environ
    if not env.get(SLURM_JOB_ID):
        return None
    info: dict[str, Any] = {}
    for key, name in SLURM_ENV.items():
        value = env.get(name)
        if value is not None and value != "":
            info[key] = int(value) if value.isdigit() and key not in ("job_id", "array_job_id", "node_list") else value
    info.setdefault("restart_count", 0)
    if isinstance(info.get("node_list"), str):
        try:
            info["nodes"] = expand_nodelist(info["node_list"])  # node k of the run is nodes[k]
        except ValueError:
            pass  # a host list this parser does not know: node_list still says it
    return info


def collect_meta(dataset: str, method: str, run_name: str, **extra: Any) -> dict[str, Any]:
    from .hardware import device_summary  # imports torch: not needed by package_versions' users (lt-migrate)

    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = None
    meta: dict[str, Any] = {
        "dataset": dataset,
        "method": method,
        "run_name": run_name,
        "created": iso_time(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "user": user,
        "argv": redact_argv(list(sys.argv)),
        "cwd": os.getcwd(),
        # git (commit, branch, remote, dirty) and the code come from the capture beside training: run/capture.py
        "versions": package_versions(),
        "devices": device_summary(),
        "launcher": launcher_env(),
    }
    slurm = slurm_info()
    if slurm is not None:
        meta["slurm"] = slurm
    evaluated = evaluated_checkpoints()
    if evaluated:
        meta[EVALUATED] = evaluated
    meta.update(extra)
    return meta
