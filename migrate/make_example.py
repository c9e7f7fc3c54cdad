"""Write a realistic example legacy ``experiments/`` tree: ``python migrate/make_example.py DIR``."""

from __future__ import annotations

import argparse

from lightning_track.migrate import make_example

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dest", help="folder to create (it plays the role of experiments/)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=120, help="batch-tracking lines per run")
    parser.add_argument("--checkpoints", type=int, default=4)
    parser.add_argument("--ckpt-mb", type=float, default=0.05, help="weights size of a checkpoint")
    args = parser.parse_args()
    for run in make_example(args.dest, runs=args.runs, steps=args.steps, checkpoints=args.checkpoints,
                            ckpt_mb=args.ckpt_mb):
        print(run)
