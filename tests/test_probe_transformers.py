"""``probe`` for a Hugging Face ``Trainer``, through real (tiny GPT-2) training: what is left as it was, a
failing candidate, the planned run (fixed epochs or ``max_steps``, evaluation passes), exact figures on
a fake clock, and the advice a later ``train()`` gets from the probe."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState
from datasets import Dataset
from fakes import PROBE_WATTS, FakeClock, on_clock
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

from wattwise.integrations.transformers import EnergyCallback, probe
from wattwise.options import Options

VOCAB = 64
STEP_S = 0.25  # fake seconds per training step and per evaluation batch (``Ticking``)
EVAL_SETUP_S = 1.0
WATTS = PROBE_WATTS  # 25 J a step or batch, 100 J an evaluation's set-up


def tokens(n: int, seed: int) -> Dataset:
    ids = torch.randint(0, VOCAB, (n, 16), generator=torch.Generator().manual_seed(seed))
    return Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})


def tiny_model() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=16, n_layer=1, n_head=2))


class Ticking(Trainer):
    """A Trainer on a fake clock (each training step and evaluation batch lasts STEP_S); a batch larger
    than ``max_batch`` runs out of memory, as on a small GPU."""

    def __init__(self, *args, clock: FakeClock | None = None, max_batch: int = 1000, **kwargs) -> None:
        self.fake_clock, self.max_batch = clock, max_batch
        super().__init__(*args, **kwargs)

    def training_step(self, model, inputs, *args, **kwargs):
        if len(inputs["input_ids"]) > self.max_batch:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        if self.fake_clock is not None:
            self.fake_clock.now += STEP_S
        return super().training_step(model, inputs, *args, **kwargs)

    def evaluate(self, *args, **kwargs):
        if self.fake_clock is not None:
            self.fake_clock.now += EVAL_SETUP_S
        return super().evaluate(*args, **kwargs)

    def prediction_step(self, *args, **kwargs):
        if self.fake_clock is not None:
            self.fake_clock.now += STEP_S
        return super().prediction_step(*args, **kwargs)


def make_trainer(tmp_path, *, clock=None, callbacks=(), max_batch=1000, **overrides) -> Ticking:
    args = dict(per_device_train_batch_size=4, per_device_eval_batch_size=8, num_train_epochs=2, report_to="none",
                use_cpu=True, disable_tqdm=True, save_strategy="no", logging_steps=4)
    args.update(overrides)
    return Ticking(model=tiny_model(), args=TrainingArguments(str(tmp_path / "out"), **args),
                   train_dataset=tokens(64, 0), eval_dataset=tokens(16, 1), callbacks=list(callbacks),
                   clock=clock, max_batch=max_batch)


def test_objects_are_left_as_they_were_and_an_out_of_memory_candidate_is_reported(tmp_path):
    energy = EnergyCallback(country_iso_code="FRA", print_summary=False)
    trainer = make_trainer(tmp_path, callbacks=[energy], max_batch=8)
    model = trainer.model
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    arguments = trainer.args.to_dict()
    callbacks = list(trainer.callback_handler.callbacks)
    state = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    precision = AcceleratorState().mixed_precision

    result = probe(trainer, {"per_device_train_batch_size": [4, 16], "bf16": [False, True]}, steps=6,
                   options=Options(country_iso_code="FRA", output_dir=str(tmp_path / "probe")))

    errors = {c.config["per_device_train_batch_size"]: c.error for c in result.candidates}
    assert errors[4] is None and errors[16].startswith("OutOfMemoryError: CUDA out of memory")
    assert all(c.steps == 6 and c.samples == 24 for c in result.candidates if c.ran)
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert all(p.dtype == torch.float32 and p.grad is None for p in model.parameters())
    assert "forward" not in vars(model)  # accelerate's bf16 autocast wrapper is gone
    assert trainer.args.to_dict() == arguments and trainer.optimizer is None
    assert trainer.callback_handler.callbacks == callbacks and trainer.state.global_step == 0
    assert AcceleratorState().mixed_precision == precision
    assert torch.equal(state[0], torch.get_rng_state()) and state[1] == random.getstate()
    assert np.array_equal(state[2], np.random.get_state()[1])
    assert energy.reports == []  # the user's EnergyCallback saw none of the probe's training
    assert (tmp_path / "probe" / "wattwise" / "probe.json").exists()
    trainer.train()  # and the trainer still trains, as configured
    assert energy.report.train_steps == 32 and energy.report.framework == "transformers"


def test_the_plan_follows_epochs_or_max_steps_and_the_evaluation_schedule(steady, tmp_path):
    grid = {"per_device_train_batch_size": [4, 8]}
    epochs = probe(make_trainer(tmp_path, clock=steady, eval_strategy="epoch"), grid, steps=6,
                   options=Options(country_iso_code="FRA", write_files=False))
    four, eight = epochs.candidates
    assert (four.planned_steps, eight.planned_steps) == (32, 16)  # 2 epochs of 64 samples
    assert (four.eval_passes, eight.eval_passes) == (2, 2)  # each epoch's end
    # exact on the fake clock: 25 J a step; a pass of 2 batches of 8: 100 J set-up + 2 x 25 J
    assert four.projected_energy_j == pytest.approx(32 * 25.0 + 2 * 150.0)
    assert eight.projected_energy_j == pytest.approx(16 * 25.0 + 2 * 150.0)
    assert four.energy_per_sample_j == pytest.approx(25.0 / 4)
    assert epochs.best.config == {"per_device_train_batch_size": 8}

    steps = probe(make_trainer(tmp_path, clock=steady, max_steps=20, eval_strategy="steps", eval_steps=5,
                               gradient_accumulation_steps=2), grid, steps=6,
                  options=Options(country_iso_code="FRA", write_files=False))
    assert [c.planned_steps for c in steps.candidates] == [20, 20]
    assert [c.eval_passes for c in steps.candidates] == [4, 4]
    assert [c.samples for c in steps.candidates] == [6 * 2 * 4, 6 * 2 * 8]  # accumulation: 2 batches a step


def test_a_later_train_is_advised_from_the_probe(steady, tmp_path):
    trainer = make_trainer(tmp_path, clock=steady)
    energy = on_clock(EnergyCallback(country_iso_code="FRA", print_summary=False, write_files=False), steady,
                      "transformers")
    trainer.add_callback(energy)
    result = probe(trainer, {"per_device_train_batch_size": [4, 8]}, steps=6,
                   options=Options(country_iso_code="FRA", write_files=False))
    assert result.best.config == {"per_device_train_batch_size": 8}
    trainer.train()
    [advice] = [r for r in energy.report.recommendations if r.rule == "probed_configuration"]
    assert advice.confidence == "high" and advice.saving_pct == pytest.approx(50.0)  # half the steps, same cost
    assert advice.change == {"transformers": "TrainingArguments(per_device_train_batch_size=8)"}


def test_unknown_candidate_fields_raise(tmp_path):
    with pytest.raises(ValueError, match="not TrainingArguments fields"):
        probe(make_trainer(tmp_path), {"batch_size": [4]}, steps=6)
