"""``probe`` for a Hugging Face ``Trainer``: each candidate ``TrainingArguments`` change trained for a few
steps on a copy of the trainer, and the trainer's planned run projected with it.

Example::

    from wattwise.integrations.transformers import probe

    result = probe(trainer, {"per_device_train_batch_size": [8, 16, 32], "bf16": [False, True]}, steps=40)
    print(result)
    result.best.config                 # {"per_device_train_batch_size": 32, "bf16": True}

The candidate keys are ``TrainingArguments`` fields. Each candidate trains on a shallow copy of the
trainer (its class, so an overridden ``compute_loss`` or ``training_step`` is kept) with
``TrainingArguments`` replaced (the candidate's fields, ``max_steps=steps``, no saving, logging or
``report_to`` integrations, only the Trainer's own flow callback: user callbacks, an
``EnergyCallback`` among them, see nothing), a fresh state and a fresh ``Accelerator`` (so ``bf16``
and ``fp16`` take effect). With an ``eval_dataset`` and an ``eval_strategy``, a few evaluation batches
follow (``Prober.eval_batches``), projected to the passes the schedule makes. The planned run is
the trainer's: ``max_steps``, else ``num_train_epochs`` x the optimizer steps of an epoch at the
candidate's batch size and accumulation, as ``Trainer.train`` counts them.

Left as they were: the model (weights, dtypes, modes, attributes such as a ``forward`` that
``accelerate`` patched for mixed precision), the trainer and its ``TrainingArguments`` (the copy
gets deep copies), a user-given optimizer and scheduler (their state), Accelerate's shared state
and the random generators.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState
from transformers.trainer_callback import CallbackHandler, DefaultFlowCallback
from transformers.trainer_utils import TrainerMemoryTracker

from wattwise.hooks import count_samples, find_local, precision_name
from wattwise.options import Options
from wattwise.probe_result import ProbeResult
from wattwise.probe_state import StatefulState
from wattwise.probing import Plan, Prober, expand
from wattwise.run import Run


def probe_trainer(trainer: Trainer, candidates: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]], *,
                  steps: int, options: Options | None) -> ProbeResult:
    """What ``wattwise.integrations.transformers.probe`` does (see the module docstring)."""
    configs = expand(candidates)
    fields = {f.name for f in dataclasses.fields(trainer.args)}
    unknown = sorted({key for config in configs for key in config} - fields)
    if unknown:
        raise ValueError(f"candidates: {', '.join(unknown)} are not TrainingArguments fields")
    if trainer.train_dataset is None:
        raise ValueError("the Trainer has no train_dataset to probe with")
    kept = _Kept(trainer)
    with tempfile.TemporaryDirectory(prefix="wattwise-probe-") as scratch:
        try:
            with Prober("transformers", steps=steps, options=options, model=trainer.model,
                        output_dir=trainer.args.output_dir) as prober:
                for config in configs:
                    candidate = _Candidate(trainer, config, prober, scratch)
                    try:
                        prober.measure(config, train=candidate.train, plan=candidate.plan,
                                       evaluate=candidate.evaluate, setup=candidate.setup())
                    finally:
                        candidate.copy = None
                        kept.restore()
        finally:
            kept.restore()
    return prober.result


class _Kept:
    """What a candidate could change besides the model: the optimizer and scheduler a trainer holds,
    and Accelerate's shared state (new ``TrainingArguments`` reset it, a new ``Accelerator`` sets it)."""

    def __init__(self, trainer: Trainer | None = None) -> None:
        from accelerate.state import AcceleratorState, GradientState, PartialState

        self.shared = [(cls, dict(cls._shared_state)) for cls in (PartialState, AcceleratorState, GradientState)]
        self.stateful = StatefulState.capture(trainer.optimizer, trainer.lr_scheduler) if trainer else None

    def restore(self) -> None:
        for cls, saved in self.shared:
            cls._shared_state.clear()
            cls._shared_state.update(saved)
        if self.stateful is not None:
            self.stateful.restore()


def _replace(args, **changes):
    """``TrainingArguments`` with ``changes``, Accelerate's shared state left as it was (their set-up resets it)."""
    kept = _Kept()
    try:
        return dataclasses.replace(args, **changes)
    finally:
        kept.restore()


class _Measure(TrainerCallback):
    """Drives the candidate's run: a step per optimizer step (with the samples ``training_step`` saw),
    a step per evaluation batch."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.samples = 0

    def on_step_end(self, args, state, control, **kwargs):
        samples, self.samples = self.samples, 0
        self.run.step(samples=samples)

    def on_prediction_step(self, args, state, control, **kwargs):
        self.run.step(samples=find_local("observed_batch_size") or 0)


class _Candidate:
    """One configuration: its ``TrainingArguments`` (the full run's and the probe's) and its trainer copy."""

    def __init__(self, trainer: Trainer, config: dict[str, Any], prober: Prober, scratch: str) -> None:
        self.trainer, self.config, self.prober, self.scratch = trainer, config, prober, scratch
        self.copy: Trainer | None = None

    def full_args(self):
        """The ``TrainingArguments`` of the planned run with this configuration."""
        return _replace(_deep_copy(self.trainer.args), **self.config)

    def setup(self) -> dict[str, Any]:
        """Batch size and precision as ``EnergyCallback`` describes a run (for the advisor)."""
        try:
            args = self.full_args()
        except Exception:
            return {}
        model = self.trainer.model
        dtype = getattr(next(model.parameters(), None), "dtype", "") if model is not None else ""
        precision = "bf16" if args.bf16 else "fp16" if args.fp16 else precision_name(dtype)
        return {"batch_size": args.per_device_train_batch_size, "precision": precision}

    def train(self, run: Run) -> float | None:
        steps = self.prober.steps
        args = _replace(
            self.full_args(), max_steps=steps, eval_strategy="no", save_strategy="no", logging_strategy="steps",
            logging_steps=max(1, steps // 4), logging_first_step=False, report_to="none", disable_tqdm=True,
            load_best_model_at_end=False, push_to_hub=False, eval_on_start=False, output_dir=self.scratch,
            skip_memory_metrics=True,
        )
        measure = _Measure(run)
        self.copy = _trainer_copy(self.trainer, args, measure)
        self.copy.train()
        losses = [entry["loss"] for entry in self.copy.state.log_history if "loss" in entry]
        return losses[-1] if losses else None

    def plan(self) -> Plan:
        """``max_steps``, else epochs x the optimizer steps of an epoch (as ``Trainer.train`` counts them);
        the evaluation passes of ``eval_strategy`` (each epoch's end, every ``eval_steps``) over them."""
        args, trainer = self.full_args(), self.trainer
        # the devices are the trainer's: its own (set-up) arguments say how many (the candidate's
        # would set up devices anew, resetting Accelerate's state under the trainer copy)
        devices, world = max(1, trainer.args.n_gpu), trainer.args.world_size
        batch = args.per_device_train_batch_size * devices * world
        n = len(trainer.train_dataset)
        batches = n // batch if args.dataloader_drop_last else math.ceil(n / batch)
        gas = args.gradient_accumulation_steps
        per_epoch = max(batches // gas + int(batches % gas > 0), 1)
        steps = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * per_epoch)
        passes, batches_per_pass = 0, None
        datasets = _eval_datasets(trainer.eval_dataset)
        strategy = str(getattr(args.eval_strategy, "value", args.eval_strategy))
        if datasets and strategy in ("steps", "epoch"):
            if strategy == "steps":
                every = args.eval_steps or args.logging_steps
                passes = steps // max(int(every if every >= 1 else math.ceil(steps * every)), 1)
            else:  # at the end of every epoch, the last (partial) one included
                passes = math.ceil(steps / per_epoch)
            passes += int(bool(args.eval_on_start))
            size = args.per_device_eval_batch_size * devices
            batches_per_pass = sum(math.ceil(len(d) / size) for d in datasets)
        return Plan(steps=steps, eval_passes=passes, eval_batches=batches_per_pass)

    def evaluate(self, run: Run) -> None:
        """A few batches of the (first) evaluation set, on the trainer copy that just trained."""
        dataset = _eval_datasets(self.trainer.eval_dataset)[0]
        size = self.copy.args.eval_batch_size
        n = min(len(dataset), size * self.prober.eval_batches(math.ceil(len(dataset) / size)))
        subset = dataset.select(range(n)) if hasattr(dataset, "select") else _subset(dataset, n)
        self.copy.evaluate(eval_dataset=subset)


def _trainer_copy(trainer: Trainer, args, measure: _Measure) -> Trainer:
    """A shallow copy of ``trainer`` with ``args``, a fresh state, flow callback only, its own Accelerator."""
    probe = copy.copy(trainer)
    for name, value in list(vars(probe).items()):  # EnergyCallback's wrappers of train/evaluate/predict
        if callable(value) and (getattr(value, "__self__", None) is trainer or hasattr(value, "__wrapped__")):
            del vars(probe)[name]
    probe.args = args
    probe._train_batch_size = args.train_batch_size
    probe._memory_tracker = TrainerMemoryTracker(True)
    probe.callback_handler = CallbackHandler([DefaultFlowCallback, measure], probe.model, probe.processing_class,
                                             probe.optimizer, probe.lr_scheduler)
    probe.control = TrainerControl()
    probe.state = TrainerState(is_local_process_zero=trainer.is_local_process_zero(),
                               is_world_process_zero=trainer.is_world_process_zero())
    probe.is_in_train = False
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state()  # the copy's own mixed precision (the trainer's state is put back after)
    GradientState._reset_state()
    probe.create_accelerator_and_postprocess()
    training_step = probe.training_step

    def counted(model, inputs, *rest, **kwargs):
        measure.samples += count_samples(inputs)
        return training_step(model, inputs, *rest, **kwargs)

    probe.training_step = counted
    return probe


def _deep_copy(args):
    """``args`` deep-copied (``TrainingArguments`` set-up pops entries of its ``accelerator_config``)."""
    try:
        return copy.deepcopy(args)
    except Exception:
        return _replace(args, accelerator_config=copy.deepcopy(args.accelerator_config))


def _eval_datasets(eval_dataset: Any) -> list[Any]:
    if eval_dataset is None:
        return []
    datasets = list(eval_dataset.values()) if isinstance(eval_dataset, Mapping) else [eval_dataset]
    return [d for d in datasets if hasattr(d, "__len__") and len(d)]


def _subset(dataset: Any, n: int) -> Any:
    from torch.utils.data import Subset

    return Subset(dataset, range(n))
