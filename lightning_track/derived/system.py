"""Peaks and means of a run's system samples, for ``summary.json`` (``system``) and ``report_draft.md``.

Read from ``system.jsonl`` (and ``system.node<k>.jsonl`` of other nodes) at every post-process, so the
numbers are always those of the files. Torch-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..folder.fileio import iter_jsonl
from ..folder.layout import RunLayout

__all__ = ["system_summary", "system_report_line"]

# What is worth a peak (memory: what ran out) and what is worth a mean (utilisation: what was idle).
_PEAK = ("proc_rss_gb", "memory_used_gb", "proc_memory_gb", "temperature_c", "power_w")
_MEAN = ("proc_cpu_percent", "cpu_percent", "utilization_percent", "power_w")


def _files(layout: RunLayout) -> list[Path]:
    return [p for p in [layout.system_jsonl, *layout.node_system_jsonls()] if p.is_file()]


def system_summary(run_dir: str | Path) -> dict[str, Any] | None:
    """``{"samples", "nodes", "peak": {...}, "mean": {...}, "gpu_memory_total_gb": {...}}``, or None
    without samples. Keys drop the ``system/`` prefix; another node's carry ``node<k>/``."""
    layout = RunLayout(run_dir)
    peaks: dict[str, float] = {}
    sums: dict[str, tuple[float, int]] = {}
    totals: dict[str, float] = {}
    samples, nodes = 0, set()
    for path in _files(layout):
        for _, line in iter_jsonl(path, problems=[]):
            metrics = line.get("metrics")
            if not isinstance(metrics, dict):
                continue
            samples += 1
            node = line.get("node", 0)
            nodes.add(node)
            prefix = f"node{node}/" if isinstance(node, int) and node > 0 else ""
            for key, value in metrics.items():
                if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
                    continue
                name = prefix + key.removeprefix("system/")
                last = name.rsplit("/", 1)[-1]
                if last == "memory_total_gb":
                    totals[name.rsplit("/", 1)[0]] = value
                if last in _PEAK:
                    peaks[name] = max(peaks.get(name, value), value)
                if last in _MEAN:
                    total, count = sums.get(name, (0.0, 0))
                    sums[name] = (total + value, count + 1)
    if not samples:
        return None
    out: dict[str, Any] = {"samples": samples, "nodes": len(nodes),
                           "peak": {k: round(v, 4) for k, v in sorted(peaks.items())},
                           "mean": {k: round(t / n, 2) for k, (t, n) in sorted(sums.items())}}
    if totals:
        out["gpu_memory_total_gb"] = {k: round(v, 3) for k, v in sorted(totals.items())}
    return out


def system_report_line(system: dict[str, Any] | None) -> str | None:
    """One line for the report: peak memory of the training processes, mean CPU, each GPU's mean
    utilisation and peak memory."""
    if not system:
        return None
    peak, mean = system.get("peak", {}), system.get("mean", {})
    parts = []
    if "proc_rss_gb" in peak:
        parts.append(f"peak RSS {peak['proc_rss_gb']:.2f} GB")
    if "proc_cpu_percent" in mean:
        parts.append(f"mean CPU {mean['proc_cpu_percent']:.0f} % of a core")
    gpus = sorted({k.rsplit("/", 1)[0] for k in [*peak, *mean] if "gpu" in k.rsplit("/", 1)[0]})
    totals = system.get("gpu_memory_total_gb", {})
    for gpu in gpus:
        text = gpu
        if f"{gpu}/utilization_percent" in mean:
            text += f" mean util {mean[f'{gpu}/utilization_percent']:.0f} %"
        if f"{gpu}/memory_used_gb" in peak:
            text += f", peak memory {peak[f'{gpu}/memory_used_gb']:.1f}"
            text += f"/{totals[gpu]:.0f} GB" if gpu in totals else " GB"
        parts.append(text)
    if not parts:
        return None
    where = f" ({system['nodes']} nodes)" if system.get("nodes", 1) > 1 else ""
    return f"System{where}: " + "; ".join(parts) + f" ({system['samples']} samples in system.jsonl)."
