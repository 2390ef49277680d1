"""``probe`` for Lightning, through real (tiny) fits: what is left as it was, a failing candidate, the
planned run (fixed epochs or ``max_steps``, validation passes) and exact figures on a fake clock."""

from __future__ import annotations

import importlib
import random

import pytest
import torch
from fakes import PROBE_WATTS, FakeClock
from torch.utils.data import DataLoader, TensorDataset

from wattwise.integrations.lightning import probe
from wattwise.options import Options

L = importlib.import_module("lightning.pytorch")
STEP_S = 0.25  # fake seconds a training step or a validation batch: 25 J at 100 W
WATTS = PROBE_WATTS


class Tiny(L.LightningModule):
    def __init__(self, clock: FakeClock | None = None) -> None:
        super().__init__()
        self.net = torch.nn.Linear(8, 1)
        self.clock = clock

    def _tick(self) -> None:
        if self.clock is not None:
            self.clock.now += STEP_S

    def training_step(self, batch, batch_idx):
        self._tick()
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        self._tick()
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Data(L.LightningDataModule):
    def __init__(self, batch_size: int = 8) -> None:
        super().__init__()
        self.batch_size = batch_size

    def setup(self, stage=None):
        g = torch.Generator().manual_seed(0)
        self.train_set = TensorDataset(torch.randn(64, 8, generator=g), torch.randn(64, 1, generator=g))
        self.val_set = TensorDataset(torch.randn(16, 8, generator=g), torch.randn(16, 1, generator=g))

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.batch_size)


TRAINER = {"max_epochs": 2, "accelerator": "cpu", "logger": False, "enable_progress_bar": False}


def test_objects_are_left_as_they_were_and_a_failing_candidate_is_reported(tmp_path):
    torch.manual_seed(0)
    model, data = Tiny(), Data()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    attributes = dict(vars(data))
    state = (torch.get_rng_state(), random.getstate())
    result = probe({**TRAINER, "default_root_dir": str(tmp_path)}, model, data,
                   {"batch_size": [4, 16], "precision": ["32-true", "bf16-mixed", "no-such-precision"]}, steps=6,
                   options=Options(country_iso_code="FRA"))
    failed = [c for c in result.candidates if not c.ran]
    assert {c.config["precision"] for c in failed} == {"no-such-precision"} and len(failed) == 2
    assert all(c.steps == 6 and c.samples == 6 * c.config["batch_size"] for c in result.candidates if c.ran)
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert model._trainer is None and model.training
    assert dict(vars(data)) == attributes and data.batch_size == 8
    assert torch.equal(state[0], torch.get_rng_state()) and state[1] == random.getstate()
    assert (tmp_path / "wattwise" / "probe.json").exists()
    by = {(c.config["batch_size"], c.config["precision"]): c for c in result.candidates}
    assert by[(16, "bf16-mixed")].setup == {"batch_size": 16, "precision": "bf16"}


def test_the_plan_follows_epochs_or_max_steps_with_validation_passes(steady, tmp_path):
    model, data = Tiny(steady), Data()
    epochs = probe(TRAINER, model, data, {"batch_size": [4, 8]}, steps=6,
                   options=Options(country_iso_code="FRA", write_files=False))
    four, eight = epochs.candidates
    assert (four.planned_steps, eight.planned_steps) == (32, 16)  # 2 epochs of 64 samples
    assert (four.eval_passes, eight.eval_passes) == (2, 2)
    # 25 J a step; a validation pass of 16 samples: 4 batches of 4, or 2 of 8, at 25 J each
    assert four.projected_energy_j == pytest.approx(32 * 25.0 + 2 * 4 * 25.0)
    assert eight.projected_energy_j == pytest.approx(16 * 25.0 + 2 * 2 * 25.0)
    assert epochs.best.config == {"batch_size": 8}

    steps = probe({**TRAINER, "max_epochs": None, "max_steps": 10, "accumulate_grad_batches": 2}, model, data,
                  {"batch_size": [4, 8]}, steps=4, options=Options(country_iso_code="FRA", write_files=False))
    assert [c.planned_steps for c in steps.candidates] == [10, 10]
    assert [c.samples for c in steps.candidates] == [4 * 2 * 4, 4 * 2 * 8]
    assert [c.eval_passes for c in steps.candidates] == [1, 2]  # epochs ended within 10 steps: 20 batches


def test_plain_loaders_are_rebuilt_for_a_batch_size(steady, tmp_path):
    g = torch.Generator().manual_seed(0)
    train = DataLoader(TensorDataset(torch.randn(64, 8, generator=g), torch.randn(64, 1, generator=g)), batch_size=8)
    result = probe(lambda **kw: L.Trainer(**{**TRAINER, **kw}), Tiny(steady), train, {"batch_size": [4, 16]},
                   steps=4, options=Options(country_iso_code="FRA", write_files=False))
    assert [c.planned_steps for c in result.candidates] == [32, 8]
    assert train.batch_size == 8


def test_unknown_keys_raise():
    with pytest.raises(ValueError, match="neither batch_size nor Trainer arguments"):
        probe(TRAINER, Tiny(), Data(), {"learning_rate": [0.1]}, steps=4)
