"""System metrics: ``<run>/system.jsonl``, one sample of the machine and the training process every few seconds.

Why: a run that was slow, ran out of memory or left a GPU idle says so only through these numbers, and
Lightning's ``DeviceStatsMonitor`` has no GPU utilisation. Each line is::

    {"time": ..., "step": <latest training step>, "node": <node rank>, "metrics": {"system/...": value}}

* the training process tree (the process and its children: dataloader workers, the sink host, the
  console relay): ``system/proc_cpu_percent`` (100 = one core), ``system/proc_rss_gb``;
* the machine: ``system/cpu_percent`` (0-100 over all cores), ``system/memory_used_gb``,
  ``system/memory_percent``, disk and network rates ``system/disk_{read,write}_mb_s``,
  ``system/net_{recv,sent}_mb_s``;
* each GPU ``i`` through NVML (``nvidia-ml-py``): ``system/gpu{i}/utilization_percent``,
  ``memory_used_gb``, ``memory_total_gb``, ``power_w``, ``temperature_c`` and the training process
  tree's own ``proc_memory_gb``. Without NVML (no GPU, no driver, a container without it) the GPU part
  is absent and :attr:`SystemSampler.gpu_note` says why, once (``meta.json``'s ``system_metrics``).

Sampled off the training thread: in the sink host process (rank 0; it knows the training process as its
parent), or in a thread of its own (no sink host, or another node's local rank 0, which writes
``system.node<k>.jsonl`` so nodes never append to one file over a network file system). Nothing runs per
training step. Torch-free.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import one_line
from ..folder.fileio import JsonlAppender, json_line
from ..folder.layout import RunLayout
from ..folder.records import MetricRecord

__all__ = ["SystemSampler", "SystemRecorder", "node_rank", "gpu_unavailable_reason", "start_system_recorder",
           "NVIDIA_DRIVER_PATHS"]

_GB = 1024 ** 3
_MB = 1024 ** 2


def node_rank(environ: dict[str, str] | None = None) -> int:
    """This machine's node rank in a multi-node run (torchrun's ``GROUP_RANK``, Lightning's ``NODE_RANK``,
    Slurm's ``SLURM_NODEID``), 0 otherwise."""
    env = os.environ if environ is None else environ
    for name in ("GROUP_RANK", "NODE_RANK", "SLURM_NODEID"):
        value = env.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


# Where an NVIDIA driver shows itself on Linux: the kernel module's /proc entry, or WSL2's GPU device (NVML there
# comes from Windows' driver). Neither: NVML cannot find a GPU, so pynvml is not loaded (~7 ms of import and a
# failed library load, in the sink host and again in the capture thread).
NVIDIA_DRIVER_PATHS = ("/proc/driver/nvidia", "/dev/dxg")


def gpu_unavailable_reason() -> tuple[Any, str | None]:
    """``(pynvml, None)`` with NVML initialised, or ``(None, why not)``."""
    if sys.platform.startswith("linux") and not any(os.path.exists(p) for p in NVIDIA_DRIVER_PATHS):
        return None, f"NVML is not available (no NVIDIA driver: none of {', '.join(NVIDIA_DRIVER_PATHS)})"
    try:
        import pynvml
    except ImportError:
        return None, "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
    try:
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
    except Exception as exc:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return None, f"NVML is not available ({type(exc).__name__}: {one_line(exc)})"
    if count == 0:
        return None, "NVML found no GPU"
    return pynvml, None


class SystemSampler:
    """Takes one sample of the training process tree (``pid``) and the machine on each :meth:`sample`."""

    def __init__(self, pid: int, *, gpus: bool = True) -> None:
        import psutil

        self._psutil = psutil
        self.pid = pid
        self._procs: dict[int, Any] = {}  # pid -> psutil.Process, kept so cpu_percent has a baseline
        self._last: tuple[float, Any, Any] | None = None
        self._nvml, self.gpu_note = gpu_unavailable_reason() if gpus else (None, "switched off")
        self._handles = []
        if self._nvml is not None:
            try:
                self._handles = [self._nvml.nvmlDeviceGetHandleByIndex(i)
                                 for i in range(self._nvml.nvmlDeviceGetCount())]
            except Exception as exc:  # noqa: BLE001
                self._nvml, self.gpu_note = None, f"NVML could not open the GPUs ({one_line(exc)})"
        psutil.cpu_percent(None)  # baselines: the first real sample covers one interval
        self._tree()
        self._rates()

    def _tree(self) -> list[Any]:
        """The process and its descendants, the same objects from sample to sample (cpu_percent needs them)."""
        psutil = self._psutil
        try:
            root = self._procs.get(self.pid) or psutil.Process(self.pid)
            now = [root, *root.children(recursive=True)]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return []
        known = {}
        for proc in now:
            known[proc.pid] = self._procs.get(proc.pid, proc)
            if proc.pid not in self._procs:
                try:
                    known[proc.pid].cpu_percent(None)  # a new child: its first value is from now on
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
        self._procs = known
        return list(known.values())

    def sample(self) -> dict[str, float]:
        psutil = self._psutil
        metrics: dict[str, float] = {}
        cpu = rss = 0.0
        pids = set()
        for proc in self._tree():
            try:
                with proc.oneshot():
                    cpu += proc.cpu_percent(None)
                    rss += proc.memory_info().rss
                pids.add(proc.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        if pids:
            metrics["system/proc_cpu_percent"] = round(cpu, 2)
            metrics["system/proc_rss_gb"] = round(rss / _GB, 4)
        metrics["system/cpu_percent"] = psutil.cpu_percent(None)
        memory = psutil.virtual_memory()
        metrics["system/memory_used_gb"] = round((memory.total - memory.available) / _GB, 4)
        metrics["system/memory_percent"] = memory.percent
        metrics.update(self._rates())
        metrics.update(self._gpus(pids))
        return metrics

    def _rates(self) -> dict[str, float]:
        psutil = self._psutil
        try:
            disk, net = psutil.disk_io_counters(), psutil.net_io_counters()
        except (OSError, RuntimeError):  # no /proc/diskstats in some containers
            return {}
        now, out = time.monotonic(), {}
        if self._last is not None:
            then, disk0, net0 = self._last
            span = max(now - then, 1e-6)
            if disk is not None and disk0 is not None:
                out["system/disk_read_mb_s"] = round((disk.read_bytes - disk0.read_bytes) / _MB / span, 3)
                out["system/disk_write_mb_s"] = round((disk.write_bytes - disk0.write_bytes) / _MB / span, 3)
            if net is not None and net0 is not None:
                out["system/net_recv_mb_s"] = round((net.bytes_recv - net0.bytes_recv) / _MB / span, 3)
                out["system/net_sent_mb_s"] = round((net.bytes_sent - net0.bytes_sent) / _MB / span, 3)
        self._last = (now, disk, net)
        return out

    def _gpus(self, pids: set[int]) -> dict[str, float]:
        nvml, out = self._nvml, {}
        if nvml is None:
            return out
        for index, handle in enumerate(self._handles):
            key = f"system/gpu{index}/"
            for name, read in (
                ("utilization_percent", lambda h: nvml.nvmlDeviceGetUtilizationRates(h).gpu),
                ("memory_used_gb", lambda h: round(nvml.nvmlDeviceGetMemoryInfo(h).used / _GB, 4)),
                ("memory_total_gb", lambda h: round(nvml.nvmlDeviceGetMemoryInfo(h).total / _GB, 4)),
                ("power_w", lambda h: round(nvml.nvmlDeviceGetPowerUsage(h) / 1000.0, 2)),
                ("temperature_c", lambda h: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU)),
                ("proc_memory_gb", lambda h: round(sum(p.usedGpuMemory or 0 for p in
                                                       nvml.nvmlDeviceGetComputeRunningProcesses(h)
                                                       if p.pid in pids) / _GB, 4)),
            ):
                try:
                    out[key + name] = float(read(handle))
                except Exception:  # noqa: BLE001, S112 - one reading a GPU does not support (power on some boards)
                    continue
        return out


class SystemRecorder:
    """Samples every ``interval`` seconds on a daemon thread into ``path`` (and ``on_record``), and once
    at the start and once at :meth:`close`, so every run has at least two samples.

    ``step`` gives the latest training step for each line; ``on_record`` receives each sample as a
    :class:`MetricRecord` (the sink host hands it to TensorBoard and SwanLab). A failure to sample or
    write is reported once through ``on_error`` and the recorder stops: training never notices.
    """

    def __init__(self, pid: int, path: str | Path, interval: float, *, node: int = 0,
                 step: Callable[[], int | None] = lambda: None,
                 on_record: Callable[[MetricRecord], None] | None = None,
                 on_error: Callable[[str], None] | None = None, gpus: bool = True) -> None:
        self.path, self.interval, self.node = Path(path), float(interval), node
        self._step, self._on_record, self._on_error = step, on_record, on_error
        self._stop = threading.Event()
        self.samples = 0
        self._failed = False
        self._closed = False
        self.sampler = SystemSampler(pid, gpus=gpus)
        self._appender = JsonlAppender(self.path)
        self._thread = threading.Thread(target=self._loop, name="lightning_track-system", daemon=True)
        self._thread.start()

    @property
    def gpu_note(self) -> str | None:
        return self.sampler.gpu_note

    def _loop(self) -> None:
        # One sample at once and one at close (see close): a run shorter than the interval has two.
        while self._record_or_stop():
            if self._stop.wait(self.interval):
                return

    def _record_or_stop(self) -> bool:
        """Take a sample; False (after one report) once sampling failed: this recorder is done."""
        if self._failed:
            return False
        try:
            self.record_one()
        except Exception as exc:  # noqa: BLE001 - reported once, then this recorder is done
            self._failed = True
            if self._on_error is not None:
                self._on_error(f"system metrics stopped: {one_line(exc)}")
            return False
        return True

    def record_one(self) -> None:
        now = time.time()
        metrics = self.sampler.sample()
        step = self._step()
        line = {"time": round(now, 6), "step": int(step) if step is not None else 0, "node": self.node,
                "metrics": metrics}
        self._appender.write_lines([json_line(line)])
        self.samples += 1
        if self._on_record is not None and self.node == 0:
            self._on_record(MetricRecord(line["step"], now, metrics))

    def close(self) -> None:
        """Stop sampling, after a last sample: the state at the run's end (its peak memory, often)."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._thread.join(10.0)
        if not self._thread.is_alive():
            self._record_or_stop()
        self._appender.close()
        nvml = self.sampler._nvml  # noqa: SLF001 - its own sampler
        if nvml is not None:
            try:
                nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001
                pass


def start_system_recorder(layout: RunLayout, interval: float, *, pid: int, attempt: int = 1, node: int = 0,
                          step: Callable[[], int | None] = lambda: None,
                          on_record: Callable[[MetricRecord], None] | None = None,
                          on_error: Callable[[str], None] | None = None) -> SystemRecorder | None:
    """Sample ``pid``'s tree every ``interval`` s into the run's system file of ``node``, and say in the
    attempt's ``meta.json`` what is sampled (``system_metrics``: the interval, the GPUs or why there are
    none). None, with the reason in ``meta.json``, when nothing can be sampled (no psutil)."""
    path = layout.node_system_jsonl(node)
    note: dict[str, Any] = {"interval_s": interval, "file": path.name}
    recorder = None
    try:
        recorder = SystemRecorder(pid, path, interval, node=node, step=step, on_record=on_record, on_error=on_error)
        note["gpu"] = recorder.gpu_note or f"NVML: {len(recorder.sampler._handles)} GPU(s)"  # noqa: SLF001
    except (ImportError, OSError) as exc:
        note["error"] = f"system metrics are not sampled: {one_line(exc)}"
    if node == 0:
        _note_in_meta(layout, attempt, note)
    return recorder


def _note_in_meta(layout: RunLayout, attempt: int, note: dict[str, Any]) -> None:
    """``system_metrics`` in this attempt's meta file (written once at the start, before the sinks open)."""
    from ..folder.fileio import update_json

    path = layout.attempt_meta_json(attempt)
    if not path.exists():
        path = layout.meta_json
    try:  # under the folder's lock: the code capture (a thread of the training process) adds to it too
        update_json(path, lambda meta: {**meta, "system_metrics": note} if isinstance(meta, dict) else meta)
    except (OSError, ValueError):
        pass  # meta.json is a description; the samples themselves still go to system.jsonl


def start_rank_records(layout: RunLayout, rank: int, *, console: bool, system_interval: float,
                       step: Callable[[], int | None]) -> None:
    """What a rank > 0 keeps of its own, once it knows the run folder: its console (``logs.rank<N>.txt``),
    and, on another node's local rank 0, that machine's system samples (``system.node<k>.jsonl``)."""
    if console:
        import sys

        from ..redaction import secret_values
        from .console import capture_console

        capture_console(layout.rank_logs_txt(rank), secrets=secret_values(argv=sys.argv, environ=os.environ))
    node = node_rank()
    if system_interval and node > 0 and os.environ.get("LOCAL_RANK", "0") == "0":
        start_system_recorder(layout, system_interval, pid=os.getpid(), node=node, step=step)
