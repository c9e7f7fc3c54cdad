"""Where a command's wall time went: on a CPU, waiting for one (other work on the cores), or blocked.

    python benchmarks/sched_split.py report ROOT -o report.html     # any lt command line

Runs ``lt`` with these arguments in this process and, at exit, reads the main thread's
``/proc/self/task/<tid>/schedstat`` (Linux): nanoseconds on a CPU and waiting on the run queue. What is
left of the wall is time blocked (disk, a child process, a lock, a sleep). On a shared machine a wall far
above the CPU time with nothing blocked says the cores were busy with other work, not that the command
waited on I/O or on processes of its own.
"""

from __future__ import annotations

import atexit
import os
import runpy
import sys
import time

_STARTED = time.perf_counter()


def _split() -> None:
    wall = time.perf_counter() - _STARTED
    with open(f"/proc/self/task/{os.getpid()}/schedstat") as handle:
        on_cpu, waiting = (int(v) / 1e9 for v in handle.read().split()[:2])
    print(f"wall {wall:.2f} s: on a CPU {on_cpu:.2f} s, waiting for a CPU {waiting:.2f} s, blocked "
          f"{max(0.0, wall - on_cpu - waiting):.2f} s (load average {os.getloadavg()[0]:.1f})", file=sys.stderr)


if __name__ == "__main__":
    atexit.register(_split)
    sys.argv = ["lt", *sys.argv[1:]]
    runpy.run_module("lightning_track.cli.lt", run_name="__main__")
