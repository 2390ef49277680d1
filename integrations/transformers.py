"""Energy and carbon of a Hugging Face ``Trainer`` run, per step, in the Trainer's own logs.

Example::

    from transformers import Trainer, TrainingArguments
    from wattwise.integrations.transformers import EnergyCallback

    energy = EnergyCallback(country_iso_code="FRA")
    trainer = Trainer(model=model, args=TrainingArguments("out", logging_steps=10, report_to=["tensorboard"]),
                      train_dataset=train_ds, eval_dataset=eval_ds, callbacks=[energy])
    trainer.train()
    energy.report.energy_kwh, energy.report.emissions_kg, energy.report.by_phase["eval"]

Every training log entry (``trainer.state.log_history``, every ``report_to`` integration such as
TensorBoard, W&B or MLflow, and the console) gets:

- ``energy/step_j``: mean joules per optimizer step since the previous log (training only);
- ``energy/power_w``: mean power in watts since the previous log, all components;
- ``energy/total_kwh``: energy since training began, all phases;
- ``carbon/total_kg``: its kg CO2e (location and PUE applied).

Evaluation log entries get ``energy/eval_j`` (the evaluation pass just finished) and the totals.
At the end the callback prints a summary, sets ``report`` (a ``wattwise.RunReport``) and, on the
main process, writes ``report.json``, ``steps.csv`` and ``emissions.csv`` under
``<output_dir>/wattwise/``. Keyword arguments are those of ``wattwise.Config``.

Loggers run before user callbacks in the Trainer, so at ``on_train_begin`` this callback moves
itself to just after the Trainer's ``DefaultFlowCallback``, ahead of the loggers: the metrics it adds
to a log entry are then seen by every logger, and it knows when an evaluation is about to start.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import CallbackHandler, DefaultFlowCallback

from wattwise.config import Config
from wattwise.hooks import find_caller, guarded, move_to_front
from wattwise.report import RunReport
from wattwise.session import EVAL_J, Session

__all__ = ["EnergyCallback"]


class EnergyCallback(TrainerCallback):
    """Measure energy per step and log it through the Trainer. See the module docstring."""

    def __init__(self, **options: Any) -> None:
        self.config = Config.from_kwargs(**options)
        self._session = Session(self.config, framework="transformers")

    @property
    def report(self) -> RunReport | None:
        """The run's report once training has ended (partial if it was interrupted)."""
        return self._session.report

    @guarded
    def on_train_begin(self, args, state, control, **kwargs):
        if self._session.started:  # another train() with this callback: a new run
            self._session.finish(partial=True)  # no-op unless the previous train() raised
            self._session = Session(self.config, framework="transformers")
        self._place_before_loggers()
        self._session.start(
            output_dir=self.config.output_dir or args.output_dir,
            # a resumed run restores global_step first: what is planned is what is left
            planned_steps=(state.max_steps - state.global_step) or None,
            is_main_process=state.is_world_process_zero,
        )
        if args.eval_strategy == "steps" and state.eval_steps:
            self._session.plan(self._session.planned_steps, eval_every_steps=int(state.eval_steps))

    @guarded
    def on_step_end(self, args, state, control, **kwargs):
        self._session.step()
        if self._session.stop_requested:  # on_budget="stop" and the budget is spent
            control.should_training_stop = True
        self._maybe_begin_eval(control)

    @guarded
    def on_epoch_end(self, args, state, control, **kwargs):
        self._maybe_begin_eval(control)

    @guarded
    def on_prediction_step(self, args, state, control, **kwargs):
        if not self._session.started or self._session.finished:
            return
        if self._session.phase != "eval":
            self._session.begin("eval")
        self._session.step()

    @guarded
    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or not self._session.started or self._session.finished:
            return
        if any(key.startswith("eval_") for key in logs):
            metrics = {EVAL_J: self._session.end("eval"), **self._session.totals()}
        else:
            metrics = self._session.log_metrics()
        logs.update(metrics)
        # Trainer.log appended a copy of `logs` to the history just before calling on_log.
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(metrics)

    @guarded
    def on_evaluate(self, args, state, control, **kwargs):
        if self._session.started and self._session.phase == "eval":
            self._session.end("eval")  # an evaluation whose metrics were not logged

    @guarded
    def on_train_end(self, args, state, control, **kwargs):
        self._session.finish()

    def _maybe_begin_eval(self, control) -> None:
        """DefaultFlowCallback (just before us) has decided an evaluation follows: its set-up and
        first batch are evaluation energy, so the phase begins now, not at the first batch's end."""
        if control.should_evaluate and self._session.started and not self._session.finished:
            self._session.begin("eval")

    def _place_before_loggers(self) -> None:
        """Right after DefaultFlowCallback (so ``control`` already says whether an evaluation
        follows) and before the ``report_to`` loggers (so they see the metrics added to a log)."""
        handler = find_caller(CallbackHandler)
        placed = handler is not None and move_to_front(handler.callbacks, self, after=DefaultFlowCallback)
        if not placed:
            self._session.note(
                "could not move EnergyCallback before the report_to loggers: energy metrics reach "
                "trainer.state.log_history and the console, but not TensorBoard/W&B/MLflow"
            )
