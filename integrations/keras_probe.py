"""``probe`` for Keras: each candidate (``batch_size``, ``dtype_policy``) trained for a few steps on a clone of
the model, and the planned ``fit`` projected with it.

Example::

    from wattwise.integrations.keras import probe

    result = probe(model, x, y, {"batch_size": [32, 64, 128], "dtype_policy": ["float32", "mixed_bfloat16"]},
                   steps=40, epochs=5, validation_split=0.2)
    print(result)

The planned run is the ``fit`` the keyword arguments describe (``epochs``, ``steps_per_epoch``,
``validation_split`` or ``validation_data``, ``validation_freq``, ``validation_batch_size``):
epochs x the batches of an epoch at the candidate's batch size, and a validation pass at each
epoch ``validation_freq`` selects. ``x`` may be arrays (or dicts/lists of them) with ``y``, or a
dataset with ``y=None`` whose batch size is its own (a torch ``DataLoader`` is rebuilt for a
``batch_size`` candidate; another dataset allows ``dtype_policy`` candidates only). Each candidate
trains a clone of the model (``keras.models.clone_model``, every layer rebuilt under the
candidate's dtype policy, the model's weights copied in, compiled from its compile configuration
with a fresh optimizer), so the user's model, its optimizer and the global dtype policy are left
as they were; so is the random state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import keras

from wattwise.hooks import BatchCount
from wattwise.integrations.keras import _batch_sizes, _epoch_iterator
from wattwise.options import Options
from wattwise.probe_result import ProbeResult
from wattwise.probe_state import rebatch_loader
from wattwise.probing import Plan, Prober, expand
from wattwise.run import Run

KEYS = ("batch_size", "dtype_policy")
DEFAULT_BATCH_SIZE = 32  # Keras's own, for arrays


def probe_keras(model: Any, x: Any, y: Any, candidates: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]],
                *, steps: int, epochs: int = 1, validation_data: Any = None, validation_split: float = 0.0,
                validation_freq: int = 1, validation_batch_size: int | None = None,
                steps_per_epoch: int | None = None, options: Options | None = None) -> ProbeResult:
    """What ``wattwise.integrations.keras.probe`` does (see the module docstring)."""
    configs = expand(candidates)
    unknown = sorted({key for config in configs for key in config} - set(KEYS))
    if unknown:
        raise ValueError(f"candidates: {', '.join(unknown)} (a Keras probe varies {' and '.join(KEYS)})")
    if not getattr(model, "compiled", False):
        raise ValueError("compile the model first (the probe trains clones compiled the same way)")
    data = _Data(x, y, validation_data, validation_split, validation_batch_size, steps_per_epoch)
    if any("batch_size" in config for config in configs):
        data.check_batch_size()
    fit = _Fit(epochs, validation_freq)
    with Prober("keras", steps=steps, options=options, model=model) as prober:
        for config in configs:
            candidate = _Candidate(model, data, fit, config, prober)
            prober.measure(config, train=candidate.train, plan=candidate.plan,
                           evaluate=candidate.evaluate if data.has_validation else None, setup=candidate.setup())
    return prober.result


class _Fit:
    def __init__(self, epochs: int, validation_freq: int | Sequence[int]) -> None:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs <= 0:
            raise ValueError(f"epochs must be a whole number > 0, got {epochs!r}")
        self.epochs, self.validation_freq = epochs, validation_freq

    def passes(self) -> int:
        """Validation passes over the fit: every ``validation_freq``-th epoch, or the epochs listed."""
        if isinstance(self.validation_freq, int):
            return self.epochs // max(self.validation_freq, 1)
        return len([e for e in set(self.validation_freq) if 1 <= e <= self.epochs])


class _Data:
    """The training and validation data, batched at a candidate's batch size."""

    def __init__(self, x: Any, y: Any, validation_data: Any, validation_split: float, validation_batch_size: int | None,
                 steps_per_epoch: int | None) -> None:
        self.arrays = _is_arrays(x)
        self.x, self.y, self.val = x, y, validation_data
        if validation_split and self.arrays:
            n = _length(x)
            cut = int(n * (1.0 - validation_split))
            self.val = (_slice(x, cut, n), _slice(y, cut, n) if y is not None else None)
            self.x, self.y = _slice(x, 0, cut), _slice(y, 0, cut) if y is not None else None
        elif validation_split:
            raise ValueError("validation_split needs arrays; pass validation_data with a dataset")
        if isinstance(self.val, tuple) and len(self.val) > 2:
            self.val = self.val[:2]  # sample weights are not needed to measure a pass
        self.has_validation = self.val is not None
        self.validation_batch_size = validation_batch_size
        self.steps_per_epoch = steps_per_epoch

    def check_batch_size(self) -> None:
        if not self.arrays and not hasattr(self.x, "batch_size"):
            raise ValueError(f"batch_size: x is a {type(self.x).__name__} whose batches are its own; probe "
                             "dtype_policy only, or pass arrays (or a torch DataLoader)")

    def train_kwargs(self, batch_size: int | None) -> dict[str, Any]:
        if self.arrays:
            return {"x": self.x, "y": self.y, "batch_size": batch_size or DEFAULT_BATCH_SIZE}
        x = rebatch_loader(self.x, batch_size) if batch_size and hasattr(self.x, "batch_size") else self.x
        return {"x": x}

    def batches(self, batch_size: int | None) -> int | None:
        """Training batches of an epoch at ``batch_size``."""
        if self.steps_per_epoch:
            return self.steps_per_epoch
        if self.arrays:
            return math.ceil(_length(self.x) / (batch_size or DEFAULT_BATCH_SIZE))
        return _dataset_length(self.train_kwargs(batch_size)["x"])

    def val_kwargs(self, batch_size: int | None, batches: int | None = None) -> dict[str, Any]:
        """The validation data (its first ``batches`` batches), as ``evaluate`` takes it."""
        size = self.validation_batch_size or batch_size or DEFAULT_BATCH_SIZE
        if isinstance(self.val, tuple) and _is_arrays(self.val[0]):
            n = _length(self.val[0]) if batches is None else min(_length(self.val[0]), batches * size)
            vx, vy = self.val[0], self.val[1] if len(self.val) > 1 else None
            return {"x": _slice(vx, 0, n), "y": _slice(vy, 0, n) if vy is not None else None, "batch_size": size}
        return {"x": self.val, "steps": batches}

    def val_batches(self, batch_size: int | None) -> int | None:
        kwargs = self.val_kwargs(batch_size)
        if "batch_size" in kwargs:
            return math.ceil(_length(kwargs["x"]) / kwargs["batch_size"])
        return _dataset_length(self.val)


class _Measure(keras.callbacks.Callback):
    """Drives the candidate's run: a step per training batch (stopping after the probe's steps), one
    per validation batch; the samples from Keras's data adapter."""

    def __init__(self, run: Run, steps: int) -> None:
        super().__init__()
        self.run, self.steps = run, steps
        self.done, self.loss = 0, None
        self.train: tuple[int | None, tuple[int, int, int] | None] = (None, None)  # fit's batches per epoch, _batch_sizes
        self.count = BatchCount()  # the running epoch or evaluation pass

    def on_train_begin(self, logs=None):
        iterator = _epoch_iterator()
        self.train = (getattr(iterator, "num_batches", None), _batch_sizes(iterator))

    def on_epoch_begin(self, epoch, logs=None):
        self.count = BatchCount(*self.train)

    def on_train_batch_end(self, batch, logs=None):
        self._step(batch)
        self.loss = (logs or {}).get("loss", self.loss)
        if self.done >= self.steps:
            self.model.stop_training = True

    def on_test_begin(self, logs=None):
        iterator = _epoch_iterator()
        self.count = BatchCount(getattr(iterator, "num_batches", None), _batch_sizes(iterator))

    def on_test_batch_end(self, batch, logs=None):
        self._step(batch)

    def _step(self, batch: int) -> None:
        steps, samples = self.count.ended(batch)
        self.done += steps
        self.run.step(samples=samples, steps=steps)


class _Candidate:
    def __init__(self, model: Any, data: _Data, fit: _Fit, config: dict[str, Any], prober: Prober) -> None:
        self.model, self.data, self.fit, self.config, self.prober = model, data, fit, config, prober
        self.batch_size = config.get("batch_size")
        self.clone: Any = None

    def setup(self) -> dict[str, Any]:
        from wattwise.hooks import precision_name

        policy = self.config.get("dtype_policy", keras.config.dtype_policy().name)
        batch = self.batch_size or (DEFAULT_BATCH_SIZE if self.data.arrays else getattr(self.data.x, "batch_size", None))
        return {"batch_size": batch, "precision": precision_name(policy)}

    def train(self, run: Run) -> float | None:
        self.clone = _clone(self.model, self.config.get("dtype_policy"))
        measure = _Measure(run, self.prober.steps)
        batches = self.data.batches(self.batch_size)
        epochs = math.ceil(self.prober.steps / batches) + 1 if batches else 1
        extra = {"steps_per_epoch": self.prober.steps} if not batches else {}
        self.clone.fit(**self.data.train_kwargs(self.batch_size), epochs=epochs, callbacks=[measure], verbose=0,
                       **extra)
        return measure.loss

    def plan(self) -> Plan:
        batches = self.data.batches(self.batch_size)
        if not batches:
            raise ValueError("the batches of an epoch are not known: pass steps_per_epoch=")
        passes = self.fit.passes() if self.data.has_validation else 0
        per_pass = self.data.val_batches(self.batch_size) if passes else None
        return Plan(steps=self.fit.epochs * batches, eval_passes=passes if per_pass else 0, eval_batches=per_pass)

    def evaluate(self, run: Run) -> None:
        batches = self.prober.eval_batches(self.data.val_batches(self.batch_size) or 1)
        self.clone.evaluate(**self.data.val_kwargs(self.batch_size, batches), callbacks=[_Measure(run, 0)], verbose=0)


def _clone(model: Any, dtype_policy: str | None) -> Any:
    """The model rebuilt (every layer under ``dtype_policy`` when given), its weights copied in, compiled
    as the model was with a fresh optimizer. The global dtype policy is left as it was."""
    def rebuilt(layer: Any) -> Any:
        config = layer.get_config()
        if not isinstance(layer, keras.layers.InputLayer):
            config["dtype"] = dtype_policy
        return layer.__class__.from_config(config)

    before = keras.config.dtype_policy()
    try:
        if dtype_policy is not None:
            keras.config.set_dtype_policy(dtype_policy)  # layers a subclassed model builds itself
        try:
            clone = keras.models.clone_model(model, clone_function=rebuilt if dtype_policy else None)
        except ValueError:  # a subclassed model: rebuilt from its config under the global policy
            clone = keras.models.clone_model(model)
    finally:
        keras.config.set_dtype_policy(before)
    clone.set_weights(model.get_weights())
    try:
        clone.compile_from_config(model.get_compile_config())
    except Exception:  # objects that do not serialize: the same ones, but a fresh optimizer and no metrics
        arguments = dict(model._compile_config.config)
        optimizer = model.optimizer
        arguments.update(optimizer=type(optimizer).from_config(optimizer.get_config()), metrics=None,
                         weighted_metrics=None)
        clone.compile(**arguments)
    return clone


def _is_arrays(x: Any) -> bool:
    leaves = keras.tree.flatten(x) if x is not None else []
    return bool(leaves) and all(hasattr(leaf, "shape") and hasattr(leaf, "__getitem__") for leaf in leaves)


def _length(x: Any) -> int:
    return int(keras.tree.flatten(x)[0].shape[0])


def _slice(x: Any, start: int, stop: int) -> Any:
    return keras.tree.map_structure(lambda a: a[start:stop], x)


def _dataset_length(dataset: Any) -> int | None:
    try:
        cardinality = getattr(dataset, "cardinality", None)
        n = int(cardinality()) if callable(cardinality) else len(dataset)
    except Exception:
        return None
    return n if n > 0 else None
