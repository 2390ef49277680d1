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
Each ``train()``, ``evaluate()`` and ``predict()`` call is one run; a standalone ``evaluate()``
(``run_glue.py --do_eval``) or ``predict()`` is measured as its own ``eval`` or ``predict`` run
(samples counted from the Trainer's evaluation loop), and the metrics it returns also carry
``energy/eval_j`` or ``energy/predict_j`` and the totals. Standalone calls are seen when the
callback is given to the ``Trainer`` at construction (``callbacks=[...]``), or once ``train()`` ran.
Training logs also carry the forecast of the whole run (``energy/forecast_*``, docs/methodology.md);
with ``include_num_input_tokens_seen`` on, it knows each step's tokens, which makes it steadier for
batches of varying length (dynamic padding).
At the end of each call the callback prints a summary, sets ``report`` (a ``wattwise.RunReport``;
``reports`` keeps every call's) and, on the main process, writes ``report.json``, ``steps.csv``,
``emissions.csv`` and ``report.png`` under ``<output_dir>/wattwise/`` (``output_dir=``, else the
``TrainingArguments``'); a later call in the same process goes to
``<output_dir>/<call>/wattwise/`` (``evaluate``, ``predict``, ``train``, then ``<call>-2``...), so
no run overwrites another. A call that raises finishes its run at once, marked partial, and the
exception goes on unchanged; so do SIGTERM and SIGINT. The keyword arguments are
``wattwise.options.Options``'s.

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

import functools
import os
from collections.abc import Callable
from typing import Any

from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import CallbackHandler, DefaultFlowCallback

from wattwise.hooks import find_caller, find_local, guarded, hook_failed, move_to_front, precision_name
from wattwise.modelcard import write_co2_eq_emissions
from wattwise.options import Options
from wattwise.report import RunReport
from wattwise.runs import RunSeries

__all__ = ["EnergyCallback", "probe"]

PASS_OF_CALL = {"evaluate": "eval", "predict": "predict"}


class EnergyCallback(Options, TrainerCallback):
    """Measure energy per step and log it through the Trainer.

    Example: ``Trainer(..., callbacks=[EnergyCallback(country_iso_code="FRA")])``. Logged keys:
    ``energy/step_j``, ``energy/power_w``, ``energy/total_kwh``, ``carbon/total_kg``,
    ``energy/forecast_kwh``, ``energy/forecast_low_kwh``, ``energy/forecast_high_kwh``,
    ``carbon/forecast_kg``, ``energy/sample_j`` and, with ``include_num_input_tokens_seen``,
    ``energy/tokens_per_j`` (training logs); ``energy/eval_j``, ``energy/eval_sample_j`` and the
    totals (evaluation logs and ``evaluate()``'s metrics); ``energy/predict_j``,
    ``energy/predict_sample_j`` and the totals (``predict()``'s metrics). See the module docstring.
    """

    def _configured(self) -> None:
        self.runs = RunSeries(self, framework="transformers")  # checks the location now
        self._training_type = "fine-tuning"  # "pre-training" for a model built from a config
        self._tokens_seen = 0  # state.num_input_tokens_seen at the previous step
        self._count_tokens = False  # whether the Trainer counts each step's tokens
        self._step_samples = 0  # samples of an optimizer step on this rank (read from the arguments once)
        self._call: str | None = None  # the Trainer call running now: "train", "evaluate", "predict"

    @property
    def report(self) -> RunReport | None:
        """The report of the latest call once it has ended (partial if it was interrupted)."""
        return self.runs.report

    @property
    def reports(self) -> list[RunReport]:
        return self.runs.reports

    @guarded
    def on_init_end(self, args, state, control, **kwargs):
        self._wrap(find_caller(Trainer))

    @guarded
    def on_train_begin(self, args, state, control, **kwargs):
        trainer = find_caller(Trainer)
        self._wrap(trainer)
        self._place_before_loggers()
        self._tokens_seen = state.num_input_tokens_seen  # a resumed run restores it first
        self._count_tokens = args.include_num_input_tokens_seen not in ("no", False, None)
        # the batch size x accumulation (a short last batch counted full)
        self._step_samples = args.per_device_train_batch_size * args.gradient_accumulation_steps
        run = self.runs.open(
            "train", output_dir=args.output_dir, is_main_process=state.is_world_process_zero,
            across_ranks=True,  # every rank runs these hooks at the same steps: totals are over all ranks
        )
        # a resumed run restores global_step first: what is planned is what is left
        eval_every = int(state.eval_steps) if args.eval_strategy == "steps" and state.eval_steps else None
        run.plan(self.runs.planned_steps or (state.max_steps - state.global_step) or None, eval_every_steps=eval_every)
        self._describe(args, kwargs.get("model"), trainer, eval_every)
        run.set_work(model=kwargs.get("model"))  # for the run registry's calibration

    def on_step_end(self, args, state, control, **kwargs):
        try:  # @guarded, inlined: this runs at every step, where the decorator's extra call costs 1-2 us
            tokens = None
            if self._count_tokens:
                tokens = state.num_input_tokens_seen - self._tokens_seen
                self._tokens_seen = state.num_input_tokens_seen
            run = self.runs.run
            run.step(self._step_samples, tokens)
            if run.should_stop:  # on_budget="stop" and the budget is spent
                control.should_training_stop = True
            # DefaultFlowCallback (just before us) has decided whether an evaluation follows: its set-up
            # and first batch are evaluation energy, so the phase begins now, not at the first batch's end
            if control.should_evaluate:
                run.begin("eval")
        except Exception as exc:
            hook_failed(self, "on_step_end", exc)

    @guarded
    def on_epoch_end(self, args, state, control, **kwargs):
        if control.should_evaluate:  # as at a step's end
            self.runs.run.begin("eval")

    @guarded
    def on_prediction_step(self, args, state, control, **kwargs):
        run = self.runs.run
        phase = "predict" if self._call == "predict" else "eval"
        if run.active and run.current_phase != phase:
            run.begin(phase)
        run.step(samples=find_local("observed_batch_size"))  # the Trainer's evaluation loop counts them

    @guarded
    def on_log(self, args, state, control, logs=None, **kwargs):
        run = self.runs.run
        if logs is None or not run.active:
            return
        # Trainer.log runs on every rank at the same step, so the run syncs (sums ranks) here
        if any(key.startswith("eval_") for key in logs):
            try:
                run.end("eval")
            finally:  # whatever happens here, every rank must reach the sync
                run.sync()
            metrics = run.pass_metrics("eval")
        else:
            run.sync()
            metrics = run.metrics(read=False)
        if run.should_stop:  # across ranks, decided on the totals at this sync: every rank stops
            control.should_training_stop = True
        logs.update(metrics)
        # Trainer.log appended a copy of `logs` to the history just before calling on_log.
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(metrics)

    @guarded
    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        run = self.runs.run
        if run.current_phase == "eval":
            run.end("eval")  # an evaluation whose metrics were not logged
        if self._call == "evaluate" and metrics is not None:
            metrics.update(run.pass_metrics("eval"))  # evaluate() returns this dict
        name = _metric_key(args)
        if (value := (metrics or {}).get(name)) is not None:
            greater = args.greater_is_better if args.greater_is_better is not None else None
            run.record_metric(name, value, step=state.global_step, greater_is_better=greater)

    @guarded
    def on_predict(self, args, state, control, metrics=None, **kwargs):
        run = self.runs.run
        try:
            run.end("predict")
        finally:  # every rank ends its predict() here
            run.sync()
        if metrics is not None:
            metrics.update(run.pass_metrics("predict"))  # predict() returns them in its PredictionOutput

    @guarded
    def on_train_end(self, args, state, control, **kwargs):
        self.runs.run.set_work(tokens=state.num_input_tokens_seen)  # 0 unless include_num_input_tokens_seen
        self.runs.close()
        self._write_model_card(args)

    # ---- the Trainer's calls ---------------------------------------------------------------------

    def _wrap(self, trainer: Trainer | None) -> None:
        """Wrap the trainer's ``train``, ``evaluate`` and ``predict`` (on the instance): each call is a
        run, finished the moment the call raises, and a standalone evaluate/predict is measured."""
        if trainer is None:
            return
        for call in ("train", "evaluate", "predict"):
            method = getattr(trainer, call)
            if getattr(method, "_wattwise", None) is not self:
                setattr(trainer, call, self._measured(trainer, call, method))

    def _measured(self, trainer: Trainer, call: str, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def measured(*args: Any, **kwargs: Any) -> Any:
            if self._call is not None:  # evaluate() inside train(): a phase of the training run
                return method(*args, **kwargs)
            self._call = call
            try:
                if call in PASS_OF_CALL:
                    self._open_pass(trainer, call)
                result = method(*args, **kwargs)
            except BaseException:
                self._close(partial=True)
                raise
            finally:
                self._call = None
            if call in PASS_OF_CALL:
                self._close(partial=False)
            return result

        measured._wattwise = self
        return measured

    @guarded
    def _open_pass(self, trainer: Trainer, call: str) -> None:
        self.runs.open(call, output_dir=trainer.args.output_dir, phase=PASS_OF_CALL[call],
                       is_main_process=trainer.is_world_process_zero(), across_ranks=True)

    @guarded
    def _close(self, *, partial: bool) -> None:
        self.runs.close(partial=partial)

    # ---- set-up, the model card, the callback order ----------------------------------------------

    def _describe(self, args, model, trainer: Trainer | None, eval_every: int | None) -> None:
        """Set-up facts for the advisor, and the model card kept through ``Trainer.create_model_card``."""
        dtype = getattr(next(model.parameters(), None), "dtype", "") if model is not None else ""
        precision = "bf16" if args.bf16 else "fp16" if args.fp16 else precision_name(dtype)
        self.runs.run.evidence.describe(
            framework="transformers", device=args.device.type, precision=precision,
            batch_size=args.per_device_train_batch_size, grad_accumulation_steps=args.gradient_accumulation_steps,
            num_workers=args.dataloader_num_workers, pin_memory=bool(args.dataloader_pin_memory),
            eval_every_steps=eval_every,
        )
        self._training_type = "fine-tuning" if getattr(model, "name_or_path", "") else "pre-training"
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
        run = self.runs.latest("train")
        if run is None or not self.config.write_files or not run.is_main_process:
            return
        try:
            write_co2_eq_emissions(os.path.join(args.output_dir, "README.md"), run.report,
                                   training_type=self._training_type)
        except Exception as exc:  # the card is a courtesy: never fail the training's end over it
            run.note(f"could not write co2_eq_emissions to the model card: {exc}")

    def _place_before_loggers(self) -> None:
        """Right after DefaultFlowCallback (so ``control`` already says whether an evaluation
        follows) and before the ``report_to`` loggers (so they see the metrics added to a log)."""
        handler = find_caller(CallbackHandler)
        placed = handler is not None and move_to_front(handler.callbacks, self, after=DefaultFlowCallback)
        if not placed:
            self.runs.run.note(
                "could not move EnergyCallback before the report_to loggers: energy metrics reach "
                "trainer.state.log_history and the console, but not TensorBoard/W&B/MLflow"
            )


def _metric_key(args) -> str:
    """The evaluation metric the Trainer compares checkpoints on: ``eval_<metric_for_best_model>``,
    ``eval_loss`` by default (the Trainer prefixes the name the same way)."""
    name = args.metric_for_best_model or "loss"
    return name if name.startswith("eval_") else f"eval_{name}"


from wattwise.probe_result import ProbeResult  # noqa: E402  (the probe: appended, apart from the callback)


def probe(trainer: Trainer, candidates: dict[str, list[Any]] | list[dict[str, Any]], *, steps: int = 40,
          options: Options | None = None) -> ProbeResult:
    """Train each candidate ``TrainingArguments`` change for ``steps`` steps and project the trainer's
    planned run with it (``max_steps``, else ``num_train_epochs``; evaluation passes included).

    Example: ``print(probe(trainer, {"per_device_train_batch_size": [8, 16, 32], "bf16": [False, True]},
    steps=40))``. ``options``: ``wattwise.options.Options`` (location, sources, ``output_dir``...);
    ``probe.json`` and ``probe.png`` go to ``<output_dir>/wattwise/`` (the trainer's, by default). The
    trainer, its model and arguments and the random state are left as they were
    (``wattwise/integrations/transformers_probe.py`` says how).
    """
    from wattwise.integrations.transformers_probe import probe_trainer

    return probe_trainer(trainer, candidates, steps=steps, options=options)
