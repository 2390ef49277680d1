"""A child process for tests/test_lifecycle.py: train a tiny model offline with wattwise and send
this process a signal at training step 3 of many planned.

Usage: ``python interrupted.py FRAMEWORK OUTPUT_DIR [SIGNAL]``, FRAMEWORK one of ``track``,
``transformers``, ``lightning``, ``keras``; SIGNAL ``SIGTERM`` (default) or ``SIGINT``. The caller sets
``WATTWISE_REGISTRY`` (and, for Keras, ``KERAS_BACKEND``). ``MARKER`` lines on stdout say what was
reached: the signal sent, and (SIGINT only) the KeyboardInterrupt caught with the run's report.
"""

from __future__ import annotations

import os
import signal
import sys

SIGNAL_AT_STEP = 3
PLANNED_STEPS = 10_000
OPTIONS = dict(country_iso_code="FRA", print_summary=False, sources=("cpu", "ram"), window_s=0.01)


def send(sig: signal.Signals) -> None:
    print(f"MARKER sending {sig.name}", flush=True)
    os.kill(os.getpid(), sig)


def with_track(output_dir: str, sig: signal.Signals) -> None:
    import wattwise

    run = None
    try:
        with wattwise.track(planned_steps=PLANNED_STEPS, output_dir=output_dir, **OPTIONS) as run:
            total = 0.0
            for step in range(1, PLANNED_STEPS + 1):
                total += sum(i * i for i in range(2000))  # a little work per step
                run.step(samples=8)
                if step == SIGNAL_AT_STEP:
                    send(sig)
    except KeyboardInterrupt:
        report = run.report if run is not None else None
        print(f"MARKER KeyboardInterrupt partial={getattr(report, 'partial', None)}", flush=True)
        raise


def with_transformers(output_dir: str, sig: signal.Signals) -> None:
    import torch
    from datasets import Dataset
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

    from wattwise.integrations.transformers import EnergyCallback

    class Signal(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == SIGNAL_AT_STEP:
                send(sig)

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=1, n_head=2,
                                       bos_token_id=0, eos_token_id=0))
    ids = torch.randint(0, 64, (64, 16), generator=torch.Generator().manual_seed(0)).tolist()
    args = TrainingArguments(output_dir=output_dir, max_steps=PLANNED_STEPS, per_device_train_batch_size=4,
                             logging_steps=1000, save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_dict({"input_ids": ids, "labels": ids}),
                      callbacks=[EnergyCallback(**OPTIONS), Signal()])
    trainer.train()


def with_lightning(output_dir: str, sig: signal.Signals) -> None:
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from wattwise.integrations.lightning import EnergyCallback

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.mse_loss(self.layer(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    class Signal(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == SIGNAL_AT_STEP:
                send(sig)

        def on_exception(self, trainer, pl_module, exception):
            print(f"MARKER lightning on_exception {type(exception).__name__}", flush=True)

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(64, 4, generator=generator), torch.randn(64, 1, generator=generator))
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=PLANNED_STEPS, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=output_dir,
                         callbacks=[EnergyCallback(output_dir=output_dir, **OPTIONS), Signal()])
    trainer.fit(Tiny(), DataLoader(data, batch_size=8))


def with_keras(output_dir: str, sig: signal.Signals) -> None:
    import keras
    import numpy as np

    from wattwise.integrations.keras import EnergyCallback

    class Signal(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.steps = 0

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1
            if self.steps == SIGNAL_AT_STEP:
                send(sig)

    seeded = {"kernel_initializer": keras.initializers.GlorotUniform(seed=0)}
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu", **seeded),
                              keras.layers.Dense(1, **seeded)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    model.fit(x, x.sum(axis=1, keepdims=True), batch_size=8, epochs=PLANNED_STEPS // 8, verbose=0,
              callbacks=[EnergyCallback(output_dir=output_dir, **OPTIONS), Signal()])


FRAMEWORKS = {"track": with_track, "transformers": with_transformers, "lightning": with_lightning,
              "keras": with_keras}

if __name__ == "__main__":
    framework, out = sys.argv[1], sys.argv[2]
    FRAMEWORKS[framework](out, signal.Signals[sys.argv[3] if len(sys.argv) > 3 else "SIGTERM"])
    print("MARKER training ended normally", flush=True)
