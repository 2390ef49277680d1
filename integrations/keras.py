"""Energy and carbon of a Keras 3 run, on any backend, per step, in Keras's own logs.

Example::

    import keras
    from wattwise.integrations.keras import EnergyCallback

    energy = EnergyCallback(country_iso_code="FRA", output_dir="runs/demo")
    history = model.fit(x, y, epochs=5, validation_split=0.2,
                        callbacks=[keras.callbacks.TensorBoard("runs/demo/tb"), energy])
    history.history["energy/step_j"], energy.report.energy_kwh, energy.report.by_phase["eval"]

Training batch logs (the progress bar; TensorBoard's ``batch_*`` scalars with ``update_freq``)
carry, recomputed whenever the counters are read (about every ``window_s``) and reused in between:

- ``energy/step_j``: mean joules per training step since the previous read;
- ``energy/power_w``: mean power in watts since the previous read, all components;
- ``energy/total_kwh``: energy since the call began, all phases;
- ``carbon/total_kg``: its kg CO2e (location and PUE applied);
- ``energy/forecast_kwh``, ``energy/forecast_low_kwh``, ``energy/forecast_high_kwh``,
  ``carbon/forecast_kg``: the whole planned fit's projected energy, its interval and its carbon,
  once a few steady windows have been measured.

Epoch logs (``History``, TensorBoard's ``epoch_*`` scalars, ``CSVLogger``, ``EarlyStopping``, the
progress bar) carry the same keys for the epoch (``energy/step_j`` over its training steps,
``energy/power_w`` over its whole duration, validation included; the latest forecast) and, after
a validation pass, ``energy/eval_j``, the joules of that pass. ``evaluate()`` ends with
``energy/eval_j`` and the totals in its final logs; ``predict()`` energy is in the report only.

A step is one training batch (``steps_per_execution`` counted). Validation inside ``fit``
(``validation_split``, ``validation_data``) and ``evaluate()`` are measured as phase ``eval``,
``predict()`` as ``predict``, never as training; samples are counted from Keras's data adapter
(arrays, datasets of known batch size) and from the predictions' leading dimension.

Every ``fit``, ``evaluate`` or ``predict`` call with this callback is one tracked run (a
``wattwise.Run``; a call inside ``fit``, such as validation, belongs to the fit). At its end the
callback prints a summary, sets ``report`` (a ``wattwise.RunReport``; ``reports`` keeps every
call's) and writes ``report.json``, ``steps.csv``, ``emissions.csv`` and ``report.png`` under
``<dir>/wattwise/``, next to the call's other outputs: ``<dir>`` is ``output_dir=`` if given, else
the ``log_dir`` of a ``keras.callbacks.TensorBoard`` in the call's callbacks, else the directory of
a ``CSVLogger``'s or ``ModelCheckpoint``'s file, else the current directory. A later run in the same
process to a directory already used goes to ``<dir>/<call>/wattwise/`` (``evaluate``,
``predict``, ``fit``, then ``<call>-2``...). The keyword arguments are
``wattwise.options.Options``'s; a bad value raises ``ValueError`` here.

Callback order: Keras hands one logs dict to each callback in list order, so a logger listed
before this callback would write an epoch before the energy keys are in it. At the start of each
call the callback moves itself to the front of Keras's ``CallbackList`` (the dispatcher, found on
the call stack), wherever it was put in ``callbacks=[...]``.

Interrupted runs: Keras has no exception hook. A call that raises leaves a report marked partial
as soon as Keras's ``CallbackList`` of that call is released (once the exception has been
handled), at this callback's next call, or at interpreter exit, whichever comes first; its figures
end at the last reading before the exception (at most ``window_s`` earlier), so nothing done after
it is charged to the run. SIGTERM and SIGINT finish it at once.

No backend code: the callback touches only Keras's callback API, so it runs unchanged on the
torch, TensorFlow and JAX backends.

Recommendations use the global dtype policy (precision), the batch size of the training data and
``val_loss`` at each epoch end. Multi-device Keras (``MirroredStrategy``, a JAX ``DataParallel``
distribution) is one process: every visible GPU is measured (docs/distributed.md).
"""

from __future__ import annotations

import os
import sys
import weakref
from typing import Any

import keras

from wattwise.hooks import (
    BatchCount,
    find_caller,
    guarded,
    hook_failed,
    move_to_front,
    precision_name,
    samples_in,
)
from wattwise.options import Options
from wattwise.report import RunReport
from wattwise.run import EVAL_J, Run
from wattwise.runs import RunSeries

__all__ = ["EnergyCallback", "probe"]

PHASE_OF_CALL = {"fit": "train", "evaluate": "eval", "predict": "predict"}


class EnergyCallback(Options, keras.callbacks.Callback):
    """Measure energy per step and log it through Keras's logs.

    Example: ``model.fit(x, y, callbacks=[EnergyCallback(country_iso_code="FRA")])``. Logged keys:
    ``energy/step_j``, ``energy/power_w``, ``energy/total_kwh``, ``carbon/total_kg``,
    ``energy/forecast_kwh``, ``energy/forecast_low_kwh``, ``energy/forecast_high_kwh``,
    ``carbon/forecast_kg``, ``energy/sample_j`` (batch and epoch logs) and ``energy/eval_j``,
    ``energy/eval_sample_j`` (epoch logs after validation, ``evaluate()``'s logs). See the module
    docstring.
    """

    def _configured(self) -> None:
        self.runs = RunSeries(self, framework="keras")  # checks the location now
        self._call: str | None = None  # "fit", "evaluate" or "predict": the call being measured
        self._train_sizes: tuple[int, int, int] | None = None  # _batch_sizes of fit's epoch iterator
        self._pass_batches: Any = None  # Keras's epoch iterator of the running pass (its batches)
        self._epoch, self._pass = BatchCount(), BatchCount()  # where fit's epoch and the running pass are
        self._pass_samples = 0
        self._planned_from_epoch: int | None = None
        self._eval_j: float | None = None
        self._batch_metrics: dict[str, float] = {}
        self._steps_per_epoch: int | None = None
        self._fit_dispatcher: weakref.ref | None = None  # the CallbackList of the running fit

    @property
    def report(self) -> RunReport | None:
        """The report of the latest call once it has ended (partial if it was interrupted)."""
        return self.runs.report

    @property
    def reports(self) -> list[RunReport]:
        return self.runs.reports

    # ---- fit -------------------------------------------------------------------------------------

    @guarded
    def on_train_begin(self, logs=None):
        self._planned_from_epoch, self._batch_metrics, self._eval_j = None, {}, None
        run = self._open("fit")
        steps = (self.params or {}).get("steps")
        self._steps_per_epoch = steps if isinstance(steps, int) and steps > 0 else None
        run.plan(self.runs.planned_steps or _planned_steps(self.params))
        run.set_work(model=self.model)  # for the run registry's calibration
        self._train_sizes = _batch_sizes(_epoch_iterator())
        run.evidence.describe(
            framework="keras", precision=precision_name(keras.config.dtype_policy().name),
            batch_size=self._train_sizes[0] if self._train_sizes else None,
        )

    @guarded
    def on_epoch_begin(self, epoch, logs=None):
        if self._call != "fit":
            return
        if self._planned_from_epoch is None:  # fit(initial_epoch=...) starts later than 0
            self._planned_from_epoch = epoch
            self.runs.run.plan(self.runs.planned_steps or _planned_steps(self.params, first_epoch=epoch))
        self._epoch, self._eval_j = BatchCount(self._steps_per_epoch, self._train_sizes), None

    def on_train_batch_end(self, batch, logs=None):
        try:  # @guarded, inlined: this runs at every step, where the decorator's extra call costs 1-2 us
            if self._call != "fit":
                return
            run = self.runs.run
            steps, samples = self._epoch.ended(batch)
            if run.step(samples, steps=steps):  # fresh figures once per window, the cached ones in between
                self._batch_metrics = run.metrics("batch", read=False)
            if run.should_stop:  # on_budget="stop" and the budget is spent
                self.model.stop_training = True
            if logs is not None:
                logs.update(self._batch_metrics)
        except Exception as exc:
            hook_failed(self, "on_train_batch_end", exc)

    @guarded
    def on_epoch_end(self, epoch, logs=None):
        if self._call != "fit":
            return
        run = self.runs.run
        # step_j over the epoch's training steps; power_w over the epoch, validation included
        metrics = run.metrics("epoch")
        if self._eval_j is not None:
            metrics[EVAL_J] = self._eval_j
        if logs is not None:
            logs.update(metrics)
            if (val_loss := logs.get("val_loss")) is not None:
                run.record_metric("val_loss", float(val_loss), step=(epoch + 1) * (self._steps_per_epoch or 1))

    @guarded
    def on_train_end(self, logs=None):
        if self._call == "fit":
            self._close()

    # ---- evaluation and prediction: a pass inside fit, or a call of their own ---------------------

    @guarded
    def on_test_begin(self, logs=None):
        self._begin_pass("evaluate", "eval")

    @guarded
    def on_test_batch_end(self, batch, logs=None):
        self._pass_step("eval", batch, None)

    @guarded
    def on_test_end(self, logs=None):
        self._end_pass("eval", logs)

    @guarded
    def on_predict_begin(self, logs=None):
        self._begin_pass("predict", "predict")

    @guarded
    def on_predict_batch_end(self, batch, logs=None):
        self._pass_step("predict", batch, logs)

    @guarded
    def on_predict_end(self, logs=None):
        self._end_pass("predict", None)

    # ---- internals -------------------------------------------------------------------------------

    def _open(self, call: str) -> Run:
        """Start a run for ``call``: first in Keras's callback list, finished partial if abandoned."""
        dispatcher = find_caller(keras.callbacks.CallbackList)
        run = self.runs.open(call, output_dir=_outputs_dir(dispatcher), phase=PHASE_OF_CALL[call])
        if dispatcher is None or not move_to_front(dispatcher.callbacks, self):
            run.note(
                "EnergyCallback is not called from a keras CallbackList: callbacks listed before it "
                "may not see the energy metrics"
            )
        self._call = call
        self._fit_dispatcher = None
        if dispatcher is not None:  # Keras has no exception hook: a dropped call is an ended one
            weakref.finalize(dispatcher, _abandon, weakref.ref(self), run)
            if call == "fit":
                self._fit_dispatcher = weakref.ref(dispatcher)
        return run

    def _begin_pass(self, call: str, phase: str) -> None:
        if self._call == "fit" and self.runs.active and self._inside_fit():
            self.runs.run.begin(phase)  # validation (or a user's pass) inside fit
        else:
            self._open(call)
        self._pass_batches = _epoch_iterator()
        self._pass, self._pass_samples = BatchCount(getattr(self._pass_batches, "num_batches", None)), 0

    def _pass_step(self, phase: str, batch: int, logs: dict | None) -> None:
        run = self.runs.run
        if not run.active or run.current_phase != phase:
            return
        run.step(steps=self._pass.ended(batch)[0])
        if logs is not None:
            self._pass_samples += _leading_dim(logs)

    def _end_pass(self, phase: str, logs: dict | None) -> None:
        run = self.runs.run
        if not run.active or run.current_phase != phase:
            return
        run.add_samples(phase, self._pass_samples or samples_in(_batch_sizes(self._pass_batches), self._pass.last + 1))
        self._pass_batches = None
        run.end(phase)
        inside_fit = self._call == "fit"
        metrics = run.pass_metrics(phase, totals=not inside_fit)
        if inside_fit and phase == "eval":
            self._eval_j = metrics[EVAL_J]  # for the epoch logs
        if logs is not None:
            logs.update(metrics)
        if not inside_fit:
            self._close()

    def _inside_fit(self) -> bool:
        """Whether the measured fit is running (its CallbackList is on the call stack), rather than
        over after an exception and kept alive by a traceback; True when it cannot be told."""
        if self._fit_dispatcher is None:
            return True
        dispatcher, frame = self._fit_dispatcher(), sys._getframe(1)
        while dispatcher is not None and frame is not None:
            if frame.f_locals.get("self") is dispatcher:
                return True
            frame = frame.f_back
        return False

    def _close(self) -> None:
        self._call = None
        self._train_sizes = self._pass_batches = None
        self.runs.close()


def _abandon(callback_ref: weakref.ref, run: Run) -> None:
    """The CallbackList of a call was released before the call said it ended (it raised): finish
    its run as partial, at its last reading."""
    if not run.active:
        return
    callback = callback_ref()
    if callback is not None and callback.runs.run is run:
        callback._call = None
        callback._train_sizes = callback._pass_batches = None
        callback.runs.close(partial=True, at_last_reading=True)
    else:
        run.finish_interrupted("the call ended without saying so (it raised)", at_last_reading=True)


def _outputs_dir(dispatcher: Any) -> str:
    """Where the call's other outputs go: a TensorBoard ``log_dir``, else a ``CSVLogger``'s or
    ``ModelCheckpoint``'s directory, else the current directory."""
    callbacks = list(getattr(dispatcher, "callbacks", None) or [])
    for kind, attribute in ((keras.callbacks.TensorBoard, "log_dir"), (keras.callbacks.CSVLogger, "filename"),
                            (keras.callbacks.ModelCheckpoint, "filepath")):
        for callback in callbacks:
            value = getattr(callback, attribute, None) if isinstance(callback, kind) else None
            if isinstance(value, str | os.PathLike) and os.fspath(value):
                return os.fspath(value) if attribute == "log_dir" else os.path.dirname(os.fspath(value)) or "."
    return "."


def _planned_steps(params: dict | None, first_epoch: int = 0) -> int | None:
    """Training steps of the call, from Keras's ``params`` (epochs and steps per epoch), if known."""
    params = params or {}
    epochs, steps = params.get("epochs"), params.get("steps")
    if isinstance(epochs, int) and isinstance(steps, int) and epochs > first_epoch and steps > 0:
        return (epochs - first_epoch) * steps
    return None


def _epoch_iterator(max_depth: int = 12) -> Any:
    """The ``EpochIterator`` of the Keras call (``fit``, ``evaluate``) dispatching this hook, or None.

    Every backend's trainer holds it in a local named ``epoch_iterator``: it knows the number of
    batches of a pass, and its ``data_adapter`` the batch size and the partial last batch. Found
    once per pass, on the call stack.
    """
    frame = sys._getframe(1)
    for _ in range(max_depth):
        if frame is None:
            return None
        iterator = frame.f_locals.get("epoch_iterator")
        if hasattr(iterator, "data_adapter"):
            return iterator
        frame = frame.f_back
    return None


def _batch_sizes(iterator: Any) -> tuple[int, int, int] | None:
    """An epoch iterator's batch size, batches per pass and how many samples its last batch is short
    (read once: the adapter's properties cost microseconds a batch); None when it cannot say."""
    try:
        adapter = iterator.data_adapter
        size, batches = adapter.batch_size, adapter.num_batches
        short = size - adapter.partial_batch_size if batches and adapter.has_partial_batch else 0
        return (int(size), int(batches or 0), int(short)) if size else None
    except Exception:  # no iterator, or an adapter that cannot say: samples unknown
        return None


def _leading_dim(logs: dict) -> int:
    """Samples in a predict batch: the leading dimension of its first output."""
    for value in keras.tree.flatten(logs):
        shape = getattr(value, "shape", None)
        if shape:
            return int(shape[0])
    return 0


from wattwise.probe_result import ProbeResult  # noqa: E402  (the probe: appended, apart from the callback)


def probe(model: Any, x: Any, y: Any, candidates: dict[str, list[Any]] | list[dict[str, Any]], *, steps: int = 40,
          epochs: int = 1, validation_data: Any = None, validation_split: float = 0.0, validation_freq: int = 1,
          validation_batch_size: int | None = None, steps_per_epoch: int | None = None,
          options: Options | None = None) -> ProbeResult:
    """Train each candidate (``batch_size``, ``dtype_policy``) for ``steps`` steps on a clone of ``model`` and
    project the planned ``fit(x, y, epochs=..., validation_...=...)`` with it; ``print(probe(model, x, y,
    {"batch_size": [32, 64]}, epochs=5))``. ``wattwise/integrations/keras_probe.py`` says how."""
    from wattwise.integrations.keras_probe import probe_keras

    return probe_keras(model, x, y, candidates, steps=steps, epochs=epochs, validation_data=validation_data,
                       validation_split=validation_split, validation_freq=validation_freq,
                       validation_batch_size=validation_batch_size, steps_per_epoch=steps_per_epoch, options=options)
