"""Per-step overhead of EnergyCallback against no callback (and against transformers' CodeCarbonCallback).

Run:  python benchmarks/overhead.py [--rounds 7] [--steps 200] [--frameworks hf,lightning,keras] [--small]
                                      [--against REV]

For each framework, the same tiny model (a step of about 10 ms on a laptop-class CPU) is trained
with each configuration, interleaved round by round in one process so that machine noise hits all
of them alike (``--small``: smaller models, steps of about 2 ms, where a hook's fixed cost weighs
most). Each run's steady-state time per step is (last step end - first timed step end) /
steps, after warm-up steps; the ratio to the no-callback run *of the same round* is taken, and the
median over rounds is printed with its range. Everything is offline and on the CPU.

``--against REV`` adds wattwise as it was at a git revision of this repository (imported as a
package of its own, ``wattwise_REV``, from that revision's ``core/`` and ``integrations/``) to the
configurations, so that the two codes' hook times are measured in the same rounds, under the same
noise; the ratio of the two per round is printed with its median and range.
"""

from __future__ import annotations

import argparse
import importlib
import io
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("WATTWISE_REGISTRY", "off")  # benchmark runs are not the user's runs: no registry rows

WARMUP_STEPS = 20
# model sizes: the default (steps of 5-20 ms on a 2-vCPU VM) and --small (about 2 ms)
SIZES = {
    "default": {"hidden": 1024, "gpt_embd": 64, "gpt_layers": 2, "hf_batch": 8},
    "small": {"hidden": 64, "gpt_embd": 16, "gpt_layers": 1, "hf_batch": 2},
}
SIZE = SIZES["default"]
HOOK_CALLS: list[tuple[float, float]] = []  # (start, seconds) of every call into an instrumented callback
PACKAGES = {"wattwise": "wattwise"}  # configuration name -> the package its EnergyCallback comes from


def package_at(revision: str) -> str:
    """Import wattwise as it was at a git revision of this repository, as the package
    ``wattwise_<revision>`` (its ``wattwise`` imports renamed), and return that name."""
    root = Path(__file__).resolve().parent.parent
    name = "wattwise_" + re.sub(r"\W", "_", revision)
    archive = subprocess.run(["git", "archive", revision, "core", "integrations"], cwd=root, check=True,
                             capture_output=True).stdout
    parent = Path(tempfile.mkdtemp(prefix="wattwise-at-"))  # left for the process's life: its modules load lazily
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(parent, filter="data")
    package = parent / name
    (parent / "core").rename(package)
    (parent / "integrations").rename(package / "integrations")
    for path in package.rglob("*.py"):
        path.write_text(re.sub(r"(?m)^(\s*(?:from|import)\s+)wattwise\b", rf"\g<1>{name}", path.read_text()))
    sys.path.insert(0, str(parent))
    importlib.import_module(name)
    return name


def energy_callback(package: str, framework: str) -> type:
    return importlib.import_module(f"{package}.integrations.{framework}").EnergyCallback


def instrumented(callback):
    """Time every hook wattwise implements (not the framework's inherited no-ops) into HOOK_CALLS."""
    HOOK_CALLS.clear()
    for name in dir(callback):
        if not (name.startswith("on_") or name in ("setup", "teardown")):
            continue
        method = getattr(callback, name)
        if not callable(method) or not getattr(method, "__module__", "").startswith("wattwise"):
            continue

        def timed(*args, _method=method, **kwargs):
            start = time.perf_counter()
            try:
                return _method(*args, **kwargs)
            finally:
                HOOK_CALLS.append((start, time.perf_counter() - start))

        setattr(callback, name, timed)
    return callback


# ---- Hugging Face --------------------------------------------------------------------------------


def hf_configs(steps: int) -> dict[str, Callable[[], list[float]]]:
    import torch
    from datasets import Dataset
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        PrinterCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )
    from transformers.integrations import CodeCarbonCallback

    ids = torch.randint(0, 256, (steps * 8, 32), generator=torch.Generator().manual_seed(0)).tolist()
    dataset = Dataset.from_dict({"input_ids": ids, "labels": ids})

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())

    def train(extra: list) -> list[float]:
        torch.manual_seed(0)
        model = GPT2LMHeadModel(
            GPT2Config(vocab_size=256, n_positions=32, n_embd=SIZE["gpt_embd"], n_layer=SIZE["gpt_layers"], n_head=4, bos_token_id=0, eos_token_id=0)
        )
        clock = StepClock()
        with tempfile.TemporaryDirectory() as out:
            args = TrainingArguments(
                output_dir=out, max_steps=steps, per_device_train_batch_size=SIZE["hf_batch"], logging_steps=50,
                save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, log_level="error",
            )
            trainer = Trainer(model=model, args=args, train_dataset=dataset, callbacks=[clock, *extra(out)])
            trainer.remove_callback(PrinterCallback)  # keep the benchmark's output to its table
            trainer.train()
        return clock.ends

    def codecarbon(out: str) -> list:
        import codecarbon as cc

        callback = CodeCarbonCallback()
        # transformers builds an online tracker (geo-IP lookup); give it the offline one instead
        callback.tracker = cc.OfflineEmissionsTracker(
            country_iso_code="FRA", output_dir=out, save_to_file=False, log_level="error"
        )
        return [callback]

    def wattwise(package: str) -> Callable[[], list[float]]:
        callback = energy_callback(package, "transformers")
        return lambda: train(lambda out: [instrumented(callback(country_iso_code="FRA", print_summary=False))])

    return {
        "none": lambda: train(lambda out: []),
        **{key: wattwise(package) for key, package in PACKAGES.items()},
        "codecarbon": lambda: train(codecarbon),
    }


# ---- Lightning -----------------------------------------------------------------------------------


def lightning_configs(steps: int) -> dict[str, Callable[[], list[float]]]:
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(steps * 64, 256, generator=generator), torch.randint(0, 10, (steps * 64,)))

    class StepClock(pl.Callback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.ends.append(time.perf_counter())

    class Model(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            hidden = SIZE["hidden"]
            self.net = torch.nn.Sequential(
                torch.nn.Linear(256, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                torch.nn.Linear(hidden, 10),
            )

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    def train(extra: list) -> list[float]:
        torch.manual_seed(0)
        clock = StepClock()
        with tempfile.TemporaryDirectory() as out:
            trainer = pl.Trainer(
                accelerator="cpu", devices=1, max_steps=steps, log_every_n_steps=50, logger=False,
                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                default_root_dir=out, callbacks=[clock, *extra],
            )
            trainer.fit(Model(), DataLoader(data, batch_size=64))
        return clock.ends

    def wattwise(package: str) -> Callable[[], list[float]]:
        callback = energy_callback(package, "lightning")
        return lambda: train([instrumented(callback(country_iso_code="FRA", print_summary=False))])

    return {
        "none": lambda: train([]),
        # Lightning's own cost of dispatching every hook to one more callback, whatever it does
        "empty": lambda: train([pl.Callback()]),
        **{key: wattwise(package) for key, package in PACKAGES.items()},
    }


# ---- Keras ---------------------------------------------------------------------------------------


def keras_configs(steps: int) -> dict[str, Callable[[], list[float]]]:
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((steps * 64, 256)).astype("float32")
    y = rng.integers(0, 10, steps * 64)

    class StepClock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.ends: list[float] = []

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append(time.perf_counter())

    def train(extra: list) -> list[float]:
        init = keras.initializers.GlorotUniform(seed=0)
        model = keras.Sequential([
            keras.Input((256,)),
            keras.layers.Dense(SIZE["hidden"], activation="relu", kernel_initializer=init),
            keras.layers.Dense(SIZE["hidden"], activation="relu", kernel_initializer=init),
            keras.layers.Dense(10, kernel_initializer=init),
        ])
        model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        clock = StepClock()
        with tempfile.TemporaryDirectory() as out:
            options = {"country_iso_code": "FRA", "print_summary": False, "output_dir": out}
            model.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[clock, *(cb(options) for cb in extra)])
        return clock.ends

    def wattwise(package: str) -> Callable[[], list[float]]:
        callback = energy_callback(package, "keras")
        return lambda: train([lambda options: instrumented(callback(**options))])

    return {
        "none": lambda: train([]),
        **{key: wattwise(package) for key, package in PACKAGES.items()},
    }


FRAMEWORKS: dict[str, Callable[[int], dict[str, Callable[[], list[float]]]]] = {
    "hf": hf_configs,
    "lightning": lightning_configs,
    "keras": keras_configs,
}


# ---- measurement ---------------------------------------------------------------------------------


def seconds_per_step(ends: list[float]) -> float:
    timed = ends[WARMUP_STEPS:]
    return (timed[-1] - timed[0]) / (len(timed) - 1)


def hook_time(ends: list[float]) -> tuple[float, float]:
    """Time spent inside wattwise's hooks over the timed steps: as a fraction of their wall time, and
    in seconds per step."""
    first, last = ends[WARMUP_STEPS], ends[-1]
    inside = sum(seconds for start, seconds in HOOK_CALLS if first <= start < last)
    return inside / (last - first), inside / (len(ends) - 1 - WARMUP_STEPS)


def measure(name: str, configs: dict[str, Callable[[], list[float]]], rounds: int) -> None:
    per_round: dict[str, list[float]] = {key: [] for key in configs}
    shares: dict[str, list[float]] = {key: [] for key in PACKAGES}
    per_step: dict[str, list[float]] = {key: [] for key in PACKAGES}
    keys = list(configs)
    for r in range(rounds):
        order = keys[r % len(keys):] + keys[: r % len(keys)]  # rotate who goes first
        for key in order:
            ends = configs[key]()
            per_round[key].append(seconds_per_step(ends))
            if key in PACKAGES:
                share, seconds = hook_time(ends)
                shares[key].append(share)
                per_step[key].append(seconds)
    base = per_round["none"]
    print(f"\n{name}: {rounds} rounds, median step without callback {1000 * statistics.median(base):.2f} ms")
    width = max(12, *map(len, configs))
    print(f"  {'configuration':<{width}} {'ms/step':>8} {'ratio (median)':>15} {'ratio range':>18}")
    for key, values in per_round.items():
        ratios = [v / b for v, b in zip(values, base, strict=True)]
        print(
            f"  {key:<{width}} {1000 * statistics.median(values):8.3f} {statistics.median(ratios):15.4f}"
            f"   [{min(ratios):.4f}, {max(ratios):.4f}]"
        )
    for key in PACKAGES:
        print(f"  time inside {key}'s hooks: {100 * statistics.median(shares[key]):.3f}% of the step time, "
              f"{1e6 * statistics.median(per_step[key]):.1f} us per step (medians; per round: "
              f"{', '.join(f'{1e6 * v:.1f}' for v in per_step[key])})")
    for key in list(PACKAGES)[1:]:
        ratios = [new / old for new, old in zip(per_step["wattwise"], per_step[key], strict=True)]
        print(f"  hook time per step, this tree / {key}, per round: median {statistics.median(ratios):.3f} "
              f"[{min(ratios):.3f}, {max(ratios):.3f}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    parser.add_argument("--small", action="store_true", help="smaller models: steps of about 2 ms")
    parser.add_argument("--against", metavar="REV", help="also measure wattwise as it was at this git revision")
    cli = parser.parse_args()
    if cli.against:
        PACKAGES[f"wattwise@{cli.against}"] = package_at(cli.against)
    SIZE.update(SIZES["small" if cli.small else "default"])
    import logging

    logging.getLogger("wattwise").setLevel(logging.ERROR)
    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {cli.steps} steps per run ({WARMUP_STEPS} warm-up)")
    for name in cli.frameworks.split(","):
        measure(name, FRAMEWORKS[name](cli.steps), cli.rounds)


if __name__ == "__main__":
    main()
