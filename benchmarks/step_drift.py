"""How much the cost of an identical training step moves on this machine, epoch by epoch, without wattwise.

Run:  python benchmarks/step_drift.py [--precision bf16-mixed] [--epochs 8]     (about 1 minute in bf16)

Trains ``probe_accuracy.py``'s Lightning MLP and data (256 -> 1024 -> 1024 -> 1, batch 1024, 131072
samples, validation each epoch) on one torch thread with denormals flushed, and times every training step
with ``time.process_time()`` (CPU time: what wattwise's CPU estimate follows). Prints each epoch's
median and mean CPU milliseconds per step. Every step does the same arithmetic, so the spread
between epochs is the machine's: on a shared host, other tenants' use of the same caches and
memory bandwidth. It bounds how well a few seconds of measurement (a probe, the first part of a
run) can predict minutes of the same work there.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
warnings.filterwarnings("ignore")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="bf16-mixed", help="a Lightning precision: 32-true, bf16-mixed")
    parser.add_argument("--epochs", type=int, default=8)
    cli = parser.parse_args()
    import lightning.pytorch as L
    import torch
    from probe_accuracy import lightning_mlp  # this directory: the script's own

    for name in ("lightning", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    MLP, Data = lightning_mlp()

    class StepClock(L.Callback):
        def __init__(self) -> None:
            self.cpu_s: list[list[float]] = []  # per epoch, the CPU time at each step's end

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self.cpu_s.append([])

        def on_train_batch_end(self, *args) -> None:
            self.cpu_s[-1].append(time.process_time())

    clock = StepClock()
    trainer = L.Trainer(max_epochs=cli.epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, precision=cli.precision,
                        callbacks=[clock])
    trainer.fit(MLP(), datamodule=Data(1024))
    medians = []
    for epoch, ends in enumerate(clock.cpu_s):
        steps_ms = [1e3 * (b - a) for a, b in zip(ends, ends[1:], strict=False)]  # the epoch's first step holds its set-up
        medians.append(statistics.median(steps_ms))
        print(f"epoch {epoch}: CPU per step median {medians[-1]:.1f} ms, mean {statistics.fmean(steps_ms):.1f} ms")
    print(f"{cli.precision}: epoch medians from {min(medians):.1f} to {max(medians):.1f} ms "
          f"({100 * (max(medians) / min(medians) - 1):.0f}% apart)")


if __name__ == "__main__":
    main()
