"""One rank of a two-process torch.distributed (gloo) run of ``wattwise.track``, for test_track_integrations.py.

Run under torchrun: ``track_worker.py OUT [STEPS]``. Every rank enters the same ``with
wattwise.track(...)`` block (a collective), runs STEPS steps of a tiny torch computation calling
``run.step()`` once per step, and writes ``OUT/rank<r>.json``: its report (``report.to_dict()``),
the metrics it logged every LOG_EVERY steps, its run's directory and whether it is the main process.
The measured sources are the estimated CPU's only (``sources=("cpu",)``), so no counter is needed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

import wattwise

LOG_EVERY = 5


def main() -> None:
    out = Path(sys.argv[1])
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(rank)
    weight = torch.randn(16, 16)
    metrics = []
    with wattwise.track(output_dir=str(out), sources=("cpu",), country_iso_code="FRA", print_summary=False,
                        window_s=3600.0, planned_steps=steps) as run:
        for step in range(1, steps + 1):
            x = torch.randn(8, 16)
            for _ in range(20):
                x = torch.tanh(x @ weight)
            run.step(samples=8)
            if step % LOG_EVERY == 0:
                metrics.append({"step": step, **run.metrics()})
    (out / f"rank{rank}.json").write_text(json.dumps({
        "report": run.report.to_dict(), "metrics": metrics, "output_dir": str(run.output_dir),
        "is_main_process": run.is_main_process,
    }))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
