"""One rank of a two-process torch.distributed (gloo) run of a bare ``Run``, for test_distributed.py.

Run under torchrun: ``session_worker.py OUT SCENARIO STEPS [BUDGET_KWH]``.

- ``one-node``: both ranks on one node, sharing one fake RAPL tree (``OUT/node-0``); each rank drives
  the GPU at its ``LOCAL_RANK`` of two fake GPUs.
- ``one-node-broken``: as ``one-node``, but from step BREAK_AT rank 1 cannot compute its figures.
- ``two-nodes``: each rank is its own node (``WATTWISE_NODE_ID``), with its own RAPL tree and one
  fake GPU, as two machines would be.

Per step, rank r's GPU uses GPU_J[r]; each node's package PACKAGE_J and DRAM DRAM_J (bumped by the
node's leader, as the node's counter counts every process on it). The fakes are the ones the unit
tests use: an autospec of the real pynvml and a sysfs tree with the real powercap layout. Each rank
writes ``OUT/rank<r>.json``: its report, the metrics it logged, and the step it stopped at.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for fakes.py
from fakes import FakeGpu, PowercapTree, advance_rapl, make_fake_nvml  # noqa: E402

GPU_J = (10.0, 20.0)
PACKAGE_J = 3.0
DRAM_J = 1.0
LOG_EVERY = 10
BREAK_AT = 15


def main() -> None:
    out, scenario, steps = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    budget_kwh = float(sys.argv[4]) if len(sys.argv) > 4 else None
    dist.init_process_group("gloo")
    rank = dist.get_rank()

    node = rank if scenario == "two-nodes" else 0
    tree_dir = out / f"node-{node}"
    if rank == node:  # the node's first process lays out its sysfs
        tree = PowercapTree(tree_dir)
        tree.zone("intel-rapl:0", "package-0")
        tree.zone("intel-rapl:0:0", "dram")
    dist.barrier()
    rapl_root = tree_dir / "class" / "powercap"

    if scenario == "two-nodes":
        os.environ["WATTWISE_NODE_ID"] = f"node-{rank}"
        os.environ["LOCAL_RANK"] = "0"  # each machine's only process
        gpus = [FakeGpu(uuid=f"GPU-node{rank}-0000", energy_mj=0)]
    else:
        gpus = [FakeGpu(uuid=f"GPU-{i}000-0000", energy_mj=0) for i in range(2)]
    sys.modules["pynvml"] = make_fake_nvml(gpus)
    os.environ.pop("CUDA_VISIBLE_DEVICES", None)  # every fake GPU visible; LOCAL_RANK picks this rank's

    import wattwise.ranks
    import wattwise.sources.rapl
    from wattwise.config import Config
    from wattwise.run import Run

    wattwise.sources.rapl.DEFAULT_ROOT = str(rapl_root)
    options = dict(
        sources=("nvml", "rapl", "cpu", "ram"), country_iso_code="FRA", output_dir=str(out),
        print_summary=False, window_s=3600.0,  # only syncs read the meter: the sums are exact
    )
    if budget_kwh is not None:
        options.update(budget_kwh=budget_kwh, on_budget="stop")
    session = Run.from_config(Config.from_kwargs(**options), framework="loop")
    session.start(output_dir=out, planned_steps=steps, is_main_process=rank == 0, across_ranks=True)

    my_gpu = gpus[0] if scenario == "two-nodes" else gpus[rank]
    metrics, stopped_at = [], None
    for step in range(1, steps + 1):
        my_gpu.energy_mj += round(GPU_J[rank] * 1e3)
        if session.node_leader:
            advance_rapl(rapl_root, "intel-rapl:0", PACKAGE_J)
            advance_rapl(rapl_root, "intel-rapl:0:0", DRAM_J)
        if scenario == "one-node-broken" and rank == 1 and step == BREAK_AT:
            wattwise.ranks._local_figures = lambda ledger: 1 / 0  # a bug on one rank only
        session.step()
        if step % LOG_EVERY == 0:
            session.sync()
            metrics.append({"step": step, **session.metrics(read=False)})
        if session.should_stop:
            stopped_at = step
            break
    report = session.finish()
    (out / f"rank{rank}.json").write_text(
        json.dumps({"report": report.to_dict(), "metrics": metrics, "stopped_at": stopped_at, "steps_run": step})
    )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
