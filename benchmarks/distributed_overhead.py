"""What summing across ranks costs: HF Trainer on 1 and on 2 processes (torchrun, gloo, CPU).

Run:  python benchmarks/distributed_overhead.py [--rounds 3] [--steps 300] [--logging-steps 50]

Each configuration is a fresh ``torchrun`` launch of this script (``--worker``), interleaved round by
round so machine noise hits all alike: {1, 2} processes x {no callback, EnergyCallback}. Every rank
times its steady-state seconds per step, the time spent inside wattwise's hooks, and the time spent
inside ``Run.sync`` (where, on 2 processes, the all_reduce happens, once per log step). Printed,
as medians over rounds with their range:

- the wall-clock ratio with/without the callback, on 1 process and on 2;
- the hooks' time per step on 2 processes against 1 (the reduction must add nothing per step);
- the milliseconds of one sync on each, and what it costs per step at this logging interval.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from wattwise.run import Run

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

WARMUP_STEPS = 20


def worker(out: Path, steps: int, logging_steps: int, with_callback: bool) -> None:
    import torch
    from datasets import Dataset
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

    sys.path.insert(0, str(Path(__file__).parent))
    from overhead import HOOK_CALLS, instrumented

    from wattwise.integrations.transformers import EnergyCallback

    syncs: list[tuple[float, float]] = []  # (start, seconds) of every Run.sync
    real_sync = Run.sync

    def timed_sync(self):
        start = time.perf_counter()
        try:
            return real_sync(self)
        finally:
            syncs.append((start, time.perf_counter() - start))

    Run.sync = timed_sync

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())

    ids = torch.randint(0, 256, (steps * 16, 32), generator=torch.Generator().manual_seed(0)).tolist()
    dataset = Dataset.from_dict({"input_ids": ids, "labels": ids})
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=256, n_positions=32, n_embd=64, n_layer=2, n_head=2))
    clock = StepClock()
    callbacks = [clock]
    if with_callback:
        callbacks.append(instrumented(EnergyCallback(
            country_iso_code="FRA", print_summary=False, write_files=False, registry=False)))
    args = TrainingArguments(
        output_dir=str(out / "hf"), max_steps=steps, per_device_train_batch_size=8, logging_steps=logging_steps,
        save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, ddp_backend="gloo",
    )
    Trainer(model=model, args=args, train_dataset=dataset, callbacks=callbacks).train()
    ends = clock.ends[WARMUP_STEPS:]
    timed_steps = len(ends) - 1
    def within(calls):
        return sum(s for start, s in calls if ends[0] < start <= ends[-1])

    hooks_s = within(HOOK_CALLS) if with_callback else 0.0
    sync_s = within(syncs)
    rank = int(os.environ.get("RANK", "0"))
    (out / f"rank{rank}.json").write_text(json.dumps({
        "s_per_step": (ends[-1] - ends[0]) / timed_steps,
        "hook_s_per_step": hooks_s / timed_steps,
        "hook_s_per_step_outside_syncs": (hooks_s - sync_s) / timed_steps,
        "sync_ms": 1e3 * statistics.median(s for _, s in syncs) if syncs else None,
    }))


def launch(processes: int, with_callback: bool, steps: int, logging_steps: int) -> dict:
    """One torchrun launch; the ranks' figures averaged (rank 0's and rank 1's steps overlap)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
                   f"--nproc_per_node={processes}", __file__, "--worker", tmp, "--steps", str(steps),
                   "--logging-steps", str(logging_steps)] + (["--with-callback"] if with_callback else [])
        subprocess.run(command, env=env, check=True, capture_output=True, timeout=600)
        ranks = [json.loads((Path(tmp) / f"rank{r}.json").read_text()) for r in range(processes)]
    syncs = [r["sync_ms"] for r in ranks if r["sync_ms"] is not None]
    return {
        "s_per_step": statistics.mean(r["s_per_step"] for r in ranks),
        "hook_s_per_step": statistics.mean(r["hook_s_per_step"] for r in ranks),
        "hook_s_per_step_outside_syncs": statistics.mean(r["hook_s_per_step_outside_syncs"] for r in ranks),
        "sync_ms": statistics.mean(syncs) if syncs else None,
    }


def describe(values: list[float], fmt: str = "{:.4f}") -> str:
    return f"{fmt.format(statistics.median(values))} (range {fmt.format(min(values))}-{fmt.format(max(values))})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--logging-steps", type=int, default=50)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--with-callback", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        worker(Path(options.worker), options.steps, options.logging_steps, options.with_callback)
        return

    results: dict[tuple[int, bool], list[dict]] = {key: [] for key in ((1, False), (1, True), (2, False), (2, True))}
    for round_ in range(options.rounds):
        for key in results:
            results[key].append(launch(*key, options.steps, options.logging_steps))
        print(f"round {round_ + 1}/{options.rounds} done", file=sys.stderr)

    print(f"HF Trainer, tiny GPT-2, {options.steps} steps, a log (and a sync) every {options.logging_steps} steps, "
          f"{options.rounds} rounds")
    for processes in (1, 2):
        ratios = [w["s_per_step"] / b["s_per_step"]
                  for w, b in zip(results[(processes, True)], results[(processes, False)], strict=True)]
        step_ms = statistics.median(r["s_per_step"] for r in results[(processes, False)]) * 1e3
        print(f"{processes} process(es): step {step_ms:.1f} ms; wall ratio with/without callback {describe(ratios)}")
    for key, label in (("hook_s_per_step_outside_syncs", "outside syncs (the per-step path)"),
                       ("hook_s_per_step", "all, syncs included")):
        hooks = {p: [r[key] * 1e6 for r in results[(p, True)]] for p in (1, 2)}
        print(f"hooks' time per step, {label}: 1 process {describe(hooks[1], '{:.1f}')} us, "
              f"2 processes {describe(hooks[2], '{:.1f}')} us; "
              f"ratio 2/1 {describe([b / a for a, b in zip(hooks[1], hooks[2], strict=True)], '{:.2f}')}")
    for processes in (1, 2):
        syncs = [r["sync_ms"] for r in results[(processes, True)] if r["sync_ms"] is not None]
        if syncs:
            per_step_us = statistics.median(syncs) * 1e3 / options.logging_steps
            print(f"one sync, {processes} process(es): {describe(syncs, '{:.3f}')} ms "
                  f"(= {per_step_us:.1f} us per step at this logging interval)")


if __name__ == "__main__":
    main()
