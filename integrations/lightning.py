"""Energy and carbon of a Lightning run, per optimizer step, through ``LightningModule.log``.

Example::

    import lightning.pytorch as L            # or: import pytorch_lightning as L (the same class works)
    from lightning.pytorch.loggers import CSVLogger
    from wattwise.integrations.lightning import EnergyCallback

    energy = EnergyCallback(country_iso_code="FRA")
    trainer = L.Trainer(max_epochs=3, log_every_n_steps=10, logger=CSVLogger("logs"), callbacks=[energy])
    trainer.fit(model, train_loader, val_loader)
    energy.report.energy_kwh, energy.report.emissions_kg, energy.report.by_phase["eval"]

At the trainer's log steps (``log_every_n_steps``, as Lightning decides for its own step metrics)
the callback writes to every attached logger (``trainer.loggers``: CSV, TensorBoard, W&B, MLflow,
...), on the same rows as Lightning's own step metrics, and, for the first two keys, to the
progress bar through ``pl_module.log``; the forecast keys (``energy/forecast_*``,
``carbon/forecast_kg``) come with them once the forecaster has enough windows:

- ``energy/power_w``: mean power in watts since the previous log, all components;
- ``energy/step_j``: mean joules per optimizer step since the previous log (training only);
- ``energy/total_kwh``: energy since the trainer call began, all phases;
- ``carbon/total_kg``: kg CO2e of ``energy/total_kwh`` (location and PUE applied).

At the end of each validation pass (the sanity check included) it logs ``energy/eval_j``, the
joules of that pass, and at the end of a test pass ``energy/test_j``; both are epoch metrics, so
``EarlyStopping`` or ``ModelCheckpoint`` can monitor them. A standalone ``validate``/``test`` call
also logs the totals. Lightning allows no logging in prediction: its energy is in the report only.

A "step" is an optimizer step (``trainer.global_step``), so ``accumulate_grad_batches`` is
accounted for. Validation, test and prediction are measured as their own phases (``eval``,
``test``, ``predict``) with their batches and samples, never as training. The forecast projects
validation passes at the trainer's schedule (``val_check_interval``, ``check_val_every_n_epoch``);
until the first one has run, it leaves them out and says so.

Every trainer call (``fit``, ``validate``, ``test``, ``predict``) is one tracked run (a
``wattwise.Run``): at its end the callback prints a summary, sets ``report`` (a
``wattwise.RunReport``; ``reports`` keeps every call's) and, on global rank 0 only, writes
``report.json``, ``steps.csv``, ``emissions.csv`` and ``report.png`` under ``<dir>/wattwise/``,
where ``<dir>`` is ``output_dir=`` if given, else the first logger's ``log_dir``
(``trainer.log_dir``), else ``trainer.default_root_dir``. A later run in the same process to a
directory already used goes to ``<dir>/<stage>/wattwise/`` (``<dir>/test/wattwise/`` for
``trainer.test`` after ``trainer.fit``), so no report overwrites another. A run that raises, or a
process ended by SIGTERM/SIGINT, leaves a report marked ``partial``. The keyword arguments are
``wattwise.options.Options``'s (``LightningCLI`` and YAML configs set them as ``init_args``); a
bad value raises ``ValueError`` here, before any trainer exists.

``EnergyCallback`` subclasses the ``Callback`` base of every Lightning namespace installed
(``lightning.pytorch`` and ``pytorch_lightning`` are separate packages with separate class
trees): the one class is accepted by either ``Trainer`` and, being a plain module-level class, it
pickles for spawned processes.

Recommendations use ``trainer.precision``, the training DataLoader (batch size, ``num_workers``,
``pin_memory``), ``accumulate_grad_batches`` and the monitored metric (a ``ModelCheckpoint`` or
``EarlyStopping`` monitor, else ``val_loss``) after each validation.

Under ``strategy="ddp"`` (or ``ddp_spawn``, several nodes) every rank measures its own GPU (and one
per node the node's counters); at log steps and evaluation ends the ranks' energy is summed over
``torch.distributed``, so the logged figures and the one report are the run's totals
(docs/distributed.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from wattwise.hooks import count_samples, guarded, hook_failed, precision_name
from wattwise.options import Options
from wattwise.report import RunReport
from wattwise.run import POWER_W, STEP_J, Run
from wattwise.runs import RunSeries

__all__ = ["EnergyCallback", "LIGHTNING_NAMESPACES", "probe"]

PROG_BAR_KEYS = frozenset({POWER_W, STEP_J})  # meaningful at any scale; kWh reads 0.000 for minutes


def _callback_bases() -> tuple[tuple[type, ...], tuple[str, ...]]:
    """The ``Callback`` class of each installed Lightning namespace, ``lightning.pytorch`` first.

    Both bases are stateless classes of no-op hooks with the same method names and bodies, so the
    MRO is a plain chain and either Trainer finds our hooks first. Once torch and one namespace are
    loaded, importing the other takes about 0.1 s.
    """
    bases: list[type] = []
    names: list[str] = []
    try:
        from lightning.pytorch import Callback as LightningCallback

        bases.append(LightningCallback)
        names.append("lightning.pytorch")
    except ImportError:
        pass
    try:
        from pytorch_lightning import Callback as PytorchLightningCallback

        bases.append(PytorchLightningCallback)
        names.append("pytorch_lightning")
    except ImportError:
        pass
    if not bases:
        raise ImportError(
            "wattwise.integrations.lightning needs `lightning` or `pytorch_lightning`: "
            "pip install lightning (or pip install -e '.[lightning]' from a wattwise checkout)"
        )
    return tuple(bases), tuple(names)


_BASES, LIGHTNING_NAMESPACES = _callback_bases()


class EnergyCallback(Options, *_BASES):
    """Measure energy per optimizer step and log it through the LightningModule.

    Example: ``L.Trainer(callbacks=[EnergyCallback(country_iso_code="FRA")])``. Logged keys:
    ``energy/power_w``, ``energy/step_j``, ``energy/total_kwh``, ``carbon/total_kg`` and the
    forecast's ``energy/forecast_kwh``, ``energy/forecast_low_kwh``, ``energy/forecast_high_kwh``,
    ``carbon/forecast_kg`` and ``energy/sample_j`` at log steps; ``energy/eval_j``,
    ``energy/eval_sample_j``, ``energy/test_j`` and ``energy/test_sample_j`` at the end of each
    pass. See the module docstring.
    """

    def _configured(self) -> None:
        self.runs = RunSeries(self, framework="lightning")  # checks the location now
        self._seen_step = 0
        self._stage = "fit"
        self._log_dir: str | None = None

    @property
    def report(self) -> RunReport | None:
        """The report of the latest trainer call once it has ended (partial if it was interrupted)."""
        return self.runs.report

    @property
    def reports(self) -> list[RunReport]:
        return self.runs.reports

    # ---- run boundaries --------------------------------------------------------------------------

    @guarded
    def setup(self, trainer, pl_module, stage) -> None:
        self.runs.close(partial=True, at_last_reading=True)  # no-op unless the previous call never ended
        self._stage = str(getattr(stage, "value", stage))
        # Resolved here because trainer.log_dir is a collective under DDP: every rank calls setup.
        self._log_dir = None if self.config.output_dir else self._logger_dir(trainer)

    @guarded
    def on_train_start(self, trainer, pl_module) -> None:
        self._seen_step = trainer.global_step  # a resumed run restores global_step before this hook
        run = self._start(trainer, "train")
        # after a sanity-check validation the run started before the plan was known
        run.plan(self.runs.planned_steps or _planned_steps(trainer, run), eval_every_steps=_eval_every_steps(trainer))
        run.set_work(model=pl_module)  # for the run registry's calibration
        loader = _train_loader(trainer)
        run.evidence.describe(
            framework="lightning", device=trainer.strategy.root_device.type, precision=precision_name(trainer.precision),
            batch_size=getattr(loader, "batch_size", None), grad_accumulation_steps=trainer.accumulate_grad_batches,
            num_workers=getattr(loader, "num_workers", None), pin_memory=getattr(loader, "pin_memory", None),
        )

    @guarded
    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.runs.close(partial=True)

    @guarded
    def teardown(self, trainer, pl_module, stage: str) -> None:
        self.runs.close()

    # ---- training: the hot path ------------------------------------------------------------------

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        try:  # @guarded, inlined: this runs at every step, where the decorator's extra call costs 1-2 us
            run = self.runs.run
            if not run.active:
                return
            step = trainer.global_step
            steps, self._seen_step = step - self._seen_step, step
            run.step(samples=count_samples(batch), steps=steps)  # steps=0: an accumulation batch
            if steps and _is_log_step(trainer, step):
                aligned = _every_rank_logs(trainer, step)
                if aligned:
                    run.sync()  # sums over DDP ranks: a collective, so only where every rank logs
                self._log_step(trainer, pl_module, run.metrics(read=not aligned))
            if run.should_stop:  # on_budget="stop" and the budget is spent
                trainer.should_stop = True
        except Exception as exc:
            hook_failed(self, "on_train_batch_end", exc)

    # ---- validation, test, prediction ------------------------------------------------------------

    @guarded
    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._start(trainer, "eval").begin("eval")

    @guarded
    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._pass_batch("eval", batch)

    @guarded
    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._end("eval", trainer, pl_module)

    @guarded
    def on_validation_end(self, trainer, pl_module) -> None:
        # the epoch's metrics reach callback_metrics after on_validation_epoch_end, before this hook
        name, greater = _monitored(trainer)
        value = trainer.callback_metrics.get(name)
        if value is not None and not trainer.sanity_checking and trainer.state.fn == "fit":
            self.runs.run.record_metric(name, float(value), step=trainer.global_step, greater_is_better=greater)

    @guarded
    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._start(trainer, "test").begin("test")

    @guarded
    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._pass_batch("test", batch)

    @guarded
    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._end("test", trainer, pl_module)

    @guarded
    def on_predict_epoch_start(self, trainer, pl_module) -> None:
        self._start(trainer, "predict").begin("predict")

    @guarded
    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._pass_batch("predict", batch)

    @guarded
    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        self._end("predict", trainer, pl_module)

    # ---- internals -------------------------------------------------------------------------------

    def _start(self, trainer, phase: str) -> Run:
        """The call's run, started at its first pass, in ``phase``: no step-less window before it
        lands in the wrong phase (a standalone ``test`` run is all ``test``, a sanity check all ``eval``)."""
        if self.runs.active:
            return self.runs.run
        return self.runs.open(
            self._stage, output_dir=self._log_dir or trainer.default_root_dir, phase=phase,
            is_main_process=trainer.is_global_zero, node_leader=trainer.local_rank == 0,
            across_ranks=True,  # every rank runs the same steps and passes: totals are over all ranks
        )

    def _pass_batch(self, phase: str, batch: Any) -> None:
        run = self.runs.run
        if run.active and run.current_phase != phase:
            run.begin(phase)  # a pass whose epoch-start hook failed
        run.step(samples=count_samples(batch))

    def _end(self, phase: str, trainer, pl_module) -> None:
        run = self.runs.run
        if not run.active or run.current_phase != phase:
            return
        # a sanity check is not one of the run's regular evaluations: keep it out of the forecast
        try:
            run.end(phase, record_pass=not trainer.sanity_checking)
        finally:  # every rank ends its pass here and must reach the sync: the pass's joules over all ranks
            run.sync()
        if phase == "predict":
            return  # Lightning forbids self.log in prediction: the energy is in the report
        # in fit the training logs carry the totals
        for key, value in run.pass_metrics(phase, totals=trainer.state.fn != "fit").items():
            # Under DDP the values are already the run's (summed at the sync), the same on every rank:
            # sync_dist's mean keeps them as they are, and Lightning stops warning about epoch metrics.
            pl_module.log(key, value, on_step=False, on_epoch=True, prog_bar=key in PROG_BAR_KEYS,
                          batch_size=1, add_dataloader_idx=False, sync_dist=True)

    def _log_step(self, trainer, pl_module, metrics: dict[str, float]) -> None:
        """Step metrics straight to every attached logger, at the step Lightning writes its own under;
        the progress-bar keys also through ``pl_module.log`` (not to the loggers again).

        ``pl_module.log`` costs Lightning about 0.4 ms a key on a CPU (its result collection is
        traversed and deep-copied), which is 1% of a 5 ms step with eight keys every 50 steps; a
        logger's ``log_metrics`` costs microseconds.
        """
        # Lightning writes a batch's step metrics under the count of stepping batches *before* it,
        # which at on_train_batch_end is global_step - 1 (the tests check rows line up with its own)
        step = max(trainer.global_step - 1, 0)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        for key in PROG_BAR_KEYS & metrics.keys():
            pl_module.log(key, metrics[key], on_step=True, on_epoch=False, prog_bar=True, logger=False, batch_size=1)

    def _logger_dir(self, trainer) -> str | None:
        """The first logger's ``log_dir`` (a collective under DDP: every rank gets here), else None."""
        try:
            return trainer.log_dir
        except Exception as exc:
            self.runs.run.note(f"trainer.log_dir failed ({exc}); writing under default_root_dir")
            return None


def _planned_steps(trainer, run: Run) -> int | None:
    """The optimizer steps left to run: ``trainer.estimated_stepping_batches`` less the steps a
    resumed run (or an earlier fit) has already made; None when that is not a finite positive count."""
    try:
        planned = trainer.estimated_stepping_batches
    except Exception as exc:  # e.g. a GradientAccumulationScheduler with varying factors
        run.note(f"no planned step count: {exc}")
        return None
    if not (isinstance(planned, int | float) and 0 < planned < math.inf):
        return None
    left = int(planned) - trainer.global_step
    return left if left > 0 else None


def _eval_every_steps(trainer) -> int | None:
    """Optimizer steps between validation passes, from the trainer's schedule
    (``val_check_interval``, ``check_val_every_n_epoch``, ``accumulate_grad_batches``).

    None, and the cadence is inferred from the passes seen, when validation is off or the schedule
    has no fixed step cadence (several checks per epoch every n > 1 epochs), or when a resumed run
    starts between two passes (the forecaster counts steps from the start of this call).
    """
    if not getattr(trainer, "enable_validation", False):
        return None
    every_batches = getattr(trainer, "val_check_batch", None)
    per_epoch = getattr(trainer, "num_training_batches", None)
    every_n_epochs = getattr(trainer, "check_val_every_n_epoch", None)
    if not isinstance(every_batches, int) or every_batches <= 0:
        return None
    accumulate = max(int(trainer.accumulate_grad_batches or 1), 1)
    if isinstance(per_epoch, int) and every_batches >= per_epoch and every_n_epochs:  # every n-th epoch's end
        steps = math.ceil(per_epoch / accumulate) * every_n_epochs  # an epoch's last batch always steps
    elif every_batches % accumulate == 0 and (
        every_n_epochs is None  # every so many batches, counted across epochs
        or (every_n_epochs == 1 and isinstance(per_epoch, int) and per_epoch % every_batches == 0)  # k per epoch
    ):
        steps = every_batches // accumulate
    else:
        return None
    if steps <= 0 or trainer.global_step % steps:
        return None
    return steps


def _train_loader(trainer) -> Any:
    """The training DataLoader (the first one when there are several), or None."""
    loaders = trainer.train_dataloader
    if isinstance(loaders, Mapping):
        loaders = next(iter(loaders.values()), None)
    elif isinstance(loaders, list | tuple):
        loaders = loaders[0] if loaders else None
    return loaders


def _monitored(trainer) -> tuple[str, bool]:
    """The metric an ``EarlyStopping`` or ``ModelCheckpoint`` monitors (and whether higher is better),
    else ``val_loss``."""
    for callback in trainer.callbacks:
        monitor = getattr(callback, "monitor", None)
        if isinstance(monitor, str) and monitor:
            return monitor, getattr(callback, "mode", "min") == "max"
    return "val_loss", False


def _is_log_step(trainer, step: int) -> bool:
    """Lightning's own rule for writing step metrics to the loggers, at the end of a stepping batch."""
    return _every_rank_logs(trainer, step) or trainer.should_stop


def _every_rank_logs(trainer, step: int) -> bool:
    """A log step that every DDP rank reaches at the same step (``trainer.should_stop`` may be set
    on one rank only), where syncing across ranks is safe."""
    every = trainer.log_every_n_steps
    return bool(every and step % every == 0) or bool(trainer.fast_dev_run)


from collections.abc import Callable, Sequence  # noqa: E402  (the probe: appended, apart from the callback)

from wattwise.probe_result import ProbeResult  # noqa: E402


def probe(trainer: Mapping[str, Any] | Callable[..., Any], model: Any, data: Any,
          candidates: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]], *, steps: int = 40,
          options: Options | None = None) -> ProbeResult:
    """Fit each candidate (``batch_size``, ``Trainer`` arguments such as ``precision``) for ``steps`` optimizer
    steps and project the planned run with it (``max_epochs`` or ``max_steps``; validation passes included).

    Example: ``print(probe({"max_epochs": 3}, model, datamodule, {"batch_size": [32, 64], "precision":
    ["32-true", "bf16-mixed"]}, steps=40))``. ``trainer``: the ``Trainer``'s keyword arguments, or a factory
    ``lambda **kw: L.Trainer(max_epochs=3, **kw)``; ``data``: a datamodule, a training DataLoader, or
    (train, val) loaders. ``options``: ``wattwise.options.Options``. The module, the datamodule and the
    random state are left as they were (``wattwise/integrations/lightning_probe.py`` says how).
    """
    from wattwise.integrations.lightning_probe import probe_lightning

    return probe_lightning(trainer, model, data, candidates, steps=steps, options=options)
