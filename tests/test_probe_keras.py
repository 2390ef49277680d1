"""``probe`` for Keras, through real (tiny) fits of clones: the model left as it was, a failing candidate,
the planned fit (epochs x batches at each batch size, validation passes) and exact figures on a fake clock."""

from __future__ import annotations

import random

import keras
import numpy as np
import pytest
import torch
from fakes import PROBE_WATTS, FakeClock

from wattwise.integrations.keras import probe
from wattwise.options import Options

WATTS = PROBE_WATTS
STEP_S = 0.25  # fake seconds per batch (training or validation): 25 J


def data(n: int = 100):
    rng = np.random.default_rng(0)
    return rng.random((n, 8), dtype=np.float32), rng.random((n, 1), dtype=np.float32)


def model_of() -> keras.Model:
    keras.utils.set_random_seed(0)
    layers = [keras.Input((8,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)]
    model = keras.Sequential(layers)
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    return model


@pytest.fixture
def steady(steady, monkeypatch) -> FakeClock:
    """conftest's ``steady``, and every batch the probe's callback counts (in the clone's fit or
    evaluate) lasts STEP_S on it."""
    clock = steady
    from wattwise.integrations import keras_probe

    step = keras_probe._Measure._step

    def ticking(self, batch, *iterator_and_sizes):
        clock.now += STEP_S
        return step(self, batch, *iterator_and_sizes)

    monkeypatch.setattr(keras_probe._Measure, "_step", ticking)
    return clock


def test_the_model_is_left_as_it_was_and_a_failing_candidate_is_reported(tmp_path):
    x, y = data()
    model = model_of()
    weights = [w.copy() for w in model.get_weights()]
    state = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    result = probe(model, x, y, {"batch_size": [8, 16], "dtype_policy": ["float32", "no_such_policy"]}, steps=5,
                   epochs=2, validation_split=0.2, options=Options(country_iso_code="FRA", output_dir=str(tmp_path)))
    failed = [c for c in result.candidates if not c.ran]
    assert {c.config["dtype_policy"] for c in failed} == {"no_such_policy"} and len(failed) == 2
    assert all(c.steps == 5 and c.samples == 5 * c.config["batch_size"] for c in result.candidates if c.ran)
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights(), strict=True))
    assert not model.optimizer.built and keras.config.dtype_policy().name == "float32"
    assert torch.equal(state[0], torch.get_rng_state()) and state[1] == random.getstate()
    assert np.array_equal(state[2], np.random.get_state()[1])
    assert (tmp_path / "wattwise" / "probe.png").exists()


def test_the_plan_is_epochs_of_batches_with_validation_passes(steady):
    x, y = data()
    result = probe(model_of(), x, y, {"batch_size": [8, 16]}, steps=6, epochs=3, validation_split=0.2,
                   options=Options(country_iso_code="FRA", write_files=False))
    eight, sixteen = result.candidates
    assert (eight.planned_steps, sixteen.planned_steps) == (30, 15)  # 80 training samples: 10 or 5 batches
    assert (eight.eval_passes, sixteen.eval_passes) == (3, 3)
    # 25 J a batch: a pass over 20 validation samples is 3 batches of 8, or 2 of 16
    assert eight.projected_energy_j == pytest.approx(30 * 25.0 + 3 * 3 * 25.0)
    assert sixteen.projected_energy_j == pytest.approx(15 * 25.0 + 3 * 2 * 25.0)
    assert result.best.config == {"batch_size": 16}
    every_other = probe(model_of(), x, y, {"batch_size": [16]}, steps=6, epochs=3, validation_split=0.2,
                        validation_freq=2, options=Options(country_iso_code="FRA", write_files=False))
    assert every_other.candidates[0].eval_passes == 1


def test_mixed_precision_candidates_train_clones_under_their_policy(steady):
    x, y = data()
    result = probe(model_of(), x, y, {"dtype_policy": ["float32", "mixed_bfloat16"]}, steps=4,
                   options=Options(country_iso_code="FRA", write_files=False))
    assert all(c.ran for c in result.candidates)
    assert [c.setup["precision"] for c in result.candidates] == ["fp32", "bf16"]
    assert [c.setup["batch_size"] for c in result.candidates] == [32, 32]


def test_keys_other_than_batch_size_and_dtype_policy_raise():
    x, y = data()
    with pytest.raises(ValueError, match="batch_size and dtype_policy"):
        probe(model_of(), x, y, {"learning_rate": [0.1]}, steps=4)
