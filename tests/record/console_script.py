"""A real fit that prints in every way a training script does, then ends as told (argv[2]).

``python console_script.py ROOT END`` with END one of ``kill`` (SIGKILL itself mid-line), ``exit``
(finish the fit, print a last partial line), ``crash`` (raise inside the fit: the traceback),
``relay-dies`` (the capture's relay is killed, then 4 MB are printed), ``flood`` (4 MB printed after
the fit), ``ddp`` (under ``torchrun --nproc_per_node=2``: each rank says hello).
Prints ``isatty=<stdout> <stderr>`` so a pseudo-terminal test can check what the script saw.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import lightning as L

from lightning_track import RunLogger
from lightning_track.training.demo import DemoDataModule, DemoModule

ROOT, END = sys.argv[1], sys.argv[2]
print("before-the-run: not captured by a RunLogger", flush=True)


class Talk(L.Callback):
    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step != 3:
            return
        if END == "ddp":
            print(f"hello from rank {trainer.global_rank}", flush=True)
            os.system(f"echo rank {trainer.global_rank} c-level child")  # noqa: S605
            return
        if END == "relay-dies":
            from lightning_track.run.console import active_capture

            os.kill(active_capture().relay_pid, signal.SIGKILL)
            time.sleep(0.5)
            for i in range(40_000):  # 4 MB: more than the pipe holds
                print(f"after the relay died {i:06d} " + "x" * 70)
            print("relay-dies done", flush=True)
            return
        print(f"isatty={sys.stdout.isatty()} {sys.stderr.isatty()}", flush=True)
        print("python-print line", flush=True)
        print("python-stderr line", file=sys.stderr, flush=True)
        os.write(1, b"os-write line\n")
        subprocess.run(["sh", "-c", "echo c-level child stdout; echo c-level child stderr >&2"], check=True)
        for i in range(26):  # a tqdm-like bar: 2.5 s of carriage-return updates, coloured
            sys.stderr.write(f"\r\x1b[32mbar {i:2d}/25\x1b[0m |{'#' * i:25s}|")
            sys.stderr.flush()
            time.sleep(0.1)
        sys.stderr.write("\n")
        print(f"LIVE {time.time():.6f}", flush=True)
        time.sleep(0.5)
        if END == "kill":
            sys.stdout.write("half a line before SIGKILL")
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        if END == "crash":
            raise RuntimeError("boom inside the fit")


ddp = {"strategy": "ddp", "devices": 2} if END == "ddp" else {}
logger = RunLogger("console", "test", root=ROOT, sinks=("tensorboard",))
trainer = L.Trainer(max_steps=5, logger=logger, callbacks=[Talk()], log_every_n_steps=1, enable_progress_bar=False,
                    enable_model_summary=False, accelerator="cpu", limit_val_batches=0, num_sanity_val_steps=0, **ddp)
trainer.fit(DemoModule(max_steps=5), datamodule=DemoDataModule(n_train=256, n_val=32))
print("after the fit", flush=True)
if END == "flood":
    for i in range(40_000):
        print(f"flood {i:06d} " + "y" * 80)
sys.stdout.write("last words without a newline")
