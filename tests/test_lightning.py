"""The Lightning EnergyCallback, through real Trainer runs of a tiny linear model on the CPU.

Both namespaces are exercised: ``lightning.pytorch`` (the default here) and ``pytorch_lightning``.

Tests whose outcome hangs on when windows close or on exact energies run on the ``steady_power``
fixture's fake clock, which every batch moves by ``TICK_S`` (a ``Tick`` callback, added by
``make_trainer``), with the sources replaced by constant power on that clock: whatever the machine's
speed or load, windows close at batch counts and a phase's energy is exactly power x its batches.
The others use the real clock and sources and assert nothing that depends on how fast steps run.
"""

from __future__ import annotations

import csv
import importlib
import json
import pickle
import sys

import pytest
import torch
from fakes import FakeClock, on_clock, steady_sources
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader, TensorDataset

import wattwise.sources
from wattwise.integrations import lightning as integration
from wattwise.integrations.lightning import EnergyCallback

KEYS = ("energy/step_j", "energy/power_w", "energy/total_kwh", "carbon/total_kg")
LIGHTNING = importlib.import_module("lightning.pytorch")
TICK_S = 0.25  # fake seconds per batch (a binary fraction: window boundaries fall exactly on batches)
STEADY_W = 100.0  # the ``steady_power`` sources: 25 J a batch


def tiny_module(pl, *, fail_at_step: int | None = None):
    """A one-layer regression model, as a LightningModule of namespace ``pl``."""

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def loss(self, batch):
            x, y = batch
            return torch.nn.functional.mse_loss(self.layer(x), y)

        def training_step(self, batch, batch_idx):
            if fail_at_step is not None and self.global_step == fail_at_step:
                raise RuntimeError("training_step blew up")
            loss = self.loss(batch)
            self.log("train_loss", loss, on_step=True, on_epoch=False)
            return loss

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", self.loss(batch))

        def test_step(self, batch, batch_idx):
            self.log("test_loss", self.loss(batch))

        def predict_step(self, batch, batch_idx):
            return self.layer(batch[0])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    torch.manual_seed(0)
    return Tiny()


def loader(n: int, seed: int = 0, batch_size: int = 8) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    dataset = TensorDataset(torch.randn(n, 4, generator=generator), torch.randn(n, 1, generator=generator))
    return DataLoader(dataset, batch_size=batch_size)


def tick(pl, clock: FakeClock, seconds: float = TICK_S):
    """A callback of namespace ``pl`` making every batch (training, validation, test, predict) last
    ``seconds`` on ``clock``."""

    class Tick(pl.Callback):
        def advance(self, *args, **kwargs) -> None:
            clock.now += seconds

        on_train_batch_start = on_validation_batch_start = on_test_batch_start = on_predict_batch_start = advance

    return Tick()


def make_trainer(pl, tmp_path, callbacks, **overrides):
    """A CPU trainer; every batch lasts TICK_S on the fake clock of each callback in a list that has one."""
    if isinstance(callbacks, list):
        clocks = {id(c.clock): c.clock for c in callbacks if isinstance(getattr(c, "clock", None), FakeClock)}
        callbacks = [*callbacks, *(tick(pl, clock) for clock in clocks.values())]
    settings = dict(
        accelerator="cpu",
        devices=1,
        max_steps=8,
        log_every_n_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    settings.update(overrides)
    return pl.Trainer(callbacks=callbacks, **settings)


def energy(*, clock: FakeClock | None = None, **options) -> EnergyCallback:
    """A callback on the real clock, or with its runs on ``clock`` (the ``steady_power`` fixture's)."""
    options.setdefault("sources", ("cpu", "ram"))
    options.setdefault("country_iso_code", "FRA")
    options.setdefault("window_s", 0.05)
    options.setdefault("print_summary", False)
    callback = EnergyCallback(**options)
    return callback if clock is None else on_clock(callback, clock, "lightning")


@pytest.fixture
def steady_power(monkeypatch) -> FakeClock:
    """Every source replaced by one drawing a constant STEADY_W on a fake clock (pass it to ``energy``):
    the meter and the source read the same clock, so energy = STEADY_W x TICK_S per batch, exactly."""
    clock = FakeClock()
    monkeypatch.setattr(wattwise.sources, "open_sources", steady_sources({"gpu:0": STEADY_W}, clock))
    return clock


def read_rows(path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("namespace", ["lightning.pytorch", "pytorch_lightning"])
def test_one_class_serves_both_namespaces_and_logs_at_the_log_steps(tmp_path, namespace):
    pl = importlib.import_module(namespace)
    loggers = importlib.import_module(f"{namespace}.loggers")
    callback = energy()
    assert isinstance(callback, pl.Callback)
    reads = []
    real_log_metrics = callback.runs.run.metrics
    callback.runs.run.metrics = lambda **kw: reads.append(1) or real_log_metrics(**kw)
    logger = loggers.CSVLogger(str(tmp_path / "logs"))
    # a bare callback (not in a list) is accepted only by an isinstance check of the Trainer's namespace
    trainer = make_trainer(pl, tmp_path, callback, logger=logger, max_epochs=1, max_steps=-1)
    trainer.fit(tiny_module(pl), loader(64))  # 8 batches, logs every 2 steps
    assert trainer.callbacks.count(callback) == 1

    rows = read_rows(f"{logger.log_dir}/metrics.csv")
    loss_steps = [r["step"] for r in rows if r["train_loss"]]
    energy_steps = [r["step"] for r in rows if r["energy/step_j"]]
    assert loss_steps == energy_steps and len(energy_steps) == 4  # exactly Lightning's own log steps
    assert len(reads) == 4  # the meter is read for a log only at those steps
    for row in rows:
        if row["energy/step_j"]:
            assert all(float(row[key]) > 0 for key in KEYS), row
    totals = [float(r["energy/total_kwh"]) for r in rows if r["energy/total_kwh"]]
    assert totals == sorted(totals)
    assert set(trainer.progress_bar_metrics) >= {"energy/power_w", "energy/step_j"}

    report = callback.report
    assert report.framework == "lightning" and report.train_steps == 8 and report.planned_steps == 8
    assert report.by_phase["train"].samples == 64
    data = json.loads((tmp_path / "logs" / "lightning_logs" / "version_0" / "wattwise" / "report.json").read_text())
    assert data["train_steps"] == 8 and data["partial"] is False and data["run_id"] == report.run_id


def test_metrics_reach_tensorboard_event_files(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger

    logger = TensorBoardLogger(str(tmp_path / "tb"))
    trainer = make_trainer(LIGHTNING, tmp_path, [energy()], logger=logger, max_epochs=1, max_steps=-1)
    trainer.fit(tiny_module(LIGHTNING), loader(64), loader(16, seed=1))

    accumulator = EventAccumulator(logger.log_dir)
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert set(KEYS) | {"energy/eval_j"} <= tags, sorted(tags)
    energy_steps = [e.step for e in accumulator.Scalars("energy/step_j")]
    assert energy_steps == [e.step for e in accumulator.Scalars("train_loss")]
    assert len(energy_steps) == 4
    assert all(e.value > 0 for e in accumulator.Scalars("energy/step_j"))
    # one validation pass after the epoch (the sanity check's metrics are not logged by Lightning)
    assert len(accumulator.Scalars("energy/eval_j")) == 1


def test_validation_test_and_predict_are_measured_apart_from_training(tmp_path, steady_power):
    from lightning.pytorch.loggers import CSVLogger

    callback = energy(clock=steady_power)
    logger = CSVLogger(str(tmp_path / "logs"))
    trainer = make_trainer(LIGHTNING, tmp_path, [callback], logger=logger, max_epochs=2, max_steps=-1)
    model = tiny_module(LIGHTNING)
    trainer.fit(model, loader(32), loader(16, seed=1))  # 4 steps/epoch; 2 val batches, sanity check 2
    (test_metrics,) = trainer.test(model, loader(24, seed=2))
    trainer.predict(model, loader(40, seed=3))

    fit, test, predict = callback.reports
    assert callback.report is predict
    assert set(fit.by_phase) == {"train", "eval"}
    train, evaluation = fit.by_phase["train"], fit.by_phase["eval"]
    assert (train.steps, train.samples) == (8, 64)
    assert (evaluation.passes, evaluation.steps, evaluation.samples) == (3, 6, 48)  # sanity check + 2 epochs
    for phase in (train, evaluation):  # every batch lasts TICK_S: the phase's energy is exactly its batches'
        assert phase.duration_s == pytest.approx(TICK_S * phase.steps)
        assert phase.energy_j == pytest.approx(STEADY_W * TICK_S * phase.steps)
    assert fit.energy_j == pytest.approx(train.energy_j + evaluation.energy_j, rel=1e-9)

    assert (test.by_phase["test"].steps, test.by_phase["test"].samples, test.by_phase["test"].passes) == (3, 24, 1)
    assert (predict.by_phase["predict"].steps, predict.by_phase["predict"].samples) == (5, 40)
    for report, phase in ((test, "test"), (predict, "predict")):
        assert report.train_steps == 0 and list(report.by_phase) == [phase]
        assert report.energy_j == pytest.approx(report.by_phase[phase].energy_j, rel=1e-9)
        assert report.energy_j == pytest.approx(STEADY_W * TICK_S * report.by_phase[phase].steps)
    assert test_metrics["energy/test_j"] == pytest.approx(test.by_phase["test"].energy_j)

    # one report per trainer call, none overwriting another
    run_dir = tmp_path / "logs" / "lightning_logs" / "version_0"
    for path, report in ((run_dir, fit), (run_dir / "test", test), (run_dir / "predict", predict)):
        assert json.loads((path / "wattwise" / "report.json").read_text())["run_id"] == report.run_id
    test_rows = [r for r in read_rows(run_dir / "metrics.csv") if r.get("energy/test_j")]
    assert len(test_rows) == 1 and float(test_rows[0]["energy/total_kwh"]) == pytest.approx(test.energy_kwh)


def test_standalone_validate_writes_its_report_under_default_root_dir(tmp_path):
    callback = energy()
    trainer = make_trainer(LIGHTNING, tmp_path, [callback])
    trainer.validate(tiny_module(LIGHTNING), loader(24))
    report = callback.report
    assert report.by_phase["eval"].passes == 1 and report.by_phase["eval"].samples == 24
    assert report.train_steps == 0 and report.planned_steps is None
    data = json.loads((tmp_path / "wattwise" / "report.json").read_text())
    assert data["run_id"] == report.run_id and data["partial"] is False
    assert {"energy/eval_j", "energy/total_kwh", "carbon/total_kg"} <= set(trainer.callback_metrics)


def test_window_energies_in_steps_csv_sum_to_the_report(tmp_path, steady_power):
    callback = energy(clock=steady_power, window_s=2 * TICK_S)  # a window every 2 batches
    trainer = make_trainer(LIGHTNING, tmp_path, [callback], max_steps=12, val_check_interval=4)
    trainer.fit(tiny_module(LIGHTNING), loader(96), loader(16, seed=1))
    report = callback.report
    out = tmp_path / "wattwise"
    rows = read_rows(out / "steps.csv")
    # a sanity check of 2 batches, then 4 steps and a validation pass of 2 batches, three times over
    assert [(r["phase"], int(r["steps"])) for r in rows] == [("eval", 2)] + [("train", 2), ("train", 2), ("eval", 2)] * 3
    assert [float(r["energy_j"]) for r in rows] == pytest.approx([2 * STEADY_W * TICK_S] * len(rows))
    assert all(int(r["steps"]) > 0 for r in rows)  # every joule belongs to a step
    assert sum(float(r["energy_j"]) for r in rows) == pytest.approx(report.energy_j, rel=1e-9)
    for phase in ("train", "eval"):
        phase_rows = [r for r in rows if r["phase"] == phase]
        assert sum(float(r["step_j"]) * int(r["steps"]) for r in phase_rows) == pytest.approx(
            report.by_phase[phase].energy_j, rel=1e-9
        )
    assert report.by_phase["eval"].passes == 4  # sanity check + after steps 4, 8, 12
    assert float(read_rows(out / "emissions.csv")[0]["energy_consumed"]) == pytest.approx(report.energy_kwh)


def test_an_exception_in_training_step_leaves_a_partial_report(tmp_path):
    callback = energy()
    trainer = make_trainer(LIGHTNING, tmp_path, [callback])
    with pytest.raises(RuntimeError, match="training_step blew up"):
        trainer.fit(tiny_module(LIGHTNING, fail_at_step=3), loader(64))
    data = json.loads((tmp_path / "wattwise" / "report.json").read_text())
    assert data["partial"] is True and data["train_steps"] == 3
    assert callback.report.partial is True


def test_gradient_accumulation_counts_optimizer_steps_not_batches(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    callback = energy()
    logger = CSVLogger(str(tmp_path / "logs"))
    trainer = make_trainer(
        LIGHTNING, tmp_path, [callback], logger=logger, max_steps=-1, max_epochs=2,
        accumulate_grad_batches=3, log_every_n_steps=1,
    )
    trainer.fit(tiny_module(LIGHTNING), loader(64))  # 8 batches/epoch -> 3 optimizer steps/epoch
    report = callback.report
    assert trainer.global_step == 6
    assert report.train_steps == 6 and report.planned_steps == 6
    assert report.by_phase["train"].samples == 128  # every batch's samples, stepping or not
    assert len([r for r in read_rows(f"{logger.log_dir}/metrics.csv") if r["energy/step_j"]]) == 6


@pytest.mark.parametrize(
    ("schedule", "every"),
    [
        (dict(max_epochs=4, check_val_every_n_epoch=2), 16),  # 8 batches an epoch
        (dict(max_epochs=2, val_check_interval=0.5), 4),
        (dict(max_epochs=2, val_check_interval=3, check_val_every_n_epoch=None), 3),
        (dict(max_epochs=2, accumulate_grad_batches=3), 3),  # 3 optimizer steps an epoch
        (dict(max_epochs=4, val_check_interval=0.25, check_val_every_n_epoch=2), None),  # no fixed cadence
    ],
)
def test_the_validation_schedule_gives_the_forecast_its_cadence(tmp_path, schedule, every):
    callback = energy()
    trainer = make_trainer(LIGHTNING, tmp_path, [callback], max_steps=-1, num_sanity_val_steps=0, **schedule)
    trainer.fit(tiny_module(LIGHTNING), loader(64), loader(16, seed=1))
    report = callback.report
    assert callback.runs.run.projection.forecaster.eval_every_steps == every
    if every is not None:  # the cadence read from the trainer predicts the passes that ran
        assert report.by_phase["eval"].passes == report.train_steps // every


def test_without_validation_there_is_no_evaluation_cadence(tmp_path):
    callback = energy()
    trainer = make_trainer(LIGHTNING, tmp_path, [callback], max_steps=-1, max_epochs=1)
    trainer.fit(tiny_module(LIGHTNING), loader(64))
    assert callback.runs.run.projection.forecaster.eval_every_steps is None


def test_works_with_early_stopping_and_model_checkpoint_on_its_own_metric(tmp_path):
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    callback = energy()
    stopper = EarlyStopping(monitor="val_loss", patience=1, min_delta=1e6)  # never improves after epoch 1
    checkpoint = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), monitor="energy/eval_j", mode="min")
    trainer = make_trainer(
        LIGHTNING, tmp_path, [callback, stopper, checkpoint], enable_checkpointing=True,
        max_steps=-1, max_epochs=10,
    )
    trainer.fit(tiny_module(LIGHTNING), loader(32), loader(16, seed=1))
    assert trainer.current_epoch == 2  # stopped early
    report = callback.report
    assert report.train_steps == trainer.global_step == 8
    assert report.planned_steps == 40  # the plan was 10 epochs
    assert report.by_phase["eval"].passes == 3  # sanity check + 2 epochs
    assert checkpoint.best_model_path and checkpoint.best_model_score > 0
    assert json.loads((tmp_path / "wattwise" / "report.json").read_text())["partial"] is False


def test_a_failing_hook_is_reported_once_and_training_goes_on(tmp_path, monkeypatch, caplog):
    callback = energy()

    def explode(*args, **kwargs):
        raise ZeroDivisionError("bug in wattwise")

    monkeypatch.setattr(callback.runs.run, "metrics", explode)
    trainer = make_trainer(LIGHTNING, tmp_path, [callback])
    with caplog.at_level("WARNING", logger="wattwise"):
        trainer.fit(tiny_module(LIGHTNING), loader(64))
    assert trainer.global_step == 8
    assert len([r for r in caplog.records if "bug in wattwise" in r.getMessage()]) == 1
    assert callback.report.train_steps == 8
    assert any("on_train_batch_end failed" in note for note in callback.report.notes)


def test_only_global_rank_zero_writes_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(LIGHTNING.Trainer, "is_global_zero", property(lambda self: False))
    callback = energy(print_summary=True)
    trainer = make_trainer(LIGHTNING, tmp_path, [callback])
    trainer.fit(tiny_module(LIGHTNING), loader(64))
    assert callback.report.train_steps == 8
    assert not (tmp_path / "wattwise").exists()
    assert "wattwise:" not in capsys.readouterr().out


def test_output_dir_overrides_the_logger_directory(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    callback = energy(output_dir=str(tmp_path / "energy"))
    trainer = make_trainer(LIGHTNING, tmp_path, [callback], logger=CSVLogger(str(tmp_path / "logs")), max_steps=2)
    trainer.fit(tiny_module(LIGHTNING), loader(16))
    assert (tmp_path / "energy" / "wattwise" / "report.json").exists()
    assert not list((tmp_path / "logs").rglob("wattwise"))


@pytest.mark.parametrize(
    ("options", "named"),
    [({"pue": 0.5}, "pue"), ({"country_iso_code": "France"}, "country_iso_code")],
)
def test_bad_arguments_raise_at_construction_naming_the_argument(options, named):
    with pytest.raises(ValueError, match=named):
        EnergyCallback(**options)


def test_an_unknown_argument_is_a_type_error_naming_it():
    """The arguments are an explicit signature (IDE completion, LightningCLI): Python names a typo."""
    with pytest.raises(TypeError, match="budget"):
        EnergyCallback(budget=3)


def test_the_class_derives_from_every_installed_namespace_and_pickles():
    import pytorch_lightning

    assert integration.LIGHTNING_NAMESPACES == ("lightning.pytorch", "pytorch_lightning")
    assert issubclass(EnergyCallback, LIGHTNING.Callback) and issubclass(EnergyCallback, pytorch_lightning.Callback)
    copy = pickle.loads(pickle.dumps(energy(pue=1.2)))  # spawned processes receive the callback pickled
    assert type(copy) is EnergyCallback and copy.config.pue == 1.2


def test_bases_follow_what_is_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "pytorch_lightning", None)  # makes `import pytorch_lightning` fail
    assert integration._callback_bases() == ((LIGHTNING.Callback,), ("lightning.pytorch",))
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    with pytest.raises(ImportError, match="lightning"):
        integration._callback_bases()


def test_a_budget_stop_ends_training_through_the_trainer(tmp_path, steady_power):
    # 60 J: spent by the window that closes at step 3 (25 J a step, a window a step)
    callback = energy(clock=steady_power, budget_kwh=60.0 / 3.6e6, on_budget="stop", window_s=TICK_S)
    trainer = make_trainer(LIGHTNING, tmp_path, [callback], max_steps=8)
    trainer.fit(tiny_module(LIGHTNING), loader(64))
    report = callback.report
    assert trainer.global_step == 3
    assert report.budget["stopped_at_step"] == trainer.global_step == report.train_steps
