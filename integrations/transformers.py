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
Training logs also carry the forecast of the whole run (``energy/forecast_*``, docs/methodology.md);
with ``include_num_input_tokens_seen`` on, it knows each step's tokens, which makes it steadier for
batches of varying length (dynamic padding).
At the end the callback prints a summary, sets ``report`` (a ``wattwise.RunReport``) and, on the
main process, writes ``report.json``, ``steps.csv`` and ``emissions.csv`` under
``<output_dir>/wattwise/``. Keyword arguments are those of ``wattwise.Config``.

Under ``torchrun`` / ``accelerate launch`` every rank measures its own GPU (and one per node the
node's counters); at each log the ranks' energy is summed over ``torch.distributed``, so the logged
figures and the one report are the run's totals (docs/distributed.md).

The Hub's ``co2_eq_emissions`` model-card metadata (grams of CO2e, source, training type,
location, hardware) goes into ``<output_dir>/README.md``, where ``Trainer.create_model_card``
writes the card: merged into the card at the end of training, and again each time
``create_model_card`` (``push_to_hub``) rewrites the file, since its ``TrainingSummary`` has no such
field. ``training_type`` is ``pre-training`` for a model built from a config (no ``name_or_path``),
else ``fine-tuning``. Recommendations use the ``TrainingArguments`` (precision, batch size,
accumulation, data loader workers and pinning) and ``eval_<metric_for_best_model>`` at each evaluation.

Loggers run before user callbacks in the Trainer, so at ``on_train_begin`` this callback moves
itself to just after the Trainer's ``DefaultFlowCallback``, ahead of the loggers: the metrics it adds
to a log entry are then seen by every logger, and it knows when an evaluation is about to start.
"""

from __future__ import annotations

import os
from typing import Any

from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import CallbackHandler, DefaultFlowCallback

from wattwise.config import Config
from wattwise.hooks import find_caller, guarded, move_to_front
from wattwise.modelcard import write_co2_eq_emissions
from wattwise.report import RunReport
from wattwise.session import EVAL_J, Session

__all__ = ["EnergyCallback"]


class EnergyCallback(TrainerCallback):
    """Measure energy per step and log it through the Trainer. See the module docstring."""

    def __init__(self, **options: Any) -> None:
        self.config = Config.from_kwargs(**options)
        self._session = Session(self.config, framework="transformers")
        self._training_type = "fine-tuning"  # "pre-training" for a model built from a config
        self._tokens_seen = 0  # state.num_input_tokens_seen at the previous step
        self._count_tokens = False  # whether the Trainer counts each step's tokens

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
        self._tokens_seen = state.num_input_tokens_seen  # a resumed run restores it first
        self._count_tokens = args.include_num_input_tokens_seen not in ("no", False, None)
        self._session.start(
            output_dir=self.config.output_dir or args.output_dir,
            # a resumed run restores global_step first: what is planned is what is left
            planned_steps=(state.max_steps - state.global_step) or None,
            is_main_process=state.is_world_process_zero,
            across_ranks=True,  # every rank runs these hooks at the same steps: totals are over all ranks
        )
        if args.eval_strategy == "steps" and state.eval_steps:
            self._session.plan(self._session.planned_steps, eval_every_steps=int(state.eval_steps))
        self._describe(args, state, kwargs.get("model"))
        self._session.set_work(model=kwargs.get("model"))  # for the run registry's calibration

    @guarded
    def on_step_end(self, args, state, control, **kwargs):
        tokens = None
        if self._count_tokens:
            tokens = state.num_input_tokens_seen - self._tokens_seen
            self._tokens_seen = state.num_input_tokens_seen
        self._session.step(tokens)
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
        # Trainer.log runs on every rank at the same step, so the session syncs (sums ranks) here
        if any(key.startswith("eval_") for key in logs):
            try:
                self._session.end("eval")
            finally:  # whatever happens here, every rank must reach the sync
                self._session.sync()
            metrics = {EVAL_J: self._session.last_pass_j, **self._session.totals()}
        else:
            self._session.sync()
            metrics = self._session.log_metrics(read=False)
        if self._session.stop_requested:  # across ranks, decided on the totals at this sync: every rank stops
            control.should_training_stop = True
        logs.update(metrics)
        # Trainer.log appended a copy of `logs` to the history just before calling on_log.
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(metrics)

    @guarded
    def on_evaluate(self, args, state, control, **kwargs):
        if self._session.started and self._session.phase == "eval":
            self._session.end("eval")  # an evaluation whose metrics were not logged
        metric = _metric_key(args)
        value = (kwargs.get("metrics") or {}).get(metric)
        if value is not None and self._session.started and not self._session.finished:
            greater = args.greater_is_better if args.greater_is_better is not None else not metric.endswith("loss")
            self._session.evidence.record_metric(metric, value, step=state.global_step, greater_is_better=greater)

    @guarded
    def on_train_end(self, args, state, control, **kwargs):
        self._session.set_work(tokens=state.num_input_tokens_seen)  # 0 unless include_num_input_tokens_seen
        self._session.finish()
        self._write_model_card(args)

    def _describe(self, args, state, model) -> None:
        """Set-up facts for the advisor, and the model card kept through ``Trainer.create_model_card``."""
        dtype = str(getattr(next(model.parameters(), None), "dtype", "")) if model is not None else ""
        precision = "bf16" if args.bf16 else "fp16" if args.fp16 else {"torch.float32": "fp32"}.get(dtype)
        self._session.evidence.describe(
            framework="transformers", device=args.device.type, precision=precision,
            batch_size=args.per_device_train_batch_size, grad_accumulation_steps=args.gradient_accumulation_steps,
            num_workers=args.dataloader_num_workers, pin_memory=bool(args.dataloader_pin_memory),
            eval_every_steps=int(state.eval_steps) if args.eval_strategy == "steps" and state.eval_steps else None,
        )
        self._training_type = "fine-tuning" if getattr(model, "name_or_path", "") else "pre-training"
        trainer = find_caller(Trainer)
        if trainer is not None and not getattr(trainer.create_model_card, "_wattwise", False):
            create_model_card = trainer.create_model_card

            def create_model_card_with_co2(*card_args, **card_kwargs):
                result = create_model_card(*card_args, **card_kwargs)  # rewrites README.md from scratch
                self._write_model_card(trainer.args)
                return result

            create_model_card_with_co2._wattwise = True
            trainer.create_model_card = create_model_card_with_co2

    def _write_model_card(self, args) -> None:
        """The Hub's ``co2_eq_emissions`` in ``<output_dir>/README.md``, where the Trainer writes its card."""
        report = self._session.report
        if report is None or not self.config.write_files or not self._session.is_main_process:
            return
        try:
            write_co2_eq_emissions(os.path.join(args.output_dir, "README.md"), report,
                                   training_type=self._training_type)
        except Exception as exc:  # the card is a courtesy: never fail the training's end over it
            self._session.note(f"could not write co2_eq_emissions to the model card: {exc}")

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


def _metric_key(args) -> str:
    """The evaluation metric the Trainer compares checkpoints on: ``eval_<metric_for_best_model>``,
    ``eval_loss`` by default (the Trainer prefixes the name the same way)."""
    name = args.metric_for_best_model or "loss"
    return name if name.startswith("eval_") else f"eval_{name}"
