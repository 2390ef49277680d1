"""The public run lifecycle: ``wattwise.track()`` as a context manager, runs ended by an exception or a
signal (SIGTERM, SIGINT) in every framework, and one run per framework call (HF train/evaluate/predict).

The signal tests run real child processes (``lifecycle_scripts/interrupted.py``) that send themselves
the signal at training step 3 of many planned.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import FakeClock, on_clock, steady_sources

import wattwise
from wattwise.config import Config
from wattwise.meter import EnergyMeter
from wattwise.registry import Registry
from wattwise.run import Run

SCRIPT = Path(__file__).parent / "lifecycle_scripts" / "interrupted.py"
CHILD_TIMEOUT_S = 300


def clocked_run(tmp_path, clock, steady_source, **options) -> Run:
    """A started run on a fake clock drawing a steady 10 W."""
    options.setdefault("print_summary", False)
    options.setdefault("country_iso_code", "FRA")
    planned_steps = options.pop("planned_steps", None)
    run = Run.from_config(Config.from_kwargs(**options), "loop", planned_steps=planned_steps, clock=clock)
    run.start(output_dir=tmp_path, meter=EnergyMeter([steady_source({"cpu": 10.0}, clock)], clock=clock))
    return run


def registry_rows() -> list:
    return Registry.open(None).runs()


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


# ---- track(): exceptions, metrics, phases, directories ----------------------------------------------


def test_track_is_the_run_class():
    assert wattwise.track is wattwise.Run


def test_an_exception_in_the_with_block_finishes_the_run_at_once_as_partial(tmp_path, steady_source):
    clock = FakeClock()
    run = clocked_run(tmp_path, clock, steady_source)
    error = ValueError("bad batch")
    with pytest.raises(ValueError) as raised, run:  # entering a started run does not restart it
        for step in range(1, 100):
            clock.now += 0.1
            run.step(samples=8)
            if step == 5:
                raise error
    assert raised.value is error  # unchanged
    report = run.report
    assert report is not None and report.partial is True
    assert report.train_steps == 5
    assert report.duration_s == pytest.approx(0.5)
    assert report.energy_j == pytest.approx(5.0)
    report_json = run.output_dir / "report.json"
    assert run.output_dir == tmp_path / "wattwise"
    written = read_json(report_json)
    assert written["partial"] is True and written["run_id"] == report.run_id
    assert written["energy_j"] == pytest.approx(5.0)

    # later time and later calls are not the run's
    clock.now += 100.0
    assert run.step(samples=8) is False
    run.metrics()
    assert run.finish() is report
    assert run.report is report
    assert report.duration_s == pytest.approx(0.5) and report.energy_j == pytest.approx(5.0)
    assert report.train_steps == 5
    assert read_json(report_json) == written
    with pytest.raises(RuntimeError, match="finished"), run:
        pass

    (row,) = registry_rows()
    assert row.run_id == report.run_id and row.partial is True
    assert row.output_dir == str(run.output_dir)
    assert row.energy_j == pytest.approx(5.0)


def test_a_clean_with_block_is_not_partial(tmp_path, steady_source):
    clock = FakeClock()
    run = clocked_run(tmp_path, clock, steady_source)
    with run:
        for _ in range(4):
            clock.now += 0.25
            run.step()
    assert run.report.partial is False and run.report.energy_j == pytest.approx(10.0)
    assert read_json(run.output_dir / "report.json")["partial"] is False
    (row,) = registry_rows()
    assert row.partial is False


def test_metrics_keys_are_log_keys_including_the_forecast(tmp_path, steady_source):
    clock = FakeClock()
    run = clocked_run(tmp_path, clock, steady_source, planned_steps=1000, window_s=0.5)
    seen: set[str] = set()
    with run:
        for step in range(1, 501):
            clock.now += 0.1
            run.step(samples=8)
            if step % 50 == 0:
                seen |= run.metrics().keys()
        with run.phase("eval"):
            clock.now += 1.0
            run.step(samples=4)
        seen |= run.pass_metrics("eval").keys()
    assert seen <= set(wattwise.LOG_KEYS), seen - set(wattwise.LOG_KEYS)
    assert {"energy/step_j", "energy/power_w", "energy/total_kwh", "carbon/total_kg"} <= seen
    assert {"energy/forecast_kwh", "energy/forecast_low_kwh", "energy/forecast_high_kwh", "carbon/forecast_kg",
            "energy/eval_j"} <= seen


def test_track_with_real_sources_phases_and_metrics(tmp_path):
    with wattwise.track(country_iso_code="FRA", planned_steps=20, output_dir=str(tmp_path), print_summary=False,
                        sources=("cpu", "ram"), window_s=0.001) as run:
        assert isinstance(run, wattwise.Run)
        for _ in range(10):
            run.step(samples=8)
        metrics = run.metrics()
        with run.phase("eval"):
            for _ in range(3):
                run.step(samples=4)
        eval_j = run.last_pass_j
        for _ in range(10):
            run.step(samples=8)
        metrics.update(run.metrics())
    assert set(metrics) <= set(wattwise.LOG_KEYS), set(metrics) - set(wattwise.LOG_KEYS)
    assert {"energy/power_w", "energy/total_kwh", "carbon/total_kg"} <= set(metrics)
    report = run.report
    assert not report.partial and report.train_steps == 20 and report.planned_steps == 20
    evaluation = report.by_phase["eval"]
    assert evaluation.passes == 1 and evaluation.steps == 3 and evaluation.samples == 12
    assert report.by_phase["train"].samples == 160 and report.by_phase["train"].steps == 20
    assert 0 <= eval_j <= evaluation.energy_j + 1e-12
    assert run.output_dir == tmp_path / "wattwise"
    assert {p.name for p in run.output_dir.iterdir()} >= {"report.json", "steps.csv", "emissions.csv"}


def test_two_runs_to_one_output_dir_land_in_two_directories(tmp_path):
    out = tmp_path / "out"
    options = dict(country_iso_code="FRA", output_dir=str(out), print_summary=False, sources=("cpu",))
    with wattwise.track(**options) as first:
        first.step(samples=1)
    with wattwise.track(**options) as second:
        for _ in range(2):
            second.step(samples=1)
    assert first.output_dir == out / "wattwise"
    assert second.output_dir == out / "track" / "wattwise"
    assert first.report.run_id != second.report.run_id
    one, two = read_json(out / "wattwise" / "report.json"), read_json(out / "track" / "wattwise" / "report.json")
    assert (one["run_id"], one["train_steps"]) == (first.report.run_id, 1)
    assert (two["run_id"], two["train_steps"]) == (second.report.run_id, 2)
    rows = {row.run_id: row for row in registry_rows()}
    assert rows[first.report.run_id].output_dir == str(out / "wattwise")
    assert rows[second.report.run_id].output_dir == str(out / "track" / "wattwise")
    assert not any(row.partial for row in rows.values())


# ---- signals: real child processes ------------------------------------------------------------------


def run_child(tmp_path, framework: str, sig: str = "SIGTERM") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTWISE_")}
    env.update(WATTWISE_REGISTRY=str(tmp_path / "runs.sqlite"), KERAS_BACKEND="torch", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", CUDA_VISIBLE_DEVICES="", WANDB_MODE="disabled")
    return subprocess.run([sys.executable, str(SCRIPT), framework, str(tmp_path), sig], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, preexec_fn=_interactive_signals)


def _interactive_signals() -> None:
    """The child as a foreground process has them: a test suite started in the background (``make test &``)
    passes SIGINT on ignored, and Python then installs no KeyboardInterrupt handler at all."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def assert_partial_everywhere(tmp_path, done: subprocess.CompletedProcess, signal_name: str) -> None:
    """report.json and the child's registry row both say partial, with the steps made before the signal."""
    context = f"rc={done.returncode}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    assert f"MARKER sending {signal_name}" in done.stdout, context
    assert "MARKER training ended normally" not in done.stdout, context
    path = tmp_path / "wattwise" / "report.json"
    assert path.exists(), context
    data = read_json(path)
    assert data["partial"] is True, context
    assert data["train_steps"] == 3  # the signal was sent at step 3 of 10 000, after wattwise counted it
    assert f"the process received {signal_name}" in data["notes"]
    (row,) = Registry.open(tmp_path / "runs.sqlite").runs()
    assert row.partial is True and row.run_id == data["run_id"]
    assert row.output_dir == str(tmp_path / "wattwise")


@pytest.mark.parametrize("framework", ["track", "transformers", "keras"])
def test_sigterm_finishes_the_run_as_partial_and_the_process_dies_of_it(tmp_path, framework):
    done = run_child(tmp_path, framework)
    assert done.returncode == -signal.SIGTERM, done.stderr[-3000:]  # the default handler's ending, as without wattwise
    assert_partial_everywhere(tmp_path, done, "SIGTERM")


def test_sigterm_under_lightning_finishes_the_run_and_lightning_ends_the_process(tmp_path):
    # Lightning's own SIGTERM handler (chained after wattwise's) makes its loop raise SIGTERMException, a
    # SystemExit with no code: the process ends, with code 0
    done = run_child(tmp_path, "lightning")
    assert_partial_everywhere(tmp_path, done, "SIGTERM")
    assert "MARKER lightning on_exception SIGTERMException" in done.stdout  # Lightning's handler ran too


def test_sigint_finishes_a_track_run_as_partial_and_raises_keyboard_interrupt(tmp_path):
    done = run_child(tmp_path, "track", "SIGINT")
    assert done.returncode != 0
    assert "MARKER KeyboardInterrupt partial=True" in done.stdout, done.stderr[-3000:]
    assert "KeyboardInterrupt" in done.stderr
    assert_partial_everywhere(tmp_path, done, "SIGINT")


# ---- Hugging Face: one run per call -----------------------------------------------------------------


def hf_trainer(tmp_path, callbacks, **overrides):
    import torch
    from test_transformers import VOCAB, tokens
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=32, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0)
    )
    settings = dict(output_dir=str(tmp_path / "out"), max_steps=4, per_device_train_batch_size=4,
                    per_device_eval_batch_size=8, logging_steps=2, save_strategy="no", report_to=[], use_cpu=True,
                    disable_tqdm=True)
    settings.update(overrides)
    return Trainer(model=model, args=TrainingArguments(**settings), train_dataset=tokens(32, 0),
                   eval_dataset=tokens(EVAL_N, 1), callbacks=callbacks)


EVAL_N = 20  # two full batches of 8 and a short one of 4


def hf_energy(**options):
    from wattwise.integrations.transformers import EnergyCallback

    options.setdefault("sources", ("cpu", "ram"))
    options.setdefault("country_iso_code", "FRA")
    options.setdefault("window_s", 0.01)
    options.setdefault("print_summary", False)
    return EnergyCallback(**options)


@pytest.fixture
def steady_100w(monkeypatch, steady_source):
    """Every source replaced by a constant 100 W: any time spent is energy > 0."""
    import wattwise.sources
    from wattwise.sources import OpenedSources

    monkeypatch.setattr(wattwise.sources, "open_sources",
                        lambda names, **kw: OpenedSources([steady_source({"gpu:0": 100.0})]))


def test_hf_standalone_evaluate_and_predict_are_each_a_run(tmp_path, steady_100w):
    callback = hf_energy()
    trainer = hf_trainer(tmp_path, [callback])
    metrics = trainer.evaluate()
    evaluated = callback.report
    assert evaluated is not None and not evaluated.partial
    assert list(evaluated.by_phase) == ["eval"] and evaluated.train_steps == 0
    phase = evaluated.by_phase["eval"]
    assert phase.samples == EVAL_N and phase.steps == 3 and phase.passes == 1
    assert evaluated.energy_j > 0 and phase.energy_j > 0
    assert evaluated.energy_j / phase.samples > 0  # J per evaluated sample
    assert 0 < metrics["energy/eval_j"] <= phase.energy_j + 1e-9
    assert metrics["energy/total_kwh"] > 0 and "eval_loss" in metrics

    predicted_output = trainer.predict(trainer.eval_dataset)
    predicted = callback.report
    assert predicted is not evaluated and predicted.run_id != evaluated.run_id and not predicted.partial
    assert list(predicted.by_phase) == ["predict"]
    phase = predicted.by_phase["predict"]
    assert phase.samples == EVAL_N and phase.steps == 3
    assert predicted.energy_j > 0 and predicted.energy_j / phase.samples > 0
    assert 0 < predicted_output.metrics["energy/predict_j"] <= phase.energy_j + 1e-9
    assert "energy/total_kwh" in predicted_output.metrics

    assert callback.reports == [evaluated, predicted]
    out = tmp_path / "out"
    assert read_json(out / "wattwise" / "report.json")["run_id"] == evaluated.run_id
    assert read_json(out / "predict" / "wattwise" / "report.json")["run_id"] == predicted.run_id
    assert {row.run_id for row in registry_rows()} == {evaluated.run_id, predicted.run_id}


def test_hf_two_trains_with_one_callback_leave_two_reports_in_two_directories(tmp_path):
    callback = hf_energy()
    trainer = hf_trainer(tmp_path, [callback], max_steps=3)
    trainer.train()
    trainer.args.max_steps = 5
    trainer.train()
    first, second = callback.reports
    assert callback.report is second
    assert (first.train_steps, second.train_steps) == (3, 5)
    assert not first.partial and not second.partial and first.run_id != second.run_id
    out = tmp_path / "out"
    one, two = read_json(out / "wattwise" / "report.json"), read_json(out / "train" / "wattwise" / "report.json")
    assert (one["run_id"], one["train_steps"]) == (first.run_id, 3)
    assert (two["run_id"], two["train_steps"]) == (second.run_id, 5)


def test_hf_a_train_that_raises_is_finished_at_once_as_partial(tmp_path):
    from transformers import TrainerCallback

    class Boom(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise RuntimeError("boom at step 3")

    callback = hf_energy()
    trainer = hf_trainer(tmp_path, [callback, Boom()], max_steps=50)
    with pytest.raises(RuntimeError, match="boom at step 3"):
        trainer.train()
    report = callback.report  # right after the exception, with nothing else called
    assert report is not None and report.partial
    assert 1 <= report.train_steps <= 3
    assert callback.reports == [report]
    data = read_json(tmp_path / "out" / "wattwise" / "report.json")
    assert data["partial"] is True and data["run_id"] == report.run_id
    (row,) = registry_rows()
    assert row.partial is True and row.run_id == report.run_id


# ---- Keras: an exception caught by the user -----------------------------------------------------------


def test_keras_a_fit_that_raises_is_charged_nothing_after_the_exception(tmp_path, monkeypatch):
    import keras
    from test_keras import TICK_S, Tick, data, tiny_model

    import wattwise.sources
    from wattwise.integrations.keras import EnergyCallback

    class Crash(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 2:  # the third training step
                raise RuntimeError("training blew up")

    clock = FakeClock()  # every batch lasts TICK_S on it (Tick); the sources draw 10 W on it
    monkeypatch.setattr(wattwise.sources, "open_sources", steady_sources({"cpu": 10.0}, clock))
    callback = on_clock(EnergyCallback(country_iso_code="FRA", window_s=TICK_S, print_summary=False,
                                       output_dir=str(tmp_path / "out")), clock, "keras")
    model = tiny_model()
    x, y = data(80)
    try:
        model.fit(x, y, batch_size=8, epochs=20, callbacks=[callback, Tick(clock), Crash()], verbose=0)
    except RuntimeError:
        clock.now += 100.0  # work after the exception, while the failed fit's objects are still alive
    gc.collect()
    report = callback.report
    assert report is not None and report.partial and report.train_steps == 3
    # EnergyCallback moves itself to the front of Keras's CallbackList, so it read the counters at the end
    # of the third step, before Crash raised: the run ends there, and the 100 s after are not charged
    assert report.duration_s == pytest.approx(3 * TICK_S)
    assert report.energy_j == pytest.approx(10.0 * 3 * TICK_S)
    assert read_json(tmp_path / "out" / "wattwise" / "report.json")["partial"] is True
    (row,) = registry_rows()
    assert row.partial is True and row.run_id == report.run_id
