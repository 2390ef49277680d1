"""``probe`` for Lightning: each candidate (a batch size, Trainer arguments such as ``precision``) fitted for
a few steps on a fresh Trainer, and the planned run projected with it.

Example::

    from wattwise.integrations.lightning import probe

    result = probe({"max_epochs": 3}, model, datamodule,
                   {"batch_size": [32, 64, 128], "precision": ["32-true", "bf16-mixed"]}, steps=40)
    print(result)

The first argument is the keyword arguments of the ``Trainer`` the run will use, or a factory that
builds it from keyword arguments (``lambda **kw: L.Trainer(max_epochs=3, **kw)``: the probe's own
arguments, such as ``max_steps``, ``callbacks`` and ``logger``, must win over the factory's).
``batch_size`` follows Lightning's batch-size tuner: set as the ``batch_size`` attribute of the
datamodule, the module or its ``hparams``, wherever there is one; with plain DataLoaders and none of
these, the loaders are rebuilt with the candidate's batch size. Every other key is a ``Trainer``
argument. Each candidate fits ``steps`` optimizer steps (no logger, checkpoints, progress bar, sanity
check or validation: a Trainer of the probe's own with only its measuring callback), then, when the
module validates, a second Trainer runs a few validation batches. The planned run is the user's
Trainer's: ``max_steps``, ``max_epochs`` x the optimizer steps of an epoch at the candidate's batch
size (``limit_train_batches`` and ``accumulate_grad_batches`` applied), whichever ends first, with
the validation passes its schedule makes (``val_check_interval``, ``check_val_every_n_epoch``; the
sanity check's few batches are left out). The module (weights, dtypes, modes, attributes such as
its trainer), the datamodule's attributes and the random state are left as they were.
"""

from __future__ import annotations

import inspect
import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from wattwise.hooks import count_samples, precision_name
from wattwise.integrations.lightning import _BASES
from wattwise.options import Options
from wattwise.probe_result import ProbeResult
from wattwise.probe_state import rebatch_loader, restore_attributes
from wattwise.probing import Plan, Prober, expand
from wattwise.run import Run

QUIET = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False}


def probe_lightning(trainer: Mapping[str, Any] | Callable[..., Any], model: Any, data: Any,
                    candidates: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]], *, steps: int,
                    options: Options | None) -> ProbeResult:
    """What ``wattwise.integrations.lightning.probe`` does (see the module docstring)."""
    configs = expand(candidates)
    factory = _factory(trainer, model)
    planned = factory(**QUIET)  # the Trainer the run will use: its plan, never fitted
    accepted = set(inspect.signature(type(planned).__init__).parameters) | {"batch_size"}
    unknown = sorted({key for config in configs for key in config} - accepted)
    if unknown:
        raise ValueError(f"candidates: {', '.join(unknown)} are neither batch_size nor Trainer arguments")
    source = _Data(model, data)
    if any("batch_size" in config for config in configs):
        source.check_batch_size()
    with tempfile.TemporaryDirectory(prefix="wattwise-probe-") as scratch:
        try:
            with Prober("lightning", steps=steps, options=options, model=model,
                        output_dir=planned.default_root_dir) as prober:
                for config in configs:
                    candidate = _Candidate(factory, planned, model, source, config, prober, scratch)
                    try:
                        prober.measure(config, train=candidate.train, plan=candidate.plan,
                                       evaluate=candidate.evaluate if source.validates() else None,
                                       setup=candidate.setup())
                    finally:
                        source.restore()
        finally:
            source.restore()
    return prober.result


def _factory(trainer: Mapping[str, Any] | Callable[..., Any], model: Any) -> Callable[..., Any]:
    if callable(trainer):
        return trainer
    if not isinstance(trainer, Mapping):
        raise ValueError(f"the first argument must be the Trainer's keyword arguments or a factory, got {trainer!r}")
    namespace = "pytorch_lightning" if type(model).__module__.startswith("pytorch_lightning") or any(
        c.__module__.startswith("pytorch_lightning") for c in type(model).__mro__) else "lightning.pytorch"
    import importlib

    cls = importlib.import_module(namespace).Trainer
    return lambda **overrides: cls(**{**trainer, **overrides})


class _Measure(*_BASES):
    """Drives the candidate's run: one step per optimizer step, one per validation batch."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.seen_step = 0
        self.loss: float | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        steps, self.seen_step = trainer.global_step - self.seen_step, trainer.global_step
        self.run.step(samples=count_samples(batch), steps=steps)
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if loss is not None:
            self.loss = float(loss)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.run.step(samples=count_samples(batch))


class _Data:
    """Where the batches come from (a datamodule, or loaders) and where a batch size is set."""

    def __init__(self, model: Any, data: Any) -> None:
        self.model = model
        self.datamodule = data if any(c.__name__ == "LightningDataModule" for c in type(data).__mro__) else None
        loaders = list(data) if isinstance(data, list | tuple) else [data]
        self.train, self.val = (None, None) if self.datamodule is not None else (
            loaders[0], loaders[1] if len(loaders) > 1 else None)
        self.loaders = (self.train, self.val)
        self.kept = [(o, dict(vars(o))) for o in (self.datamodule,) if o is not None]
        hparams = getattr(model, "hparams", None)
        self.kept_hparams = dict(hparams) if isinstance(hparams, Mapping) else None

    def targets(self) -> list[Any]:
        """Lightning's tuner convention: the datamodule's, the module's or its hparams' ``batch_size``."""
        found = [o for o in (self.datamodule, self.model) if o is not None and hasattr(o, "batch_size")]
        hparams = getattr(self.model, "hparams", None)
        return found + ([hparams] if isinstance(hparams, Mapping) and "batch_size" in hparams else [])

    def check_batch_size(self) -> None:
        if not self.targets() and (self.train is None or not hasattr(self.train, "batch_size")):
            raise ValueError("batch_size: neither the datamodule nor the module has a batch_size attribute "
                             "(Lightning's batch-size tuner convention), and no DataLoader was given")

    def set_batch_size(self, batch_size: int) -> None:
        targets = self.targets()
        for target in targets:
            if isinstance(target, Mapping):
                target["batch_size"] = batch_size
            else:
                target.batch_size = batch_size
        if not targets:
            self.train, self.val = (rebatch_loader(loader, batch_size) if loader is not None else None
                                    for loader in self.loaders)

    def current_batch_size(self) -> int | None:
        for target in self.targets():
            size = target["batch_size"] if isinstance(target, Mapping) else target.batch_size
            if isinstance(size, int):
                return size
        return getattr(self.train, "batch_size", None)

    def validates(self) -> bool:
        """Whether the module validates, and on batches the probe can find."""
        if not _overrides(self.model, "LightningModule", "validation_step"):
            return False
        if self.datamodule is not None:
            return _overrides(self.datamodule, "LightningDataModule", "val_dataloader")
        return self.val is not None

    def val_loader(self) -> Any:
        return self.datamodule.val_dataloader() if self.datamodule is not None else self.val

    def fit_kwargs(self) -> dict[str, Any]:
        return {"datamodule": self.datamodule} if self.datamodule is not None else {"train_dataloaders": self.train}

    def validate_kwargs(self) -> dict[str, Any]:
        return {"datamodule": self.datamodule} if self.datamodule is not None else {"dataloaders": self.val}

    def restore(self) -> None:
        for obj, attributes in self.kept:
            restore_attributes(obj, attributes)
        hparams = getattr(self.model, "hparams", None)
        if self.kept_hparams is not None and isinstance(hparams, Mapping):
            hparams.clear()
            hparams.update(self.kept_hparams)
        self.train, self.val = self.loaders


class _Candidate:
    """One configuration: its Trainer arguments, the Trainer that fitted it, its plan."""

    def __init__(self, factory: Callable[..., Any], planned: Any, model: Any, data: _Data, config: dict[str, Any],
                 prober: Prober, scratch: str) -> None:
        self.factory, self.planned, self.model, self.data = factory, planned, model, data
        self.config, self.prober, self.scratch = config, prober, scratch
        self.arguments = {k: v for k, v in config.items() if k != "batch_size"}
        self.fitted: Any = None

    def setup(self) -> dict[str, Any]:
        precision = self.arguments.get("precision", self.planned.precision)
        return {"batch_size": self.config.get("batch_size", self.data.current_batch_size()),
                "precision": precision_name(precision)}

    def _trainer(self, measure: _Measure, **limits: Any) -> Any:
        return self.factory(**{**self.arguments, **QUIET, **limits, "callbacks": [measure],
                               "default_root_dir": self.scratch, "num_sanity_val_steps": 0,
                               "val_check_interval": 1.0, "check_val_every_n_epoch": 1, "max_time": None})

    def train(self, run: Run) -> float | None:
        if "batch_size" in self.config:
            self.data.set_batch_size(self.config["batch_size"])
        measure = _Measure(run)
        self.fitted = self._trainer(measure, max_steps=self.prober.steps, max_epochs=-1, limit_val_batches=0)
        self.fitted.fit(self.model, **self.data.fit_kwargs())
        return measure.loss

    def plan(self) -> Plan:
        user, fitted = self.planned, self.fitted
        batches = int(fitted.num_training_batches)  # limit_train_batches applied, at this batch size
        accumulate = max(int(fitted.accumulate_grad_batches or 1), 1)
        per_epoch = max(math.ceil(batches / accumulate), 1)
        ends = [n for n in (user.max_steps if user.max_steps and user.max_steps > 0 else None,
                            user.max_epochs * per_epoch if user.max_epochs and user.max_epochs > 0 else None) if n]
        if not ends:
            raise ValueError("the planned run has no end (max_epochs=-1 and no max_steps): nothing to project")
        steps = min(ends)
        passes, per_pass = 0, None
        loader = self.data.val_loader() if self.data.validates() else None
        if loader is not None and user.limit_val_batches:
            limit = user.limit_val_batches
            per_pass = min(int(limit), len(loader)) if isinstance(limit, int) else int(len(loader) * limit)
            every = user.val_check_interval
            check_batch = max(1, int(batches * every)) if isinstance(every, float) else int(every)
            if user.check_val_every_n_epoch is None:
                passes = steps * accumulate // check_batch
            else:
                epochs = steps // per_epoch  # epochs that end: a run stopped by max_steps does not validate
                passes = (epochs // user.check_val_every_n_epoch) * max(batches // check_batch, 1)
        return Plan(steps=steps, eval_passes=passes if per_pass else 0, eval_batches=per_pass or None)

    def evaluate(self, run: Run) -> None:
        loader = self.data.val_loader()
        batches = self.prober.eval_batches(len(loader))
        self._trainer(_Measure(run), limit_val_batches=batches).validate(self.model, verbose=False,
                                                                **self.data.validate_kwargs())


def _overrides(obj: Any, base_name: str, method: str) -> bool:
    """Whether ``obj``'s class overrides ``method`` of its Lightning base class ``base_name``."""
    base = next((c for c in type(obj).__mro__ if c.__name__ == base_name), None)
    return base is not None and getattr(type(obj), method, None) is not getattr(base, method, None)
