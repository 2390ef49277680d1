"""Accuracy of wattwise's early energy forecast against a carbontracker-style baseline, on real CPU runs.

Run:  python benchmarks/forecast_accuracy.py [--only NAME,NAME] [--window-s 0.05] [--detail]

Eleven training runs (about 20-60 s each on a 2-core CPU, offline; about 8 minutes in all) across the
three integrations, each with the real ``EnergyCallback`` (``print_summary=False``,
``write_files=False``, ``registry=False``) and a planned step count the framework knows
(``max_steps``, or epochs x batches):

- ``hf-steady``       HF Trainer, tiny GPT-2 built from a config, fixed sequence length, no evaluation, 800 steps;
- ``hf-eval``         same, evaluating every 10 steps (evaluation is about 23% of the energy);
- ``hf-varlen``       same, 500 steps, sequence length drawn per sample (8-256 tokens, log-uniform): batch cost varies;
                      every HF run sets ``include_num_input_tokens_seen="all"``, so wattwise knows each step's tokens;
- ``hf-compile``      same as hf-steady with ``torch_compile=True``: TorchInductor compiles the model on the first step;
- ``pl-compile``      Lightning MLP compiled with ``torch.compile``, 10 epochs of 300 steps;
- ``pl-epochs``       Lightning, 20 epochs of 200 steps (one epoch = 5% of the plan), validation every epoch;
- ``pl-cache``        Lightning, 10 epochs of 300 steps from a data set whose items cost about 1 ms each to
                      make and are cached once made, drawn at random: most draws miss at first, about 5%
                      after 2% of the plan (a warm-up spread over many windows, as a cache fills);
- ``pl-midval``       Lightning, 10 epochs of 200 steps, validating 4 times per epoch (``val_check_interval=0.25``);
- ``keras-epochs``    Keras (KERAS_BACKEND=torch), 20 epochs of 120 steps with a validation split;
- ``keras-steady``    Keras, one epoch of 4500 steps, no validation;
- ``keras-compile``   Keras with ``jit_compile=True`` (``torch.compile`` of the train step), 10 epochs of 300 steps.

The three compiled runs are the warm-up-heavy shape, with real compilation (TorchInductor generates
and builds C++ kernels in worker processes, which the CPU estimate counts as the run's children):
the first step costs 20-150 J, a tenth to two fifths of the run. TorchInductor's cache is pointed at a
fresh directory for each invocation (``TORCHINDUCTOR_CACHE_DIR``, unless set), so every invocation
compiles from cold, as a first run of a model does.

Why this long: at 5-20 s a run, 10% of it (0.5-2 s) fell inside the process's start-up transient
(allocator, thread pools, first-iteration caches, Keras tracing), a share of the run that no real
training run has. The runs were lengthened with the same shapes (more steps or epochs).

Denormals: torch runs with denormal floats flushed to zero (``torch.set_flush_denormal(True)``,
``--denormals`` to keep them). On an Intel Xeon (2026-12-02), the MLP runs' arithmetic drifts
into denormal floats within 10-20 s, after which a step costs about twice the CPU time
(bare Keras, no callback: 20 ms a step for the first 40% of 1000 steps, 44 ms in the last 20%; with
flushing, 21 ms throughout). That doubles the later steps' energy, which no forecast made from the
first 10% (wattwise's or the baseline's) can foresee, and which a real run on data that keeps its
gradients away from 1e-38 (or on a GPU, which flushes by default) does not have. The earlier tables
were made on an AMD EPYC, where denormals cost little.

Measurement windows: the forecaster needs at least 5 windows (the first is always dropped as
start-up), so every run uses ``window_s=0.05`` (changeable with ``--window-s``), not the default
0.5 s: at 5% of a 25 s run, 0.5 s windows would be too few.

Scores, at the 5% and 10% milestones of ``report.forecasts`` (the forecast the run made when
training first reached that fraction of the plan, at step ``at_step``):

- wattwise error: ``error_pct`` of that milestone (forecast vs the measured ``report.energy_j``);
- baseline error: carbontracker's rule. For a multi-epoch run where at least one whole epoch has
  ended by the milestone's ``at_step`` (its fraction f of the plan, or later when the milestone was
  filled after it): energy of the first k = floor(f x epochs) epochs (validation included) x epochs / k. Otherwise (single-epoch runs): energy up to ``at_step`` x planned / at_step,
  i.e. the same steps wattwise had seen. The energy at a step or epoch end is recorded by a small
  probe callback added to every run, with its own ``EnergyMeter`` over the same sources as the
  session (opened at train begin, read at every training step end and epoch end, and at train
  end); the baseline error is taken against that probe's own total, so baseline and truth share one
  meter (the probe's total differs from ``report.energy_j`` by well under 1%; the table prints both).
- interval held: whether [energy_low_j, energy_high_j] of the milestone contains ``report.energy_j``.

The logged stream (what users see in their logger, scored as issue 13 asks): every forecast the
callback logged (``Run.metrics`` as the framework called it: HF and Lightning at log steps, Keras at
each window's batch log and at epoch ends) from 5% of the plan on, against the measured total:
whether its 90% interval held the total; the first one logged past 10% of the plan (set beside the
baseline's error at 10%); and the worst one logged past 10%.

A milestone without a forecast counts as missing and prints as "-". The session fills a milestone
reached during warm-up (or with too few windows) with the first forecast made before the next
milestone; ``--detail`` prints the step each was made at.
Everything is offline and on the CPU (``CUDA_VISIBLE_DEVICES=""``).
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:  # compile from cold in every invocation (see above)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="wattwise-bench-inductor-")
    atexit.register(shutil.rmtree, os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)

import torch  # noqa: E402

# Denormal floats flushed to zero (as GPUs do by default), before any thread pool starts so that its
# threads inherit it; --denormals keeps them (see "Denormals" in the docstring).
DENORMALS = "--denormals" in sys.argv
torch.set_flush_denormal(not DENORMALS)

from forecast_replay import logged_stream_score, pct, recorded_points  # noqa: E402  (benchmarks/, the script's directory)

from wattwise.config import Config  # noqa: E402
from wattwise.meter import EnergyMeter  # noqa: E402
from wattwise.sources import open_sources  # noqa: E402

MILESTONES = (0.05, 0.10)


# ---- the probe: cumulative energy at step and epoch ends, on a meter of its own ---------------------


class Probe:
    """Framework-neutral recorder; each framework's small callback below drives it."""

    def __init__(self) -> None:
        self.meter: EnergyMeter | None = None
        self.start_j = 0.0
        self.at_step: dict[int, float] = {}  # global step -> joules since train begin
        self.at_epoch: list[float] = []  # joules since train begin at each epoch end
        self.total_j = 0.0
        self.step = 0

    def begin(self) -> None:
        self.meter = EnergyMeter(open_sources(Config().sources, node_leader=True).sources)
        self.start_j = self.meter.read().total_j

    def _now(self) -> float:
        return self.meter.read().total_j - self.start_j

    def step_end(self) -> None:
        self.step += 1
        self.at_step[self.step] = self._now()

    def epoch_end(self) -> None:
        self.at_epoch.append(self._now())

    def end(self) -> None:
        self.total_j = self._now()
        self.meter.close()


def hf_probe(probe: Probe):
    from transformers import TrainerCallback

    class HFProbe(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            probe.begin()

        def on_step_end(self, args, state, control, **kwargs):
            probe.step_end()

        def on_epoch_end(self, args, state, control, **kwargs):
            probe.epoch_end()

        def on_train_end(self, args, state, control, **kwargs):
            probe.end()

    return HFProbe()


def pl_probe(probe: Probe):
    import lightning.pytorch as pl

    class PLProbe(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            probe.begin()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            probe.step_end()

        def on_train_epoch_end(self, trainer, pl_module):  # after the epoch's validation in Lightning 2
            probe.epoch_end()

        def on_train_end(self, trainer, pl_module):
            probe.end()

    return PLProbe()


def keras_probe(probe: Probe):
    import keras

    class KerasProbe(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            probe.begin()

        def on_train_batch_end(self, batch, logs=None):
            probe.step_end()

        def on_epoch_end(self, epoch, logs=None):  # after the epoch's validation
            probe.epoch_end()

        def on_train_end(self, logs=None):
            probe.end()

    return KerasProbe()


# ---- the runs ---------------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    framework: str
    shape: str
    planned: int
    epochs: int
    seconds: float
    report: object
    probe: Probe
    logged: Logged | None = None
    milestones: dict[float, dict] = field(default_factory=dict)


class Logged:
    """Every forecast the callback handed to the framework's logging (``Run.metrics``), with the
    training step it was logged at: what a user sees in TensorBoard, the console or W&B.

    It also keeps what the run's forecaster was given (its windows and evaluation passes, in order)
    and what each forecast was asked with, so that ``--record DIR`` can write them for
    ``benchmarks/forecast_replay.py`` to project again with another forecaster, on the same input."""

    def __init__(self, energy) -> None:
        self.events: list[list] = []  # ["window", steps, J, s, work] or ["eval", J, s], as fed to the forecaster
        self.asked: list[dict] = []  # each forecast made: the events it saw, the totals and the plan
        # each training log: [index into asked of the forecast it showed, step, kWh, low kWh, high kWh],
        # the kWh None for a log without a forecast (warm-up, too few windows)
        self.logged: list[list] = []
        run = energy.runs.run  # the callback's first run: the one this benchmark's single call uses
        forecaster = run.projection.forecaster
        real_metrics, real_window, real_pass, real_forecast = (
            run.metrics, forecaster.add_window, forecaster.add_eval_pass, forecaster.forecast)

        def metrics(*args, **kwargs):
            metrics = real_metrics(*args, **kwargs)
            step = run.ledger.phases["train"].steps
            shown = [metrics.get(f"energy/forecast{key}_kwh") for key in ("", "_low", "_high")]
            if shown[0] is not None or run.current_phase == "train":  # a forecast, or a training log without
                self.logged.append([len(self.asked) - 1, step, *shown])
            return metrics

        def add_window(steps, energy_j, duration_s, work=None):
            self.events.append(["window", steps, energy_j, duration_s, work])
            real_window(steps, energy_j, duration_s, work)

        def add_eval_pass(energy_j, duration_s):
            self.events.append(["eval", energy_j, duration_s])
            real_pass(energy_j, duration_s)

        def forecast(energy_so_far_j=None, duration_so_far_s=None):
            self.asked.append({"events": len(self.events), "energy_so_far_j": energy_so_far_j,
                               "duration_so_far_s": duration_so_far_s, "planned_steps": forecaster.planned_steps,
                               "eval_every_steps": forecaster.eval_every_steps})
            return real_forecast(energy_so_far_j, duration_so_far_s)

        run.metrics = metrics
        forecaster.add_window, forecaster.add_eval_pass, forecaster.forecast = add_window, add_eval_pass, forecast

    def record(self, result: Result) -> dict:
        """What ``--record`` writes for one run."""
        return {"name": result.name, "framework": result.framework, "shape": result.shape,
                "planned_steps": result.planned, "energy_j": result.report.energy_j, "events": self.events,
                "asked": self.asked, "logged": self.logged}


def energy_options(window_s: float) -> dict:
    return {"print_summary": False, "write_files": False, "window_s": window_s, "country_iso_code": "FRA",
            "registry": False}  # benchmark runs stay out of the user's run registry


def _hf(name: str, shape: str, window_s: float, *, max_steps: int, eval_steps: int | None = None,
        varlen: bool = False, compile: bool = False) -> tuple:
    from datasets import Dataset
    from transformers import GPT2Config, GPT2LMHeadModel, PrinterCallback, Trainer, TrainingArguments

    from wattwise.integrations.transformers import EnergyCallback

    vocab, length = 128, 64

    def tokens(n: int, seed: int) -> Dataset:
        g = torch.Generator().manual_seed(seed)
        if not varlen:
            ids = torch.randint(0, vocab, (n, length), generator=g).tolist()
        else:  # log-uniform lengths 8..256: the cost of a batch varies several-fold
            lengths = torch.exp(torch.empty(n).uniform_(math.log(8), math.log(256), generator=g)).long()
            ids = [torch.randint(0, vocab, (int(k),), generator=g).tolist() for k in lengths]
        return Dataset.from_dict({"input_ids": ids, "labels": ids})

    def collate(rows):
        longest = max(len(r["input_ids"]) for r in rows)
        ids = torch.zeros(len(rows), longest, dtype=torch.long)
        labels = torch.full((len(rows), longest), -100, dtype=torch.long)
        mask = torch.zeros(len(rows), longest, dtype=torch.long)
        for i, r in enumerate(rows):
            k = len(r["input_ids"])
            ids[i, :k] = torch.tensor(r["input_ids"])
            labels[i, :k] = torch.tensor(r["labels"])
            mask[i, :k] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    config = GPT2Config(vocab_size=vocab, n_positions=256, n_embd=128, n_layer=2, n_head=4, bos_token_id=0,
                        eos_token_id=0)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    args = TrainingArguments(
        output_dir=os.path.join(os.environ.get("TMPDIR", "/tmp"), f"wattwise-bench-{name}"),
        max_steps=max_steps, per_device_train_batch_size=8, per_device_eval_batch_size=16,
        logging_steps=25, eval_strategy="steps" if eval_steps else "no", eval_steps=eval_steps,
        save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, seed=0, torch_compile=compile,
        include_num_input_tokens_seen="all",  # HF counts each step's tokens (padding included): the forecast uses them
    )
    energy, probe = EnergyCallback(**energy_options(window_s)), Probe()
    logged = Logged(energy)
    trainer = Trainer(model=model, args=args, train_dataset=tokens(8 * max_steps, 0),  # one epoch
                      eval_dataset=tokens(96, 1) if eval_steps else None, data_collator=collate,
                      callbacks=[energy, hf_probe(probe)])
    trainer.remove_callback(PrinterCallback)  # the log dicts printed on stdout
    trainer.train()
    return "transformers", shape, energy.report, probe, 1, logged


def _pl(name: str, shape: str, window_s: float, *, epochs: int, batches: int, val_batches: int = 0,
        compile: bool = False, cache: bool = False, val_check_interval: float | None = None) -> tuple:
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, Dataset, RandomSampler, TensorDataset

    from wattwise.integrations.lightning import EnergyCallback

    features, classes, batch = 64, 10, 64

    def data(n: int, seed: int, shuffle: bool) -> DataLoader:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, features, generator=g)
        y = torch.randint(0, classes, (n,), generator=g)
        return DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=shuffle)

    class Cached(Dataset):
        """A data set whose items are expensive to make and cached once made (decoding, tokenizing):
        drawn at random with replacement, most draws miss the cache at first, few after about 2% of
        the plan's samples (a warm-up over many windows, not one slow first step)."""

        def __init__(self, items: int) -> None:
            self.items, self.cache = items, {}

        def __len__(self) -> int:
            return self.items

        def __getitem__(self, i: int):
            if i not in self.cache:
                g = torch.Generator().manual_seed(i)
                m = torch.randn(192, 192, generator=g)
                for _ in range(6):  # about 1 ms of CPU work per new item
                    m = torch.tanh(m @ m / 192.0)
                self.cache[i] = (m[0, :features].clone(), int(m[1, 0].abs().item() * 1000) % classes)
            return self.cache[i]

    def cached_data() -> DataLoader:
        dataset = Cached(items=max(int(0.02 * epochs * batches * batch / 3), batch))  # ~95% hits after 2%
        sampler = RandomSampler(dataset, replacement=True, num_samples=batches * batch,
                                generator=torch.Generator().manual_seed(0))
        return DataLoader(dataset, batch_size=batch, sampler=sampler)

    class MLP(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(features, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024), torch.nn.ReLU(),
                torch.nn.Linear(1024, classes),
            )

        def training_step(self, b, i):
            x, y = b
            return torch.nn.functional.cross_entropy(self.net(x), y)

        def validation_step(self, b, i):
            x, y = b
            self.log("val_loss", torch.nn.functional.cross_entropy(self.net(x), y))

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    energy, probe = EnergyCallback(**energy_options(window_s)), Probe()
    logged = Logged(energy)
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=epochs, logger=False, enable_checkpointing=False,
        enable_model_summary=False, enable_progress_bar=False, callbacks=[energy, pl_probe(probe)],
        limit_val_batches=None if val_batches else 0, num_sanity_val_steps=0,
        val_check_interval=val_check_interval,
        default_root_dir=os.path.join(os.environ.get("TMPDIR", "/tmp"), f"wattwise-bench-{name}"),
    )
    torch.manual_seed(0)
    module = torch.compile(MLP()) if compile else MLP()
    train = cached_data() if cache else data(batches * batch, 0, True)
    trainer.fit(module, train, data(val_batches * batch, 1, False) if val_batches else None)
    return "lightning", shape, energy.report, probe, epochs, logged


def _keras(name: str, shape: str, window_s: float, *, epochs: int, batches: int, validation: float = 0.0,
           compile: bool = False) -> tuple:
    import keras
    import numpy as np

    from wattwise.integrations.keras import EnergyCallback

    features, classes, batch = 64, 10, 64
    n = int(round(batches * batch / (1.0 - validation)))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, features)).astype("float32")
    y = rng.integers(0, classes, size=n).astype("int32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((features,)), keras.layers.Dense(1024, activation="relu"),
        keras.layers.Dense(1024, activation="relu"), keras.layers.Dense(classes),
    ])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=compile)
    energy, probe = EnergyCallback(**energy_options(window_s)), Probe()
    logged = Logged(energy)
    model.fit(x, y, batch_size=batch, epochs=epochs, validation_split=validation, verbose=0,
              callbacks=[energy, keras_probe(probe)])
    return "keras", shape, energy.report, probe, epochs, logged


RUNS: dict[str, Callable[[str, float], tuple]] = {
    "hf-steady": lambda n, w: _hf(n, "steady", w, max_steps=800),
    "hf-eval": lambda n, w: _hf(n, "eval-heavy (every 10 steps)", w, max_steps=800, eval_steps=10),
    "hf-varlen": lambda n, w: _hf(n, "variable seq length", w, max_steps=500, varlen=True),
    "hf-compile": lambda n, w: _hf(n, "warm-up: torch_compile", w, max_steps=800, compile=True),
    "pl-compile": lambda n, w: _pl(n, "warm-up: torch.compile, 10 epochs", w, epochs=10, batches=300, compile=True),
    "pl-epochs": lambda n, w: _pl(n, "multi-epoch (20) + val", w, epochs=20, batches=200, val_batches=50),
    "pl-cache": lambda n, w: _pl(n, "warm-up over many windows: data cache filling", w, epochs=10, batches=300,
                                 cache=True),
    "pl-midval": lambda n, w: _pl(n, "validation 4x per epoch (mid-epoch)", w, epochs=10, batches=200,
                                  val_batches=25, val_check_interval=0.25),
    "keras-epochs": lambda n, w: _keras(n, "multi-epoch (20) + val", w, epochs=20, batches=120, validation=0.2),
    "keras-steady": lambda n, w: _keras(n, "steady", w, epochs=1, batches=4500),
    "keras-compile": lambda n, w: _keras(n, "warm-up: jit_compile, 10 epochs", w, epochs=10, batches=300,
                                         compile=True),
}


# ---- scoring ----------------------------------------------------------------------------------------


def baseline_error(result: Result, fraction: float, at_step: int | None) -> float | None:
    """carbontracker-style extrapolation error (percent) at a milestone, against the probe's total."""
    probe, total = result.probe, result.probe.total_j
    if total <= 0:
        return None
    # the epochs finished by the step the milestone's forecast was made at (a milestone filled after
    # its fraction, when wattwise had no forecast yet at the crossing, gives the baseline as many steps)
    seen = at_step / result.planned if at_step and result.planned else fraction
    k = math.floor(seen * result.epochs + 1e-9)
    if result.epochs > 1 and k >= 1 and len(probe.at_epoch) >= k:
        projected = probe.at_epoch[k - 1] * result.epochs / k
    elif at_step and at_step in probe.at_step:
        projected = probe.at_step[at_step] * result.planned / at_step
    else:
        return None
    return 100.0 * (projected - total) / total


def score(result: Result) -> dict:
    row: dict = {}
    by_fraction = {round(m["fraction"], 4): m for m in (result.report.forecasts or [])}
    for fraction in MILESTONES:
        m = by_fraction.get(round(fraction, 4))
        ww = m["error_pct"] if m and m["energy_j"] is not None else None
        held = None
        if m and m["energy_j"] is not None:
            held = m["energy_low_j"] <= result.report.energy_j <= m["energy_high_j"]
        row[fraction] = {
            "ww": ww, "base": baseline_error(result, fraction, m["at_step"] if m else None), "held": held,
            "at_step": m["at_step"] if m else None,
        }
    return row


def logged_score(result: Result) -> dict:
    """The logged stream: every forecast logged from 5% of the plan on (error against the measured
    total, whether its interval holds it), the first logged past 10%, the worst logged past 10%."""
    points, blank = recorded_points({"logged": result.logged.logged})
    return logged_stream_score(points, blank, result.report.energy_j, result.planned)


def logged_table(results: list[Result], logged: list[dict], scores: list[dict]) -> list[str]:
    head = ["run", "logged past 5%", "intervals holding the total", "first past 10% (step)", "base@10%",
            "worst past 10%", "logs past 10% with a forecast"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r, g, s in zip(results, logged, scores, strict=True):
        held = f"{g['held']}/{g['n']}" if g["n"] else "-"
        first = "-" if g["first10"] is None else f"{g['first10']:+.1f}% ({g['first10_step']})"
        lines.append(f"| {r.name} | {g['n']} | {held} | {first} | {pct(s[0.10]['base'])} | {pct(g['worst10'])} | "
                     f"{g['shown10']}/{g['logs10']} |")
    return lines


def logged_summary(results: list[Result], logged: list[dict], scores: list[dict]) -> list[str]:
    firsts = [abs(g["first10"]) for g in logged if g["first10"] is not None]
    worst = [abs(g["worst10"]) for g in logged if g["worst10"] is not None]
    held, n = sum(g["held"] for g in logged), sum(g["n"] for g in logged)
    lines = [
        f"logged stream: median |error| of the first forecast logged past 10%: "
        f"{statistics.median(firsts) if firsts else math.nan:.1f}% (target <= 5%; n={len(firsts)})",
        f"logged stream: worst |error| of any forecast logged past 10%: {max(worst, default=math.nan):.1f}% "
        f"(target <= 25%)",
        f"logged stream: intervals logged past 5% holding the total: {held}/{n} = "
        f"{(held / n if n else math.nan):.0%} (target >= 85%)",
        f"logged stream: training logs past 10% that showed a forecast: {sum(g['shown10'] for g in logged)}/"
        f"{sum(g['logs10'] for g in logged)} (none is shown while a warm-up is still getting cheaper)",
    ]
    for r, g, s in zip(results, logged, scores, strict=True):
        base = s[0.10]["base"]
        if g["first10"] is None or base is None:
            continue
        ratio = abs(base) / max(abs(g["first10"]), 1e-9)
        steady = "steady" in r.shape
        target = "<= 1.25x the baseline's error" if steady else ">= 2x better than the baseline"
        met = abs(g["first10"]) <= 1.25 * abs(base) if steady else ratio >= 2.0
        lines.append(f"  {r.name}: baseline / wattwise at the first log past 10% = {ratio:.2f}x "
                     f"({target}: {'met' if met else 'NOT met'})")
    return lines


def all_milestones_held(result: Result) -> list[bool]:
    return [m["energy_low_j"] <= result.report.energy_j <= m["energy_high_j"]
            for m in (result.report.forecasts or []) if m["energy_j"] is not None]


def yes_no(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "NO")


def table(results: list[Result], scores: list[dict]) -> list[str]:
    head = ["run", "framework", "shape", "steps", "time s", "energy J", "ww@5%", "base@5%", "ww@10%",
            "base@10%", "held@5%", "held@10%"]
    rows = []
    for r, s in zip(results, scores, strict=True):
        rows.append([
            r.name, r.framework, r.shape, str(r.planned), f"{r.seconds:.1f}", f"{r.report.energy_j:.1f}",
            pct(s[0.05]["ww"]), pct(s[0.05]["base"]), pct(s[0.10]["ww"]), pct(s[0.10]["base"]),
            yes_no(s[0.05]["held"]), yes_no(s[0.10]["held"]),
        ])
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def summary(results: list[Result], scores: list[dict]) -> list[str]:
    lines = []
    for fraction in MILESTONES:
        ww = [abs(s[fraction]["ww"]) for s in scores if s[fraction]["ww"] is not None]
        base = [abs(s[fraction]["base"]) for s in scores if s[fraction]["base"] is not None]
        missing = sum(s[fraction]["ww"] is None for s in scores)
        mw = statistics.median(ww) if ww else math.nan
        mb = statistics.median(base) if base else math.nan
        ratio = mb / mw if ww and base and mw > 0 else math.nan
        lines.append(
            f"at {fraction:.0%}: median |error| wattwise {mw:.1f}% (n={len(ww)}, missing {missing}), "
            f"baseline {mb:.1f}% (n={len(base)}); baseline / wattwise = {ratio:.2f}x"
        )
    held = [s[f]["held"] for s in scores for f in MILESTONES if s[f]["held"] is not None]
    every = [h for r in results for h in all_milestones_held(r)]
    lines.append(f"90% interval coverage at 5% and 10%: {sum(held)}/{len(held)} = "
                 f"{(sum(held) / len(held) if held else math.nan):.0%}")
    lines.append(f"90% interval coverage, all milestones (1-50%): {sum(every)}/{len(every)} = "
                 f"{(sum(every) / len(every) if every else math.nan):.0%}")
    gap = [abs(r.probe.total_j - r.report.energy_j) / r.report.energy_j for r in results if r.report.energy_j]
    lines.append(f"probe meter vs report.energy_j: largest difference {100 * max(gap, default=0):.2f}%")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated run names (default: all): " + ",".join(RUNS))
    parser.add_argument("--window-s", type=float, default=0.05)
    parser.add_argument("--detail", action="store_true", help="also print every milestone of every run")
    parser.add_argument("--denormals", action="store_true", help="keep denormal floats (default: flushed to zero)")
    parser.add_argument("--record", metavar="DIR", help="write each run's forecaster input and logged forecasts "
                        "to DIR/<run>.json (for benchmarks/forecast_replay.py)")
    cli = parser.parse_args()
    names = [n for n in cli.only.split(",") if n] or list(RUNS)
    warnings.filterwarnings("ignore")
    import logging

    for noisy in ("lightning", "lightning.pytorch", "transformers", "wattwise"):
        logging.getLogger(noisy).setLevel(logging.ERROR)

    results: list[Result] = []
    for name in names:
        began = time.perf_counter()
        framework, shape, report, probe, epochs, logged = RUNS[name](name, cli.window_s)
        seconds = time.perf_counter() - began
        results.append(Result(name, framework, shape, report.planned_steps or 0, epochs, seconds, report, probe,
                              logged))
        if cli.record:
            os.makedirs(cli.record, exist_ok=True)
            with open(os.path.join(cli.record, f"{name}.json"), "w") as out:
                json.dump(logged.record(results[-1]), out)
        print(f"{name}: {seconds:.1f} s, {report.train_steps}/{report.planned_steps} steps, "
              f"{report.energy_j:.1f} J (eval {report.by_phase['eval'].energy_j if 'eval' in report.by_phase else 0:.1f} J)",
              file=sys.stderr, flush=True)
        if cli.detail:
            steps = sorted(probe.at_step)
            last, tenth, half = steps[-1], max(len(steps) // 10, 1), len(steps) // 2
            print(f"    J/step: first step (with set-up) {probe.at_step[1]:.2f}, steps 2-{tenth} "
                  f"{(probe.at_step[tenth] - probe.at_step[1]) / max(tenth - 1, 1):.3f}, second half "
                  f"{(probe.at_step[last] - probe.at_step[half]) / max(last - half, 1):.3f}; after the last step "
                  f"{probe.total_j - probe.at_step[last]:.2f} J", file=sys.stderr)
            for m in report.forecasts:
                est = "-" if m["energy_j"] is None else (
                    f"{m['energy_j']:.1f} [{m['energy_low_j']:.1f}, {m['energy_high_j']:.1f}]")
                print(f"    {m['fraction']:.0%} at step {m['at_step']}: {est} err {pct(m['error_pct'])}",
                      file=sys.stderr)

    scores = [score(r) for r in results]
    print()
    print(f"window_s={cli.window_s}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, denormals {'kept' if DENORMALS else 'flushed'}, load {os.getloadavg()[0]:.1f}")
    print("\n".join(table(results, scores)))
    print()
    print("\n".join(summary(results, scores)))
    logged = [logged_score(r) for r in results]
    print()
    print("\n".join(logged_table(results, logged, scores)))
    print()
    print("\n".join(logged_summary(results, logged, scores)))


if __name__ == "__main__":
    main()
