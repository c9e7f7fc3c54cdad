"""Assemble BENCHMARKS.md from the per-area results each benchmark script writes.

    python benchmarks/collect.py        # after running the benchmarks/bench_*.py you changed
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["logger", "architecture", "run_record", "checkpointing", "health", "migrate", "sync", "cluster"]

HEADER = """# Benchmarks

Each benchmark runs lightning_track beside the anchor it is compared with, in the same run, and
reports the ratio. Machine: 2 CPU cores, no GPU (the project's standard machine). Absolute times
are noisy there (other processes share the cores); the ratios are what to compare. Re-run a
script and `python benchmarks/collect.py` to refresh this file.

"""


def main() -> None:
    parts = [HEADER]
    found = {p.stem: p for p in (HERE / "results").glob("*.md")}
    for name in ORDER + sorted(set(found) - set(ORDER)):
        if name in found:
            parts.append(found[name].read_text().strip() + "\n\n")
    (HERE.parent / "BENCHMARKS.md").write_text("".join(parts).rstrip() + "\n")


if __name__ == "__main__":
    main()
