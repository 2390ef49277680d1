"""The Hugging Face EnergyCallback, through real Trainer runs of a tiny GPT-2 built from a config.

Tests whose outcome hangs on when windows close or on energy ratios run on the ``steady`` fixture's
fake clock, with the sources replaced by constant power on it; ``run`` then uses a ``Ticking``
trainer, whose every training step and evaluation batch lasts ``STEP_S`` on that clock and whose
evaluations take ``EVAL_SETUP_S`` to set up: the energies are exact, whatever the machine's speed or
load. The others use the real clock and sources and assert nothing that depends on how fast steps run.
"""

from __future__ import annotations

import csv
import json
import socket

import pytest
import torch
from datasets import Dataset
from fakes import FakeClock, on_clock, steady_sources
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

import wattwise.sources
from wattwise.integrations.transformers import EnergyCallback
from wattwise.sources import OpenedSources
from wattwise.sources.model import CpuTimeSource

VOCAB = 64
KEYS = ("energy/step_j", "energy/power_w", "energy/total_kwh", "carbon/total_kg")
STEP_S = 0.25  # fake seconds per training step and per evaluation batch (``Ticking``)
EVAL_SETUP_S = 1.0  # fake seconds from an evaluation's start to its first batch
STEADY_W = 100.0  # the ``steady`` sources: 25 J a step or batch, 100 J an evaluation's set-up


def tokens(n: int, seed: int) -> Dataset:
    ids = torch.randint(0, VOCAB, (n, 16), generator=torch.Generator().manual_seed(seed))
    return Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})


class Ticking(Trainer):
    """A Trainer on a fake clock: each training step and evaluation batch lasts STEP_S, and each
    evaluation spends EVAL_SETUP_S before its first batch (building its DataLoader, say)."""

    def __init__(self, *args, clock: FakeClock, **kwargs) -> None:
        self.fake_clock = clock
        super().__init__(*args, **kwargs)

    def training_step(self, *args, **kwargs):
        self.fake_clock.now += STEP_S
        return super().training_step(*args, **kwargs)

    def evaluate(self, *args, **kwargs):
        self.fake_clock.now += EVAL_SETUP_S
        return super().evaluate(*args, **kwargs)

    def prediction_step(self, *args, **kwargs):
        self.fake_clock.now += STEP_S
        return super().prediction_step(*args, **kwargs)


@pytest.fixture
def steady(monkeypatch) -> FakeClock:
    """Every source replaced by a constant STEADY_W on a fake clock (pass it to ``energy``)."""
    clock = FakeClock()
    monkeypatch.setattr(wattwise.sources, "open_sources", steady_sources({"gpu:0": STEADY_W}, clock))
    return clock


class Boom(TrainerCallback):
    """Raises at the end of step 2, as a failing training would."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 2:
            raise RuntimeError("boom")


def run(tmp_path, callback, *, train_n=64, eval_n=16, callbacks_extra=False, **overrides):
    """``Trainer.train()`` of a tiny GPT-2; a ``Ticking`` trainer on the callback's fake clock if it has one."""
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=32, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0)
    )
    settings = dict(
        output_dir=str(tmp_path / "out"),
        max_steps=12,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        logging_steps=4,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    settings.update(overrides)
    clock = getattr(callback, "clock", None)
    on_fake_clock = {"clock": clock} if isinstance(clock, FakeClock) else {}
    trainer = (Ticking if on_fake_clock else Trainer)(
        model=model,
        args=TrainingArguments(**settings),
        train_dataset=tokens(train_n, 0),
        eval_dataset=tokens(eval_n, 1) if eval_n else None,
        callbacks=[callback, Boom()] if callbacks_extra else [callback],
        **on_fake_clock,
    )
    trainer.train()
    return trainer


def energy(*, clock: FakeClock | None = None, **options) -> EnergyCallback:
    """A callback on the real clock, or with its runs on ``clock`` (the ``steady`` fixture's)."""
    options.setdefault("sources", ("cpu", "ram"))
    options.setdefault("country_iso_code", "FRA")
    options.setdefault("window_s", 0.05)
    callback = EnergyCallback(**options)
    return callback if clock is None else on_clock(callback, clock, "transformers")


def test_every_log_entry_carries_the_energy_metrics(tmp_path, steady):
    callback = energy(clock=steady)
    trainer = run(tmp_path, callback, eval_strategy="steps", eval_steps=6)
    train_logs = [e for e in trainer.state.log_history if "loss" in e]
    eval_logs = [e for e in trainer.state.log_history if "eval_loss" in e]
    assert [e["step"] for e in train_logs] == [4, 8, 12]
    assert [e["step"] for e in eval_logs] == [6, 12]
    for entry in train_logs:
        assert all(key in entry for key in KEYS), entry
        assert entry["energy/step_j"] == pytest.approx(STEADY_W * STEP_S)  # training steps only
    for entry in eval_logs:  # its set-up and its 2 batches
        assert entry["energy/eval_j"] == pytest.approx(STEADY_W * (EVAL_SETUP_S + 2 * STEP_S))
        assert "energy/step_j" not in entry
    totals_j = [e["energy/total_kwh"] * 3.6e6 for e in trainer.state.log_history if "energy/total_kwh" in e]
    # steps 4, 6 (its evaluation), 8, 12 and its evaluation, and the end of training's summary
    assert totals_j == pytest.approx([100.0, 300.0, 350.0, 450.0, 600.0, 600.0])
    assert callback.report.energy_j == pytest.approx(totals_j[-1])


def test_metrics_reach_tensorboard_event_files(tmp_path):
    callback = energy()
    run(tmp_path, callback, report_to=["tensorboard"], eval_strategy="steps", eval_steps=6)
    event_files = list((tmp_path / "out").rglob("events.out.tfevents.*"))
    assert event_files
    accumulator = EventAccumulator(str(event_files[0].parent))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    for key in KEYS:
        assert f"train/{key}" in tags, sorted(tags)
    steps = [e.step for e in accumulator.Scalars("train/energy/step_j")]
    assert steps == [4, 8, 12]
    step_j = [e.value for e in accumulator.Scalars("train/energy/step_j")]
    assert all(v > 0 for v in step_j)
    assert "train/energy/eval_j" in tags  # TensorBoardCallback prefixes keys that do not start with eval_


def test_console_output_shows_the_metrics(tmp_path, capsys):
    run(tmp_path, energy(), max_steps=4)
    out = capsys.readouterr().out
    assert "'energy/step_j'" in out
    assert "wattwise:" in out and "by phase:" in out  # the end-of-training summary


def test_eval_energy_is_separate_from_training(tmp_path):
    callback = energy()
    run(tmp_path, callback, eval_strategy="steps", eval_steps=4, eval_n=64)
    report = callback.report
    eval_phase, train_phase = report.by_phase["eval"], report.by_phase["train"]
    assert eval_phase.passes == 3
    assert eval_phase.steps == 3 * 8  # 64 samples / batch 8, three passes
    assert eval_phase.energy_j > 0 and train_phase.energy_j > 0
    assert train_phase.steps == 12
    assert report.energy_j == pytest.approx(eval_phase.energy_j + train_phase.energy_j, rel=1e-9)


def test_step_energies_sum_to_the_total_and_files_are_written(tmp_path):
    callback = energy()
    run(tmp_path, callback, eval_strategy="steps", eval_steps=6)
    out = tmp_path / "out" / "wattwise"
    with open(out / "steps.csv") as f:
        rows = list(csv.DictReader(f))
    report = callback.report
    assert sum(float(r["energy_j"]) for r in rows) == pytest.approx(report.energy_j, rel=1e-3)
    # every joule is attributed to a step (optimizer step in train, batch in eval)
    assert all(int(r["steps"]) > 0 for r in rows)
    per_step_sum = sum(float(r["step_j"]) * int(r["steps"]) for r in rows)
    assert per_step_sum == pytest.approx(report.energy_j, rel=1e-3)
    train_rows = [r for r in rows if r["phase"] == "train"]
    assert sum(float(r["step_j"]) * int(r["steps"]) for r in train_rows) == pytest.approx(
        report.by_phase["train"].energy_j, rel=1e-3
    )
    data = json.loads((out / "report.json").read_text())
    assert data["train_steps"] == 12 and data["planned_steps"] == 12 and data["partial"] is False
    assert data["by_component"]["cpu"]["measured"] is False
    with open(out / "emissions.csv") as f:
        row = next(csv.DictReader(f))
    assert float(row["energy_consumed"]) == pytest.approx(report.energy_kwh)
    assert row["country_iso_code"] == "FRA"


def test_gradient_accumulation_counts_optimizer_steps(tmp_path):
    callback = energy()
    trainer = run(tmp_path, callback, max_steps=5, gradient_accumulation_steps=3, logging_steps=1)
    assert callback.report.train_steps == 5
    assert len([e for e in trainer.state.log_history if "energy/step_j" in e]) == 5


@pytest.mark.parametrize("count", ["all", "no"])
def test_tokens_counted_by_the_trainer_reach_the_forecast(tmp_path, count):
    callback = energy(window_s=0.001)
    trainer = run(tmp_path, callback, eval_n=0, include_num_input_tokens_seen=count)
    windows = callback.runs.run.projection.forecaster._windows
    if count == "all":  # 12 steps of 4 sequences of 16 tokens, each window with its steps' tokens
        assert trainer.state.num_input_tokens_seen == 12 * 4 * 16
        assert sum(w.work for w in windows) == trainer.state.num_input_tokens_seen
        assert all(w.work == 64 * w.steps for w in windows)
    else:
        assert all(w.work is None for w in windows)


def test_epochs_without_max_steps(tmp_path):
    callback = energy()
    run(tmp_path, callback, max_steps=-1, num_train_epochs=2, train_n=32, eval_strategy="epoch")
    assert callback.report.train_steps == 16
    assert callback.report.planned_steps == 16
    assert callback.report.by_phase["eval"].passes == 2


def test_training_twice_with_one_callback_reports_each_run(tmp_path):
    callback = energy()
    trainer = run(tmp_path, callback, max_steps=4)
    first = callback.report
    trainer.args.max_steps = 8
    trainer.train()
    assert first.train_steps == 4
    assert callback.report is not first and callback.report.train_steps == 8
    assert callback.report.run_id != first.run_id


def test_a_source_failing_mid_run_does_not_stop_training(tmp_path, monkeypatch):
    class BrokenAfterStart(CpuTimeSource):
        reads = 0

        def read_j(self):
            BrokenAfterStart.reads += 1
            if BrokenAfterStart.reads > 2:
                raise RuntimeError("counter exploded")
            return super().read_j()

    def fake_open(names, **kwargs):
        return OpenedSources(sources=[BrokenAfterStart(2.0, "test source")])

    monkeypatch.setattr(wattwise.sources, "open_sources", fake_open)
    callback = energy()
    trainer = run(tmp_path, callback)
    assert trainer.state.global_step == 12
    assert any("counter exploded" in note for note in callback.report.notes)
    assert callback.report.train_steps == 12


@pytest.mark.parametrize("method, hook", [("metrics", "on_log"), ("step", "on_step_end")])
def test_a_failing_hook_is_reported_once_and_training_goes_on(tmp_path, monkeypatch, caplog, method, hook):
    """on_step_end guards itself inline (it runs at every step), the other hooks through @guarded."""
    callback = energy()

    def explode(*args, **kwargs):
        raise ZeroDivisionError("bug in wattwise")

    monkeypatch.setattr(callback.runs.run, method, explode)
    with caplog.at_level("WARNING", logger="wattwise"):
        trainer = run(tmp_path, callback)
    assert trainer.state.global_step == 12
    failures = [r for r in caplog.records if "bug in wattwise" in r.getMessage()]
    assert len(failures) == 1
    assert callback.report is not None and any(f"EnergyCallback.{hook} failed" in n for n in callback.report.notes)
    if method == "metrics":
        assert callback.report.train_steps == 12


def test_no_network_access_during_a_run(tmp_path, monkeypatch):
    """No connection, datagram or name lookup, even with a region (which loads codecarbon's data).

    (Importing urllib3, a codecarbon dependency, creates and binds one socket to ::1 to probe IPv6
    support; that never leaves the machine, so it is not counted here.)
    """
    attempts = []

    def recorder(name, real):
        def call(*args, **kwargs):
            attempts.append((name, args[1:2]))
            return real(*args, **kwargs)

        return call

    for name in ("connect", "connect_ex", "sendto", "sendall", "send"):
        monkeypatch.setattr(socket.socket, name, recorder(name, getattr(socket.socket, name)))
    monkeypatch.setattr(socket, "getaddrinfo", recorder("getaddrinfo", socket.getaddrinfo))
    monkeypatch.setattr(socket, "gethostbyname", recorder("gethostbyname", socket.gethostbyname))
    callback = EnergyCallback(country_iso_code="USA", region="california", window_s=0.05)
    run(tmp_path, callback, eval_strategy="steps", eval_steps=6)
    assert callback.report.energy_j > 0
    assert callback.report.carbon["region"] == "california"
    assert attempts == []


def test_no_socket_is_created_during_a_run(tmp_path, monkeypatch):
    created = []
    real_init = socket.socket.__init__

    def recording_init(self, *args, **kwargs):
        created.append(args)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "__init__", recording_init)
    callback = EnergyCallback(country_iso_code="FRA", pue=1.2, window_s=0.05)
    run(tmp_path, callback, eval_strategy="steps", eval_steps=6)
    assert callback.report.energy_j > 0
    assert created == []


def test_only_the_main_process_writes_files(tmp_path):
    from transformers import TrainerControl, TrainerState

    callback = energy()
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True)
    state = TrainerState(is_world_process_zero=False, max_steps=3)
    control = TrainerControl()
    callback.on_train_begin(args, state, control)
    for _ in range(3):
        callback.on_step_end(args, state, control)
    callback.on_train_end(args, state, control)
    assert callback.report.train_steps == 3
    assert not (tmp_path / "out" / "wattwise").exists()


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"pue": 0.5}, "pue"),
        ({"country_iso_code": "France"}, "country_iso_code"),
        ({"country_iso_code": "XYZ"}, "country_iso_code"),
        ({"cloud_provider": "gcp"}, "cloud_region"),
        ({"cloud_provider": "gcp", "cloud_region": "moon-1"}, "cloud_region"),
        ({"region": "california"}, "country_iso_code"),
        ({"sources": ("nvml", "geiger")}, "sources"),
        ({"window_s": -1}, "window_s"),
    ],
)
def test_bad_arguments_raise_at_construction_naming_the_argument(options, named):
    with pytest.raises(ValueError, match=named):
        EnergyCallback(**options)


def test_an_unknown_argument_is_a_type_error_naming_it():
    """The arguments are an explicit signature (IDE completion, LightningCLI): Python names a typo."""
    with pytest.raises(TypeError, match="budget"):
        EnergyCallback(budget=3)


def test_environment_variables_configure_the_callback(tmp_path, monkeypatch):
    monkeypatch.setenv("WATTWISE_COUNTRY_ISO_CODE", "swe")
    monkeypatch.setenv("WATTWISE_PUE", "1.25")
    monkeypatch.setenv("WATTWISE_SOURCES", "cpu")
    callback = EnergyCallback(window_s=0.05)
    run(tmp_path, callback, max_steps=4)
    assert callback.report.carbon["country_iso_code"] == "SWE"
    assert callback.report.carbon["pue"] == 1.25
    assert list(callback.report.by_component) == ["cpu"]


def test_a_budget_stop_ends_training_through_the_trainer(tmp_path, steady):
    # 60 J: spent by the window that closes at step 3 (25 J a step, a window a step)
    callback = energy(clock=steady, budget_kwh=60.0 / 3.6e6, on_budget="stop", window_s=STEP_S)
    trainer = run(tmp_path, callback, max_steps=12)
    report = callback.report
    assert trainer.state.global_step == 3
    assert report.budget["stopped_at_step"] == trainer.state.global_step == report.train_steps
    assert not report.partial


def test_evaluation_energy_includes_its_set_up_and_first_batch(tmp_path, steady):
    callback = energy(clock=steady, window_s=10.0)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=32, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0)
    )
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=8, per_device_train_batch_size=4, per_device_eval_batch_size=4,
        logging_steps=4, eval_strategy="steps", eval_steps=4, save_strategy="no", report_to=[], use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Ticking(model=model, args=args, train_dataset=tokens(64, 0), eval_dataset=tokens(16, 1),
                      callbacks=[callback], clock=steady)
    trainer.train()
    evals = [e for e in trainer.state.log_history if "eval_loss" in e]
    assert len(evals) == 2
    for entry in evals:  # its set-up and every one of its 4 batches, the first included; no training step
        assert entry["energy/eval_j"] == pytest.approx(STEADY_W * (EVAL_SETUP_S + 4 * STEP_S))
    assert callback.report.by_phase["eval"].steps == 8
    assert callback.report.by_phase["train"].energy_j == pytest.approx(STEADY_W * 8 * STEP_S)


def test_a_new_trainer_with_a_callback_whose_first_run_failed(tmp_path):
    callback = energy(window_s=1e-6)
    with pytest.raises(RuntimeError, match="boom"):
        run(tmp_path / "first", callback, max_steps=8, callbacks_extra=True)
    first = callback.report  # finished (partial) the moment train() raised, not when the next run starts
    assert first.partial and first.train_steps == 2
    trainer = run(tmp_path / "second", callback, max_steps=6, report_to=["tensorboard"])
    report = callback.report
    assert report.train_steps == 6 and not report.partial
    handler = trainer.callback_handler.callbacks
    assert handler.index(callback) == 1  # right after DefaultFlowCallback, before the loggers
    data = json.loads((tmp_path / "second" / "out" / "wattwise" / "report.json").read_text())
    assert data["partial"] is False and data["train_steps"] == 6
    failed = json.loads((tmp_path / "first" / "out" / "wattwise" / "report.json").read_text())
    assert failed["partial"] is True and failed["train_steps"] == 2
