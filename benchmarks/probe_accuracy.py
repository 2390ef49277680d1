"""Accuracy of ``probe``: each candidate's projection of its whole run against that run, trained in full.

Run:  python benchmarks/probe_accuracy.py [--only hf,pl,keras] [--scale 1.0] [--threads=1]   (about 25 minutes on 2 vCPUs)

In each of the three integrations (all offline, on the CPU, ``CUDA_VISIBLE_DEVICES=""``), the same
user set-up is probed with three candidates, then every candidate is trained in full with the real
``EnergyCallback`` (``print_summary=False``, ``write_files=False``, ``registry=False``,
``window_s=0.05``) from the same initial weights:

- ``hf``     HF Trainer, GPT-2 from a config (128 wide, 2 layers, 64 tokens, vocabulary 512), one epoch of
             ``24576 x scale`` samples, evaluation at the epoch's end over 1024 samples;
             candidates ``per_device_train_batch_size`` 8 and 32, and 32 with ``bf16`` (this CPU has AMX-BF16:
             bf16 matmuls are faster there from a large enough batch);
- ``pl``     Lightning MLP (256 -> 1024 -> 1024 -> 1), 8 epochs of ``131072 x scale`` samples, validation each
             epoch over 8192; candidates ``batch_size`` 256 and 1024, and 1024 with ``precision="bf16-mixed"``;
- ``keras``  Keras 3 (torch backend) MLP (256 -> 1024 -> 1024 -> 1), 6 epochs of ``98304 x scale`` samples with
             ``validation_split=0.1``; candidates ``batch_size`` 64, 256 and 1024.

Each ``probe`` measures ``steps`` steps per candidate (16 for HF, 24 for Lightning and Keras: enough
0.05 s windows for the forecaster's warm-up rule at the cheapest step) plus a few evaluation
batches, then projects the planned run (the epochs at the candidate's batch size, evaluation
included). The tables give, per candidate: the projection with its 90% interval, the full run's
measured energy, the error, whether the interval held it, and both rankings. After the full runs
the same probe runs again, and the last column gives each candidate's training joules per step as
the probe measured it, as its full run did, and as the re-probe did: a projection that is off
because the machine's speed moved between the probe and the full run (a shared host) then shows
as a re-probe that moved with the full run, and one off by its own arithmetic as a re-probe that
did not. Targets (issue 15):
every projection within 15% of its full run; the ranking matches the full runs wherever two
candidates' measured energies differ by more than 10%; the probe's own energy at most 10% of one
full run's (given against the cheapest full run, and the mean). That share is set by the
lengths: three candidates of 24 steps are 72 steps, so a full run must have several hundred steps
of the cheapest candidate for it to be under 10% at all; the Lightning plan has 8 epochs (1024
steps at batch 1024) for that reason, where an earlier version's 4 epochs made the probe 18% of the
cheapest run by construction, and the HF epoch 24576 samples (768 steps at batch 32), where 16384
made its 48 steps 10.0-10.5% of the cheapest run.

Energy here is wattwise's CPU/RAM estimate (process CPU time x TDP share; no RAPL or GPU on the
machine this was written on): it tracks CPU time, so a shared machine's load moves it. Torch runs on
one thread by default (``--threads=N`` to change): with two threads on two shared vCPUs, other
tenants' load made the same GPT-2 step cost 60 to 310 ms of CPU time (threads spinning at their
barriers), which no probe taken minutes earlier can foresee; on one thread it stayed within 60-64 ms.
Denormal floats are flushed to zero (``--denormals`` keeps them): on an Intel Xeon the MLPs' arithmetic
drifts into denormals within 10-20 s, after which a step costs twice the CPU time (``benchmarks/forecast_accuracy.py``'s docstring has the measurement).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

THREADS = next((int(a.split("=", 1)[1]) for a in sys.argv if a.startswith("--threads=")), 1)
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))  # before torch is imported
os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WATTWISE_REGISTRY", "off")
warnings.filterwarnings("ignore")

import logging  # noqa: E402

for noisy in ("lightning", "lightning.pytorch", "pytorch_lightning", "transformers", "wattwise"):
    logging.getLogger(noisy).setLevel(logging.ERROR)

WINDOW_S = 0.05
QUIET = {"print_summary": False, "write_files": False, "registry": False, "window_s": WINDOW_S,
         "country_iso_code": "FRA"}


@dataclass
class Outcome:
    name: str
    result: Any  # ProbeResult
    measured_j: list[float] = field(default_factory=list)
    measured_s: list[float] = field(default_factory=list)
    full_step_j: list[float] = field(default_factory=list)  # each full run's training joules per step
    reprobe: Any = None  # the same probe again, after the full runs: how far the machine drifted meanwhile
    wall_s: float = 0.0


def options(scratch: str):
    from wattwise.options import Options

    return Options(country_iso_code="FRA", registry=False, output_dir=scratch, window_s=WINDOW_S)


# ---- Hugging Face ----------------------------------------------------------------------------------


def hf(scale: float, scratch: str) -> Outcome:
    import torch
    from datasets import Dataset
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    from wattwise.integrations.transformers import EnergyCallback, probe

    def tokens(n: int, seed: int) -> Dataset:
        ids = torch.randint(0, 512, (n, 64), generator=torch.Generator().manual_seed(seed))
        return Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})

    train, evaluation = tokens(int(24576 * scale), 0), tokens(1024, 1)

    def trainer(config: dict, callbacks: list) -> Trainer:
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(vocab_size=512, n_positions=64, n_embd=128, n_layer=2, n_head=4))
        settings = {"per_device_train_batch_size": 8, "per_device_eval_batch_size": 32, "num_train_epochs": 1,
                    "eval_strategy": "epoch", "save_strategy": "no", "report_to": "none", "use_cpu": True,
                    "disable_tqdm": True, "logging_steps": 50, **config}
        args = TrainingArguments(os.path.join(scratch, "hf"), **settings)
        return Trainer(model=model, args=args, train_dataset=train, eval_dataset=evaluation, callbacks=callbacks)

    candidates = [{"per_device_train_batch_size": 8}, {"per_device_train_batch_size": 32},
                  {"per_device_train_batch_size": 32, "bf16": True}]
    return _measure("hf", lambda: probe(trainer({}, []), candidates, steps=16, options=options(scratch)),
                    candidates, lambda config: _hf_run(trainer, config, EnergyCallback))


def _hf_run(trainer: Callable, config: dict, callback_class: type) -> Any:
    energy = callback_class(**QUIET)
    trainer(config, [energy]).train()
    return energy.report


# ---- Lightning -------------------------------------------------------------------------------------


def lightning_mlp(scale: float = 1.0) -> tuple[type, type]:
    """The Lightning set-up: the MLP module and its datamodule (``Data(batch_size)``); also
    ``step_drift.py``'s."""
    import lightning.pytorch as L
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(0)
    n = int(131072 * scale)
    train = TensorDataset(torch.randn(n, 256, generator=g), torch.randn(n, 1, generator=g))
    val = TensorDataset(torch.randn(8192, 256, generator=g), torch.randn(8192, 1, generator=g))

    class Data(L.LightningDataModule):
        def __init__(self, batch_size: int = 256) -> None:
            super().__init__()
            self.batch_size = batch_size

        def train_dataloader(self):
            return DataLoader(train, batch_size=self.batch_size, shuffle=True)

        def val_dataloader(self):
            return DataLoader(val, batch_size=self.batch_size)

    class MLP(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024),
                                           torch.nn.ReLU(), torch.nn.Linear(1024, 1))

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x), y)

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-3)

    return MLP, Data


def pl(scale: float, scratch: str) -> Outcome:
    import lightning.pytorch as L

    from wattwise.integrations.lightning import EnergyCallback, probe

    MLP, Data = lightning_mlp(scale)
    kwargs = {"max_epochs": 8, "accelerator": "cpu", "logger": False, "enable_checkpointing": False,
              "enable_progress_bar": False, "enable_model_summary": False, "default_root_dir": scratch}

    def full(config: dict) -> Any:
        energy = EnergyCallback(**QUIET)
        trainer = L.Trainer(**kwargs, precision=config.get("precision", "32-true"), callbacks=[energy])
        trainer.fit(MLP(), datamodule=Data(config["batch_size"]))
        return energy.report

    candidates = [{"batch_size": 256}, {"batch_size": 1024}, {"batch_size": 1024, "precision": "bf16-mixed"}]
    return _measure("pl", lambda: probe(kwargs, MLP(), Data(), candidates, steps=24, options=options(scratch)),
                    candidates, full)


# ---- Keras -----------------------------------------------------------------------------------------


def keras_run(scale: float, scratch: str) -> Outcome:
    import keras
    import numpy as np

    from wattwise.integrations.keras import EnergyCallback, probe

    rng = np.random.default_rng(0)
    n = int(98304 * scale)
    x, y = rng.standard_normal((n, 256), dtype=np.float32), rng.standard_normal((n, 1), dtype=np.float32)

    def model() -> keras.Model:
        keras.utils.set_random_seed(0)
        m = keras.Sequential([keras.Input((256,)), keras.layers.Dense(1024, activation="relu"),
                              keras.layers.Dense(1024, activation="relu"), keras.layers.Dense(1)])
        m.compile(optimizer="adam", loss="mse")
        return m

    def full(config: dict) -> Any:
        energy = EnergyCallback(**QUIET)
        model().fit(x, y, batch_size=config["batch_size"], epochs=6, validation_split=0.1, callbacks=[energy],
                    verbose=0)
        return energy.report

    candidates = [{"batch_size": 64}, {"batch_size": 256}, {"batch_size": 1024}]
    return _measure("keras", lambda: probe(model(), x, y, candidates, steps=24, epochs=6, validation_split=0.1,
                                           options=options(scratch)), candidates, full)


# ---- scoring ---------------------------------------------------------------------------------------


def _measure(name: str, run_probe: Callable[[], Any], candidates: list[dict], full: Callable[[dict], Any]) -> Outcome:
    started = time.monotonic()
    outcome = Outcome(name, run_probe())
    print(f"[{name}] probe: {outcome.result.probe_energy_j:.1f} J in {outcome.result.probe_duration_s:.1f} s",
          flush=True)
    for config in candidates:
        report = full(config)
        outcome.measured_j.append(report.energy_j)
        outcome.measured_s.append(report.duration_s)
        train = report.by_phase["train"]
        outcome.full_step_j.append(train.energy_j / train.steps)
        print(f"[{name}] full run {config}: {report.energy_j:.1f} J in {report.duration_s:.1f} s", flush=True)
    outcome.reprobe = run_probe()
    outcome.wall_s = time.monotonic() - started
    return outcome


def _step_j(candidate: Any) -> str:
    return "-" if candidate.energy_per_step_j is None else f"{candidate.energy_per_step_j:.3f}"


def _label(config: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in config.items())


def _ranks(values: list[float | None]) -> list[str]:
    known = sorted((v, i) for i, v in enumerate(values) if v is not None)
    ranks = ["-"] * len(values)
    for rank, (_, i) in enumerate(known, 1):
        ranks[i] = str(rank)
    return ranks


def score(outcome: Outcome) -> dict:
    cands = outcome.result.candidates
    projected = [c.projected_energy_j for c in cands]
    errors = [None if p is None else 100.0 * (p - m) / m for p, m in zip(projected, outcome.measured_j, strict=True)]
    held = [None if c.projected_energy_low_j is None else c.projected_energy_low_j <= m <= c.projected_energy_high_j
            for c, m in zip(cands, outcome.measured_j, strict=True)]
    pairs = agree = 0
    for i in range(len(cands)):
        for j in range(i + 1, len(cands)):
            a, b = outcome.measured_j[i], outcome.measured_j[j]
            if abs(a - b) / min(a, b) <= 0.10 or projected[i] is None or projected[j] is None:
                continue
            pairs += 1
            agree += (a < b) == (projected[i] < projected[j])
    probe_j = outcome.result.probe_energy_j
    return {"errors": errors, "held": held, "pairs": pairs, "agree": agree,
            "share_cheapest": probe_j / min(outcome.measured_j), "share_mean": probe_j / statistics.fmean(outcome.measured_j)}


def table(outcome: Outcome, scores: dict) -> list[str]:
    cands = outcome.result.candidates
    proj_rank, meas_rank = _ranks([c.projected_energy_j for c in cands]), _ranks(outcome.measured_j)
    lines = [f"### {outcome.name}", "",
             "| candidate | projected J (90% interval) | measured J | error | held | rank projected / measured "
             "| J/step: probe, full run, re-probe |",
             "|---|---|---|---|---|---|---|"]
    for i, c in enumerate(cands):
        if c.projected_energy_j is None:
            projected = f"- ({c.error or c.note})"
        else:
            projected = f"{c.projected_energy_j:.0f} ({c.projected_energy_low_j:.0f}-{c.projected_energy_high_j:.0f})"
        error = "-" if scores["errors"][i] is None else f"{scores['errors'][i]:+.1f}%"
        held = {True: "yes", False: "no", None: "-"}[scores["held"][i]]
        lines.append(f"| {_label(c.config)} | {projected} | {outcome.measured_j[i]:.0f} | {error} | {held} | "
                     f"{proj_rank[i]} / {meas_rank[i]} | {_step_j(c)}, {outcome.full_step_j[i]:.3f}, "
                     f"{_step_j(outcome.reprobe.candidates[i])} |")
    r = outcome.result
    lines += ["", f"probe: {r.probe_energy_j:.1f} J, {r.probe_duration_s:.1f} s = {100 * scores['share_cheapest']:.1f}% "
              f"of the cheapest full run, {100 * scores['share_mean']:.1f}% of the mean; ranking pairs (measured "
              f"> 10% apart) in the same order: {scores['agree']}/{scores['pairs']}; wall {outcome.wall_s:.0f} s", ""]
    return lines


RUNS = {"hf": hf, "pl": pl, "keras": keras_run}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated: " + ",".join(RUNS))
    parser.add_argument("--scale", type=float, default=1.0, help="dataset sizes x this (the full runs' length)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (write --threads=N)")
    parser.add_argument("--denormals", action="store_true", help="keep denormal floats (default: flushed to zero)")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(RUNS)
    import psutil
    import torch

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(not args.denormals)  # as forecast_accuracy.py: denormals double a step's cost

    print(f"# probe accuracy, {_dt.date.today().isoformat()}, {platform.processor() or platform.machine()}, "
          f"{psutil.cpu_count()} logical CPUs, load {os.getloadavg()[0]:.1f}; python {sys.version.split()[0]}; "
          f"scale {args.scale:g}; torch threads {torch.get_num_threads()}; "
          f"denormals {'kept' if args.denormals else 'flushed'}", flush=True)
    lines, all_errors, within, pairs, agree, shares = [], [], 0, 0, 0, []
    with tempfile.TemporaryDirectory(prefix="wattwise-probe-bench-") as scratch:
        for name in names:
            outcome = RUNS[name](args.scale, scratch)
            scores = score(outcome)
            lines += table(outcome, scores)
            known = [e for e in scores["errors"] if e is not None]
            all_errors += known
            within += sum(abs(e) <= 15.0 for e in known)
            pairs, agree = pairs + scores["pairs"], agree + scores["agree"]
            shares.append(scores["share_cheapest"])
    print("\n".join(lines))
    print(f"within 15%: {within}/{len(all_errors)} projections (median |error| "
          f"{statistics.median(abs(e) for e in all_errors) if all_errors else float('nan'):.1f}%); ranking: "
          f"{agree}/{pairs} pairs; probe share of the cheapest full run: "
          + ", ".join(f"{100 * s:.1f}%" for s in shares) + f"; load at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
