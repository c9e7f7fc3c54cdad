"""``log_image`` of a 256x256 image on the training thread, beside TensorBoardLogger's ``experiment.add_image``.

    python benchmarks/bench_media.py [--calls 200] [--repeats 3] [--out benchmarks/results/media.md]

Each call logs a fresh 3x256x256 float tensor at a new step; the time is what the training thread spends
in the call (median per call over the repeats). RunLogger's PNG, files and TensorBoard/SwanLab events are
made afterwards on the writer thread and in the sink host; the time for all of them to be on disk
(``flush``) is reported beside it. Also ``experiment.add_image`` through RunLogger (the TensorBoard habit).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_track import RunLogger

REPO = Path(__file__).resolve().parents[1]


def measure(kind: str, root: Path, images: list[torch.Tensor]) -> tuple[float, float]:
    """(seconds per call on the calling thread, seconds until everything is on disk)."""
    if kind == "TensorBoardLogger.experiment.add_image":
        logger = TensorBoardLogger(root)
        writer = logger.experiment
        start = time.perf_counter()
        for step, image in enumerate(images):
            writer.add_image("img", image, step)
        calls = time.perf_counter() - start
        writer.flush()
        return calls / len(images), time.perf_counter() - start
    logger = RunLogger("bench", "media", root=root, system_interval=0, console=False)
    logger.log_metrics({"x": 0.0}, step=0)  # the run (writer, sink host) is up before timing
    logger.flush()
    start = time.perf_counter()
    if kind == "RunLogger.log_image":
        for step, image in enumerate(images):
            logger.log_image("img", image, step=step)
    else:
        experiment = logger.experiment
        for step, image in enumerate(images):
            experiment.add_image("img", image, step)
    calls = time.perf_counter() - start
    logger.flush()
    done = time.perf_counter() - start
    logger.finalize("success")
    return calls / len(images), done


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "media.md"))
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 256, 256, generator=generator) for _ in range(args.calls)]
    kinds = ["TensorBoardLogger.experiment.add_image", "RunLogger.log_image", "RunLogger.experiment.add_image"]
    per_call: dict[str, list[float]] = {k: [] for k in kinds}
    total: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(args.repeats):
        for kind in kinds:
            with tempfile.TemporaryDirectory() as tmp:
                call, done = measure(kind, Path(tmp), images)
            per_call[kind].append(call)
            total[kind].append(done)
    anchor = statistics.median(per_call[kinds[0]])
    rows = ["| 256x256 image, training thread | µs/call (median) | vs TensorBoardLogger | all on disk, s |",
            "| --- | ---: | ---: | ---: |"]
    for kind in kinds:
        call = statistics.median(per_call[kind])
        rows.append(f"| {kind} | {call * 1e6:,.0f} | {call / anchor:.3f}× | {statistics.median(total[kind]):.2f} |")
    text = "\n".join([
        "## Images (issue 15: log_image, experiment.add_image)", "",
        f"`python benchmarks/bench_media.py --calls {args.calls} --repeats {args.repeats}` — the same tensors, "
        "each logger in the same run.", "", *rows, "",
        "Goal: log_image on the training thread ≤ 1/5 of TensorBoardLogger's add_image."])
    print(text)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
