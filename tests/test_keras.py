"""The Keras EnergyCallback, through real fit/evaluate/predict calls of a tiny model on synthetic data.

The tests run on the torch backend (conftest sets KERAS_BACKEND); one test repeats a run on every
other installed backend in a subprocess, since Keras fixes its backend at import.

Tests whose outcome hangs on when windows close (batch-level figures, window counts, budgets) or on
energy ratios run on the ``steady`` fixture's fake clock, which every batch moves by ``TICK_S``
(``Tick``, added by ``fit``), with the sources replaced by constant power on that clock: windows close
at batch counts and the energies are exact, whatever the machine's speed or load. The others use
the real clock and sources, and assert nothing that depends on how fast the steps run.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from fakes import FakeClock, on_clock, steady_sources

import wattwise.sources
from wattwise.hooks import BatchCount, samples_in
from wattwise.integrations.keras import EnergyCallback

KEYS = ("energy/step_j", "energy/power_w", "energy/total_kwh", "carbon/total_kg")
needs_tensorflow = pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None,
    reason="keras.callbacks.TensorBoard needs tensorflow (pip install tensorflow-cpu)",
)


TICK_S = 0.25  # fake seconds per batch; binary fractions, so window boundaries fall exactly on batches
WINDOW_S = 1.0  # a window closes every 4 batches
STEADY_W = 10.0  # the power of the ``steady`` sources: 2.5 J a batch


class Tick(keras.callbacks.Callback):
    """Every batch (training, evaluation, prediction) lasts ``seconds`` on ``clock``: windows of
    ``window_s`` hold a known number of batches, however fast or slow the machine runs them."""

    def __init__(self, clock: FakeClock, seconds: float = TICK_S) -> None:
        super().__init__()
        self.clock = clock
        self.seconds = seconds

    def on_train_batch_begin(self, batch, logs=None):
        self.clock.now += self.seconds

    def on_test_batch_begin(self, batch, logs=None):
        self.clock.now += self.seconds

    def on_predict_batch_begin(self, batch, logs=None):
        self.clock.now += self.seconds


def ticks(callbacks) -> list[Tick]:
    """One ``Tick`` per fake clock of the callbacks (those made by ``energy``)."""
    clocks = {id(c.clock): c.clock for c in callbacks if isinstance(getattr(c, "clock", None), FakeClock)}
    return [Tick(clock) for clock in clocks.values()]


@pytest.fixture
def steady(monkeypatch) -> FakeClock:
    """Every source replaced by a constant STEADY_W on a fake clock (pass it to ``energy``): a run's
    energy is then exactly STEADY_W x TICK_S per batch."""
    clock = FakeClock()
    monkeypatch.setattr(wattwise.sources, "open_sources", steady_sources({"cpu": STEADY_W}, clock))
    return clock


class BatchRecorder(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.logs: list[dict] = []

    def on_train_batch_end(self, batch, logs=None):
        self.logs.append(dict(logs))


def data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    return x, x.sum(axis=1, keepdims=True)


def tiny_model() -> keras.Model:
    # seeded initializers, not keras.utils.set_random_seed: that one imports TensorFlow when installed (~3 s)
    seeded = {"kernel_initializer": keras.initializers.GlorotUniform(seed=0)}
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="relu", **seeded), keras.layers.Dense(1, **seeded)]
    )
    model.compile(optimizer="sgd", loss="mse")
    return model


def energy(tmp_path, *, clock: FakeClock | None = None, **options) -> EnergyCallback:
    """A callback on the real clock, or with its runs on ``clock`` (the ``steady`` fixture's)."""
    options.setdefault("sources", ("cpu", "ram"))
    options.setdefault("country_iso_code", "FRA")
    options.setdefault("window_s", WINDOW_S)
    options.setdefault("output_dir", str(tmp_path / "out"))
    callback = EnergyCallback(**options)
    return callback if clock is None else on_clock(callback, clock, "keras")


def fit(model, callbacks, *, n=40, epochs=3, validation_split=0.25, verbose=0, **options):
    """``model.fit`` with 8-sample batches, each lasting TICK_S on the callbacks' fake clocks (if any)."""
    x, y = data(n)
    return model.fit(
        x, y, batch_size=8, epochs=epochs, validation_split=validation_split,
        callbacks=[*callbacks, *ticks(callbacks)], verbose=verbose, **options,
    )


def tensorboard_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    """tf.summary scalars of one TensorBoard run directory, by tag: [(step, value), ...]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    accumulator = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    accumulator.Reload()
    return {
        tag: [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in accumulator.Tensors(tag)]
        for tag in accumulator.Tags()["tensors"]
        if tag.startswith(("epoch_", "batch_", "evaluation_"))  # not the model's config ("keras")
    }


def test_epoch_metrics_are_in_the_history(tmp_path, steady):
    callback = energy(tmp_path, clock=steady)
    history = fit(tiny_model(), [callback], n=80)  # 60 samples to train (8 batches), 20 to validate (3)
    for key in (*KEYS, "energy/eval_j"):
        assert len(history.history[key]) == 3, key
    # an epoch: 8 training batches of 2.5 J, then a validation pass of 3 batches (7.5 J), 2.75 s in all
    assert history.history["energy/step_j"] == pytest.approx([2.5] * 3)
    assert history.history["energy/power_w"] == pytest.approx([STEADY_W] * 3)  # over the epoch, validation included
    assert history.history["energy/eval_j"] == pytest.approx([7.5] * 3)
    totals_j = [kwh * 3.6e6 for kwh in history.history["energy/total_kwh"]]
    assert totals_j == pytest.approx([27.5, 55.0, 82.5])
    report = callback.report
    assert report.energy_j == pytest.approx(82.5) and report.energy_kwh == pytest.approx(history.history["energy/total_kwh"][-1])
    assert history.history["carbon/total_kg"][-1] == pytest.approx(report.energy_kwh * report.carbon["g_per_kwh"] / 1000)
    # the epochs' joules per step over their steps are the train phase's energy; their passes, the eval phase's
    assert sum(step_j * 8 for step_j in history.history["energy/step_j"]) == pytest.approx(report.by_phase["train"].energy_j)
    assert sum(history.history["energy/eval_j"]) == pytest.approx(report.by_phase["eval"].energy_j)


def test_batch_logs_carry_the_metrics_recomputed_only_at_window_boundaries(tmp_path, capsys, steady):
    callback = energy(tmp_path, clock=steady)
    calls = []
    log_metrics = callback.runs.run.metrics

    def counted(*args, **kwargs):
        calls.append(1)
        return log_metrics(*args, **kwargs)

    callback.runs.run.metrics = counted
    before, after = BatchRecorder(), BatchRecorder()
    fit(tiny_model(), [before, callback, after], n=160, epochs=2, validation_split=0, verbose=1)
    batches = len(after.logs)
    assert batches == 40
    first = next(i for i, logs in enumerate(after.logs) if all(key in logs for key in KEYS))
    assert first == 3  # the first window closes at the end of the 4th batch (4 x TICK_S = WINDOW_S)
    with_keys = after.logs[first:]  # from the first window boundary on, every batch shows the keys
    assert all(key in logs for logs in with_keys for key in KEYS)
    assert before.logs == after.logs  # moved to the front: callbacks listed before it see the keys too
    assert all(logs["energy/step_j"] == pytest.approx(2.5) and logs["energy/power_w"] == pytest.approx(STEADY_W)
               for logs in with_keys)
    # one recomputation per window (4 batches) plus one per epoch end, not one per batch
    assert len(calls) == batches // 4 + 2
    assert len({logs["energy/total_kwh"] for logs in with_keys}) == batches // 4  # reused in between
    assert "energy/step_j:" in capsys.readouterr().out  # the progress bar shows them
    # by the last epoch the forecaster has steady windows: the projection of the planned fit
    history = callback.model.history.history
    low, central, high = (history[f"energy/forecast{part}_kwh"][-1] for part in ("_low", "", "_high"))
    assert 0 < low <= central <= high
    assert history["carbon/forecast_kg"][-1] > 0


@needs_tensorflow
@pytest.mark.parametrize("tensorboard_first", [True, False], ids=["tensorboard-first", "energy-first"])
def test_epoch_metrics_reach_tensorboard_whatever_the_callback_order(tmp_path, tensorboard_first, steady):
    callback = energy(tmp_path, clock=steady)  # a window closes at the 4th and last batch of each epoch
    board = keras.callbacks.TensorBoard(str(tmp_path / "tb"), update_freq=1)
    fit(tiny_model(), [board, callback] if tensorboard_first else [callback, board])
    train = tensorboard_scalars(tmp_path / "tb" / "train")
    history = callback.model.history.history
    for key in (*KEYS, "energy/eval_j"):
        assert [step for step, _ in train[f"epoch_{key}"]] == [0, 1, 2], key
        assert [value for _, value in train[f"epoch_{key}"]] == pytest.approx(history[key], rel=1e-6), key
    for key in KEYS:
        # from the first window's batch (the 4th) on, every batch carries the keys, refreshed or reused
        assert [step for step, _ in train[f"batch_{key}"]] == list(range(4, 13)), key
    validation = tensorboard_scalars(tmp_path / "tb" / "validation")
    eval_j = [value for _, value in validation["evaluation_energy/eval_j_vs_iterations"]]
    assert eval_j == pytest.approx(history["energy/eval_j"], rel=1e-6)


def test_validation_evaluate_and_predict_are_measured_apart_from_training(tmp_path):
    callback = energy(tmp_path)
    model = tiny_model()
    fit(model, [callback])  # 40 samples: 30 to train (4 batches, the last of 6), 10 to validate (2 batches)
    x, y = data(20, seed=1)
    results = model.evaluate(x, y, batch_size=8, callbacks=[callback], verbose=0, return_dict=True)
    predictions = model.predict(x, batch_size=8, callbacks=[callback], verbose=0)
    assert predictions.shape == (20, 1) and "loss" in results
    fitted, evaluated, predicted = callback.reports
    assert fitted.framework == "keras" and not fitted.partial
    train, val = fitted.by_phase["train"], fitted.by_phase["eval"]
    assert (train.steps, train.samples, train.passes) == (12, 90, 0)
    assert (val.steps, val.samples, val.passes) == (6, 30, 3)
    assert train.energy_j > 0 and val.energy_j > 0
    assert fitted.energy_j == pytest.approx(train.energy_j + val.energy_j, rel=1e-9)
    assert fitted.train_steps == 12 and fitted.planned_steps == 12
    assert fitted.by_component["cpu"].measured is False  # the real sources: estimates
    assert list(evaluated.by_phase) == ["eval"] and evaluated.train_steps == 0
    assert (evaluated.by_phase["eval"].steps, evaluated.by_phase["eval"].samples) == (3, 20)
    assert evaluated.by_phase["eval"].energy_j == pytest.approx(evaluated.energy_j, rel=1e-9) and evaluated.energy_j > 0
    assert list(predicted.by_phase) == ["predict"]
    assert (predicted.by_phase["predict"].steps, predicted.by_phase["predict"].samples) == (3, 20)
    assert predicted.energy_j > 0 and callback.report is predicted
    # each call has its own files: the first in <output_dir>/wattwise, later ones in a subdirectory
    for path in ("wattwise", "evaluate/wattwise", "predict/wattwise"):
        assert json.loads((tmp_path / "out" / path / "report.json").read_text())["partial"] is False


def test_evaluate_and_predict_alone_produce_reports(tmp_path):
    model = tiny_model()
    x, y = data(24)
    evaluator = energy(tmp_path)
    model.evaluate(x, y, batch_size=8, callbacks=[evaluator], verbose=0)
    assert evaluator.report.by_phase["eval"].passes == 1 and evaluator.report.by_phase["eval"].steps == 3
    assert json.loads((tmp_path / "out" / "wattwise" / "report.json").read_text())["by_phase"]["eval"]["samples"] == 24
    predictor = energy(tmp_path, output_dir=str(tmp_path / "predict-only"))
    model.predict(x, batch_size=16, callbacks=[predictor], verbose=0)
    assert predictor.report.by_phase["predict"].samples == 24 and predictor.report.by_phase["predict"].steps == 2
    assert (tmp_path / "predict-only" / "wattwise" / "steps.csv").exists()


def test_window_energies_in_steps_csv_sum_to_the_report_and_files_are_written(tmp_path, steady):
    callback = energy(tmp_path, clock=steady)
    fit(tiny_model(), [callback], n=80)  # 8 training batches and 3 validation batches an epoch
    out = tmp_path / "out" / "wattwise"
    with open(out / "steps.csv") as f:
        rows = list(csv.DictReader(f))
    report = callback.report
    # per epoch: two windows of 4 training batches (WINDOW_S each), then the validation pass
    assert [(r["phase"], int(r["steps"])) for r in rows] == [("train", 4), ("train", 4), ("eval", 3)] * 3
    assert [float(r["energy_j"]) for r in rows] == pytest.approx([10.0, 10.0, 7.5] * 3)
    assert report.energy_j == pytest.approx(82.5)
    assert sum(float(r["energy_j"]) for r in rows) == pytest.approx(report.energy_j, rel=1e-9)
    assert sum(float(r["step_j"]) * int(r["steps"]) for r in rows) == pytest.approx(report.energy_j, rel=1e-9)
    for phase in ("train", "eval"):
        rows_j = sum(float(r["energy_j"]) for r in rows if r["phase"] == phase)
        assert rows_j == pytest.approx(report.by_phase[phase].energy_j, rel=1e-9), phase
    data_ = json.loads((out / "report.json").read_text())
    assert data_["framework"] == "keras" and data_["train_steps"] == 24 and data_["planned_steps"] == 24
    assert data_["energy_j"] == pytest.approx(82.5)
    with open(out / "emissions.csv") as f:
        row = next(csv.DictReader(f))
    assert float(row["energy_consumed"]) == pytest.approx(report.energy_kwh)
    assert row["country_iso_code"] == "FRA"


def test_output_dir_defaults_to_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    callback = EnergyCallback(sources=("cpu",), print_summary=False)
    fit(tiny_model(), [callback], epochs=1)
    assert (tmp_path / "wattwise" / "report.json").exists()


def test_planned_steps_come_from_epochs_and_steps_per_epoch(tmp_path):
    callback = energy(tmp_path)
    fit(tiny_model(), [callback], n=48, epochs=4, validation_split=0)  # 6 steps per epoch
    assert callback.report.planned_steps == 24 and callback.report.train_steps == 24
    fit(callback.model, [callback], n=48, epochs=4, initial_epoch=1, validation_split=0)
    assert callback.report.planned_steps == 18 and callback.report.train_steps == 18


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"pue": 0.5}, "pue"),
        ({"country_iso_code": "France"}, "country_iso_code"),
        ({"cloud_provider": "gcp"}, "cloud_region"),
        ({"sources": ("nvml", "geiger")}, "sources"),
        ({"window_s": 0}, "window_s"),
        ({"print_summary": "yes"}, "print_summary"),
        ({"budget_kwh": -3}, "budget_kwh"),
        ({"on_budget": "panic"}, "on_budget"),
    ],
)
def test_bad_arguments_raise_at_construction_naming_the_argument(options, named):
    with pytest.raises(ValueError, match=named):
        EnergyCallback(**options)


def test_a_failing_hook_is_reported_once_and_training_goes_on(tmp_path, caplog):
    callback = energy(tmp_path, window_s=1e-9)  # every step closes a window (a step takes > 1 ns): both hooks log

    def explode(*args, **kwargs):
        raise ZeroDivisionError("bug in wattwise")

    callback.runs.run.metrics = explode
    with caplog.at_level("WARNING", logger="wattwise"):
        history = fit(tiny_model(), [callback])
    assert len(history.history["loss"]) == 3
    failures = [r for r in caplog.records if "bug in wattwise" in r.getMessage()]
    assert len(failures) == 2  # once for the batch hook, once for the epoch hook
    report = callback.report
    assert report is not None and not report.partial and report.train_steps == 12
    assert any("on_train_batch_end failed" in note for note in report.notes)


class Crash(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if batch == 2:
            raise RuntimeError("training blew up")


def test_a_run_that_raises_leaves_a_partial_report(tmp_path):
    callback = energy(tmp_path)
    try:
        fit(tiny_model(), [callback, Crash()])
    except RuntimeError:
        assert callback.report is None  # Keras's CallbackList of the call is still alive here
    # the exception is handled: Keras drops the call's CallbackList, and the report is written
    report = callback.report
    assert report is not None and report.partial and report.train_steps == 3
    assert json.loads((tmp_path / "out" / "wattwise" / "report.json").read_text())["partial"] is True


def test_a_failed_call_still_referenced_is_finished_by_the_next_call(tmp_path):
    callback = energy(tmp_path)
    model = tiny_model()
    with pytest.raises(RuntimeError) as kept:  # the traceback keeps the failed call's frames alive
        fit(model, [callback, Crash()])
    assert callback.report is None
    x, y = data(16)
    model.evaluate(x, y, batch_size=8, callbacks=[callback], verbose=0)  # not a validation pass of that fit
    fit(model, [callback], epochs=1)
    failed, evaluated, fitted = callback.reports
    assert failed.partial and failed.train_steps == 3 and "eval" not in failed.by_phase
    assert list(evaluated.by_phase) == ["eval"] and evaluated.by_phase["eval"].steps == 2
    assert not fitted.partial and fitted.train_steps == 4
    assert (tmp_path / "out" / "evaluate" / "wattwise" / "report.json").exists()
    assert (tmp_path / "out" / "fit" / "wattwise" / "report.json").exists()
    del kept


def test_each_fit_is_a_new_run(tmp_path):
    callback = energy(tmp_path)
    model = tiny_model()
    fit(model, [callback], epochs=1)
    first = callback.report
    fit(model, [callback], epochs=2)
    assert callback.report is not first and callback.report.run_id != first.run_id
    assert (first.train_steps, callback.report.train_steps) == (4, 8)


OTHER_BACKEND_RUN = """
    import json, sys
    import keras, numpy as np
    from wattwise.integrations.keras import EnergyCallback

    assert keras.backend.backend() == sys.argv[1]
    x = np.random.default_rng(0).normal(size=(40, 4)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse", steps_per_execution=2)  # torch allows only 1
    energy = EnergyCallback(sources=("cpu", "ram"), country_iso_code="FRA", window_s=0.01, output_dir="out")
    history = model.fit(x, y, batch_size=8, epochs=2, validation_split=0.25, callbacks=[energy], verbose=0)
    model.evaluate(x, y, batch_size=8, callbacks=[energy], verbose=0)
    model.predict(x, batch_size=16, callbacks=[energy], verbose=0)
    print(json.dumps({
        "history": sorted(history.history),
        "reports": [r.to_dict() for r in energy.reports],
    }))
"""


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_the_callback_runs_unchanged_on_another_backend(tmp_path, backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(OTHER_BACKEND_RUN), backend],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert {*KEYS, "energy/eval_j"} <= set(result["history"])
    fitted, evaluated, predicted = result["reports"]
    assert fitted["framework"] == "keras" and not fitted["partial"]
    # 30 samples to train, 10 to validate, batches of 8 run two at a time (steps_per_execution=2)
    train, val = fitted["by_phase"]["train"], fitted["by_phase"]["eval"]
    assert fitted["train_steps"] == 8 and fitted["planned_steps"] == 8
    assert (train["steps"], train["samples"]) == (8, 60)
    assert (val["passes"], val["steps"], val["samples"]) == (2, 4, 20)
    assert fitted["energy_j"] > 0 and train["energy_j"] > 0 and val["energy_j"] > 0
    assert list(evaluated["by_phase"]) == ["eval"]
    assert (evaluated["by_phase"]["eval"]["steps"], evaluated["by_phase"]["eval"]["samples"]) == (5, 40)
    assert list(predicted["by_phase"]) == ["predict"]
    assert (predicted["by_phase"]["predict"]["steps"], predicted["by_phase"]["predict"]["samples"]) == (3, 40)
    assert (tmp_path / "out" / "wattwise" / "steps.csv").exists()


def test_a_budget_stop_ends_training_through_the_model(tmp_path, steady):
    # 6 J: spent at the window that closes at the end of the 3rd batch (2.5 J a batch, a window a batch)
    callback = energy(tmp_path, clock=steady, budget_kwh=6.0 / 3.6e6, on_budget="stop", window_s=TICK_S)
    history = fit(tiny_model(), [callback], epochs=3)
    report = callback.report
    assert len(history.history["loss"]) == 1 and report.train_steps == 3
    assert report.budget["stopped_at_step"] == 3


def test_batch_count_gives_each_batch_end_its_steps_and_samples():
    """Batches of 8, 4 per pass over the data, the last short by 2 (30 samples a pass); batch-end
    hooks every 2 batches (steps_per_execution=2), the last group's nominal end past the data."""
    count = BatchCount(batches=7, sizes=(8, 4, 2))
    assert [count.ended(b) for b in (1, 3, 5, 7)] == [(2, 16), (2, 14), (2, 16), (1, 8)]
    assert (count.last, count.samples) == (6, 54)  # capped at the 7th batch: 30 + 24
    assert samples_in((8, 4, 2), 4) == 30 and samples_in((8, 4, 2), 0) == 0 and samples_in(None, 3) == 0
    unknown = BatchCount()
    assert [unknown.ended(b) for b in (0, 1, 1)] == [(1, 0), (1, 0), (1, 0)]  # a repeated index is one step
