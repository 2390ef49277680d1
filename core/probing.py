"""``probe``: measure candidate configurations for a few steps each, before training, and project each
one's whole planned run, for any training loop (the frameworks' ``probe`` functions build on ``Prober``).

Example::

    import wattwise

    def run_steps(config, run):                        # trains run.planned_steps steps with config
        loader = DataLoader(train_ds, batch_size=config["batch_size"], shuffle=True)
        for step, (x, y) in zip(range(run.planned_steps), loader):
            train_step(model, x, y)
            run.step(samples=len(x))
        return loss.item()                             # optional: shown with a caution

    result = wattwise.probe(run_steps, {"batch_size": [16, 32, 64]}, steps=60,
                            planned_samples=3 * len(train_ds), model=model)
    print(result)                                      # ranked by the projected energy of the planned run
    result.best.config                                 # {"batch_size": 64}

Each candidate is one ``wattwise.Run`` (no files, no registry row) that the loop drives for
``steps`` steps. What it measured goes through the same forecaster as a run's own forecast: the
warm-up is left out by the same rule, the steady cost per step is that of the recent half of the
steady steps, and the projection of the planned run (``planned_steps``, or ``planned_samples``
divided by the samples of a step: with a fixed number of epochs a larger batch makes fewer steps)
is the probe's measured steps plus the remaining steps at that rate, with the forecaster's 90%
interval. Evaluation passes (``eval_passes`` of ``eval_samples`` each) are projected from a few
evaluation batches that ``run_eval`` runs in the ``eval`` phase, through a forecaster of their own.
A candidate that raises (a batch that does not fit in memory) is reported with its error; the
others go on. Every candidate starts from the same random state, and the random generators and
``model`` (a torch module: weights, modes, attributes) are left as they were.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import itertools
import logging
import math
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .carbon import resolve_intensity
from .forecast import Forecaster
from .hooks import precision_name
from .meter import EnergyMeter
from .options import Options, checked_planned_steps
from .probe_result import ProbeCandidate, ProbeResult
from .probe_state import ModuleState, RandomState
from .run import Run

logger = logging.getLogger("wattwise")

PROBE_WINDOW_S = 0.05  # a probe's windows: short, so that a few dozen steps make enough of them
RATE_HORIZON_STEPS = 1000  # the steady rate is read off two forecasts this many steps apart
EVAL_BATCHES_SHARE = 0.25  # evaluation batches measured per candidate: this share of its training steps...
MIN_EVAL_BATCHES = 4  # ... and at least these (never more than a pass has)
ONE_PASS_REL_SD = 0.25  # a pass scaled from too few windows for a forecast: the forecaster's one-pass spread
NOT_STEADY = ("no steady state within the steps measured (a warm-up still going, or too few {window_s:g} s "
              "windows): probe more steps")
BATCH_KEYS = ("per_device_train_batch_size", "batch_size", "train_batch_size")
PRECISION_KEYS = ("precision", "dtype_policy", "mixed_precision", "dtype")
clock: Callable[[], float] = time.monotonic  # what probes time with (tests put a fake clock here)


@dataclass(frozen=True)
class Plan:
    """The whole run a candidate stands for: ``steps`` (a fixed ``max_steps``) or ``samples`` (epochs x
    dataset: steps = samples / samples per step), and ``eval_passes`` evaluation passes of
    ``eval_batches`` batches (or ``eval_samples`` samples; neither: the batches measured are a pass)."""

    steps: int | None = None
    samples: int | None = None
    eval_passes: int = 0
    eval_batches: int | None = None
    eval_samples: int | None = None


def expand(candidates: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The configurations to probe: every combination of a grid (``{"batch_size": [8, 16], "bf16":
    [False, True]}``, first key slowest), or a list of configurations as given."""
    if isinstance(candidates, Mapping):
        for key, values in candidates.items():
            if isinstance(values, str | bytes) or not isinstance(values, Sequence) or not values:
                raise ValueError(f"candidates[{key!r}] must be a non-empty list of values, got {values!r}")
        configs = [dict(zip(candidates, combo, strict=True)) for combo in itertools.product(*candidates.values())]
    elif isinstance(candidates, Sequence) and not isinstance(candidates, str | bytes):
        configs = [dict(c) for c in candidates]
    else:
        raise ValueError(f"candidates must be a dict of lists or a list of dicts, got {candidates!r}")
    if not configs:
        raise ValueError("candidates: nothing to probe")
    return configs


def setup_of(config: Mapping[str, Any], base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The batch size and precision a run with ``config`` would describe (``fp32``, ``bf16``, ``fp16``),
    over ``base`` (the values the configuration leaves as they are)."""
    setup = {"batch_size": None, "precision": None, **(base or {})}
    for key in BATCH_KEYS:
        if isinstance(config.get(key), int):
            setup["batch_size"] = int(config[key])
            break
    if config.get("bf16") is True or config.get("fp16") is True:
        setup["precision"] = "bf16" if config.get("bf16") is True else "fp16"
    elif "bf16" in config or "fp16" in config:
        setup["precision"] = "fp32"
    for key in PRECISION_KEYS:
        if key in config and (name := precision_name(config[key])) is not None:
            setup["precision"] = name
            break
    return setup


class Prober:
    """Measures candidates one after another, each in its own ``Run``, and projects each one's plan.

    Example::

        with Prober("lightning", steps=40, options=None, model=model) as prober:
            for config in expand(candidates):
                prober.measure(config, train=lambda run: ..., plan=lambda: Plan(steps=...))
        prober.result                     # ProbeResult; probe.json and probe.png written

    ``train(run)`` trains ``run.planned_steps`` steps and calls ``run.step(samples=...)``; it may return the
    loss. ``evaluate(run)`` runs a few evaluation batches (``eval_batches()``) in the ``eval`` phase.
    """

    def __init__(self, framework: str, *, steps: int, options: Options | None, model: Any = None,
                 output_dir: str | os.PathLike | None = None) -> None:
        self.steps = checked_planned_steps(steps)
        if self.steps is None:
            raise ValueError("steps must be a whole number > 0, got None")
        config = (options if options is not None else Options()).config
        self.config = config
        self.framework = framework
        self.output_dir = config.output_dir or output_dir or "."
        self._run_config = dataclasses.replace(
            config, window_s=min(config.window_s, PROBE_WINDOW_S), print_summary=False, write_files=False,
            registry=False, budget_kwh=None, budget_kg_co2e=None, output_dir=None,
        )
        self.grid = resolve_intensity(
            country_iso_code=config.country_iso_code, region=config.region, cloud_provider=config.cloud_provider,
            cloud_region=config.cloud_region, carbon_intensity_g_per_kwh=config.carbon_intensity_g_per_kwh,
            pue=config.pue,
        )
        self.model = _fingerprint(model)
        self._module = model if hasattr(model, "state_dict") and hasattr(model, "parameters") else None
        self._clock = clock
        self._scratch = Path(tempfile.gettempdir()) / f"wattwise-probe-{uuid.uuid4().hex[:8]}"  # never written
        self.candidates: list[ProbeCandidate] = []
        self.notes: list[str] = []
        self.hardware = ""
        self.result: ProbeResult | None = None

    # ---- the probe as a whole --------------------------------------------------------------------

    def __enter__(self) -> Prober:
        self._rng = RandomState.capture()
        self._kept = ModuleState.capture(self._module) if self._module is not None else None
        self._meter = self._open_meter()
        self._first = self._meter.read()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        last = self._meter.read()
        self._meter.close()
        self._rng.restore()
        if self._kept is not None:
            self._kept.restore()
        if exc_type is None:
            self.result = self._result(last.total_j - self._first.total_j, last.timestamp_s - self._first.timestamp_s)

    def eval_batches(self, batches_per_pass: int) -> int:
        """How many evaluation batches to measure for a pass of ``batches_per_pass``."""
        wanted = max(MIN_EVAL_BATCHES, math.ceil(EVAL_BATCHES_SHARE * self.steps))
        return max(1, min(wanted, batches_per_pass))

    # ---- one candidate ---------------------------------------------------------------------------

    def measure(self, config: Mapping[str, Any], *, train: Callable[[Run], Any], plan: Plan | Callable[[], Plan],
                evaluate: Callable[[Run], None] | None = None,
                setup: Mapping[str, Any] | None = None) -> ProbeCandidate:
        """Train ``config`` for the probe's steps in a fresh run, project its plan; errors are caught."""
        candidate = ProbeCandidate(config=dict(config), setup=setup_of(config, setup))
        self._rng.restore()  # every candidate from the same random state
        run = Run.from_config(self._run_config, self.framework, clock=self._clock)
        logger.info("wattwise probe: %s (%d of the candidates so far)", candidate.label(), len(self.candidates) + 1)
        try:
            with _quiet():
                self._run(run, candidate, train, plan, evaluate)
        except Exception as exc:
            _clear_figures(candidate)
            candidate.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            logger.warning("wattwise probe: %s could not run (%s); the others go on", candidate.label(), candidate.error)
        finally:
            with _quiet():
                report = run.finish(partial=candidate.error is not None) if run.started else None
            if self._kept is not None:
                self._kept.restore()
            _free_accelerator_memory()
        if report is not None:
            candidate.probe_energy_j, candidate.probe_duration_s = report.energy_j, report.duration_s
            self.hardware = self.hardware or _hardware(report)
            self.notes.extend(n for n in report.notes if n not in self.notes)
        self.candidates.append(candidate)
        return candidate

    def _run(self, run: Run, candidate: ProbeCandidate, train: Callable[[Run], Any],
             plan: Plan | Callable[[], Plan], evaluate: Callable[[Run], None] | None) -> None:
        run.start(output_dir=self._scratch, call="probe", planned_steps=self.steps)
        # the plan here is the probe's own steps: its cost must have stopped falling by their end,
        # however far into them the falling rules were last met
        run.projection.forecaster.level_shown_at = None
        eval_windows: list[tuple[int, float, float]] = []
        forward = run.ledger.on_window

        def tee(phase: str, steps: int, energy_j: float, duration_s: float, work: float | None) -> None:
            if phase == "eval":
                eval_windows.append((steps, energy_j, duration_s))
            forward(phase, steps, energy_j, duration_s, work)

        run.ledger.on_window = tee
        run.projection.add_eval_pass = lambda energy_j, duration_s: None  # the probe projects passes itself
        loss = train(run)
        run.sync()
        chosen = plan() if callable(plan) else plan
        self._project_training(run, candidate, chosen)
        if evaluate is not None and chosen.eval_passes > 0:
            with run.phase("eval", record_pass=False):
                evaluate(run)
            self._project_evaluation(run, candidate, chosen, eval_windows)
        if candidate.projected_energy_j is not None:
            candidate.projected_emissions_kg = self.grid.kg_for_j(candidate.projected_energy_j)
        candidate.loss = _finite(loss)

    def _project_training(self, run: Run, candidate: ProbeCandidate, plan: Plan) -> None:
        train = run.ledger.phases["train"]
        candidate.steps, candidate.samples = train.steps, int(train.samples)
        if not train.steps:
            raise RuntimeError("no training step was counted: call run.step() once per optimizer step")
        per_step = train.samples / train.steps if train.samples else None
        if plan.steps is None and (plan.samples is None or per_step is None):
            raise ValueError("the planned run is given in samples, but no sample was counted (run.step(samples=...))")
        planned = plan.steps if plan.steps is not None else math.ceil(plan.samples / per_step)
        candidate.planned_steps = planned
        forecaster = run.projection.forecaster
        forecaster.eval_every_steps = None
        so_far = (train.energy_j, train.duration_s)
        near = _forecast(forecaster, train.steps + RATE_HORIZON_STEPS, so_far)
        far = _forecast(forecaster, train.steps + 2 * RATE_HORIZON_STEPS, so_far)
        whole = _forecast(forecaster, max(planned, train.steps), so_far)
        if near is None or far is None or whole is None:
            candidate.note = NOT_STEADY.format(window_s=run.config.window_s)
            return
        candidate.warmup_steps = near.warmup_steps
        candidate.energy_per_step_j = (far.energy_j - near.energy_j) / RATE_HORIZON_STEPS
        candidate.duration_per_step_s = (far.duration_s - near.duration_s) / RATE_HORIZON_STEPS
        if per_step:
            candidate.energy_per_sample_j = candidate.energy_per_step_j / per_step
            candidate.duration_per_sample_s = candidate.duration_per_step_s / per_step
        share = min(1.0, planned / train.steps)  # 1 unless the probe ran past the whole plan
        if share < 1.0:
            candidate.note = f"the probe's {train.steps} steps are more than the planned run's {planned}: scaled down"
        candidate.projected_energy_j = whole.energy_j * share
        candidate.projected_energy_low_j = whole.energy_low_j * share
        candidate.projected_energy_high_j = whole.energy_high_j * share
        candidate.projected_duration_s = whole.duration_s * share

    def _project_evaluation(self, run: Run, candidate: ProbeCandidate, plan: Plan,
                            windows: list[tuple[int, float, float]]) -> None:
        """``plan.eval_passes`` passes, each projected from the batches measured like training steps."""
        measured = run.ledger.phases["eval"]
        candidate.eval_passes = plan.eval_passes
        if not measured.steps:
            raise RuntimeError("no evaluation batch was counted: call run.step() once per evaluation batch")
        batches = plan.eval_batches
        if batches is None and plan.eval_samples and measured.samples:
            batches = math.ceil(plan.eval_samples / (measured.samples / measured.steps))
        batches = batches or measured.steps
        forecaster = Forecaster(batches)
        for steps, energy_j, duration_s in windows:
            forecaster.add_window(steps, energy_j, duration_s)
        made = forecaster.forecast(measured.energy_j, measured.duration_s) if batches > measured.steps else None
        if made is not None:
            one = (made.energy_j, made.energy_low_j, made.energy_high_j, made.duration_s)
        else:  # too few windows for the forecaster: the pass in proportion, with its one-pass spread
            scale = batches / measured.steps
            j = measured.energy_j * scale
            one = (j, j * (1 - ONE_PASS_REL_SD), j * (1 + ONE_PASS_REL_SD), measured.duration_s * scale)
        candidate.eval_pass_energy_j = one[0]
        if candidate.projected_energy_j is None:
            return
        n = plan.eval_passes
        candidate.projected_energy_j += n * one[0]
        candidate.projected_energy_low_j += n * one[1]
        candidate.projected_energy_high_j += n * one[2]
        candidate.projected_duration_s += n * one[3]

    # ---- the result ------------------------------------------------------------------------------

    def _open_meter(self) -> EnergyMeter:
        from . import sources

        opened = sources.open_sources(self.config.sources, cpu_power_w=self.config.cpu_power_w,
                                      ram_power_w=self.config.ram_power_w)
        return EnergyMeter(opened.sources, clock=self._clock)

    def _result(self, energy_j: float, duration_s: float) -> ProbeResult:
        result = ProbeResult(
            candidates=self.candidates, framework=self.framework, steps=self.steps, model=self.model,
            hardware=self.hardware, created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            probe_energy_j=energy_j, probe_duration_s=duration_s, probe_emissions_kg=self.grid.kg_for_j(energy_j),
            carbon=self.grid.to_dict(), notes=list(self.notes),
        )
        from .probe_files import keep

        keep(result, write=self.config.write_files, output_dir=self.output_dir, registry=self.config.registry)
        for note in result.notes:
            logger.info("wattwise probe: %s", note)
        return result


def probe(
    run_steps: Callable[[dict[str, Any], Run], Any],
    candidates: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]],
    *,
    steps: int,
    planned_steps: int | Callable[[dict[str, Any]], int] | None = None,
    planned_samples: int | None = None,
    run_eval: Callable[[dict[str, Any], Run], None] | None = None,
    eval_passes: int = 0,
    eval_samples: int | None = None,
    model: Any = None,
    options: Options | None = None,
) -> ProbeResult:
    """Measure each candidate configuration for ``steps`` steps and project its whole planned run.

    ``run_steps(config, run)`` trains ``run.planned_steps`` (= ``steps``) steps with ``config`` and calls
    ``run.step(samples=...)`` after each; it may return the loss. The planned run is ``planned_steps``
    (a number, or a function of the configuration) or ``planned_samples`` (epochs x dataset size).
    ``run_eval(config, run)``, when given, runs a few evaluation batches (calling ``run.step(samples=...)``
    after each), projected to ``eval_passes`` passes of ``eval_samples`` samples. ``model`` (optional) is
    restored after each candidate when it is a torch module and identifies the probe for the advisor.
    ``options``: a ``wattwise.options.Options`` (location, sources, ``output_dir``, ``registry``...).
    """
    configs = expand(candidates)
    if (planned_steps is None) == (planned_samples is None):
        raise ValueError("give either planned_steps= (a fixed number of steps) or planned_samples= (epochs x dataset)")
    if planned_samples is not None and (isinstance(planned_samples, bool) or not isinstance(planned_samples, int)
                                        or planned_samples <= 0):
        raise ValueError(f"planned_samples must be a whole number > 0, got {planned_samples!r}")
    if isinstance(eval_passes, bool) or not isinstance(eval_passes, int) or eval_passes < 0:
        raise ValueError(f"eval_passes must be a whole number >= 0, got {eval_passes!r}")
    with Prober("loop", steps=steps, options=options, model=model) as prober:
        for config in configs:
            steps_planned = planned_steps(dict(config)) if callable(planned_steps) else planned_steps
            plan = Plan(steps=checked_planned_steps(steps_planned), samples=planned_samples,
                        eval_passes=eval_passes, eval_samples=eval_samples)
            evaluate = (lambda run, c=config: run_eval(dict(c), run)) if run_eval is not None else None
            prober.measure(config, train=lambda run, c=config: run_steps(dict(c), run), plan=plan, evaluate=evaluate)
    return prober.result


# ---- helpers -------------------------------------------------------------------------------------


def _forecast(forecaster: Forecaster, planned: int, so_far: tuple[float, float]):
    forecaster.planned_steps = planned
    return forecaster.forecast(*so_far)


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _clear_figures(candidate: ProbeCandidate) -> None:
    for name in ("warmup_steps", "energy_per_step_j", "duration_per_step_s", "energy_per_sample_j",
                 "duration_per_sample_s", "eval_pass_energy_j", "projected_energy_j", "projected_energy_low_j",
                 "projected_energy_high_j", "projected_duration_s", "projected_emissions_kg", "loss"):
        setattr(candidate, name, None)


def _fingerprint(model: Any) -> dict[str, Any]:
    """The model's class and parameter count (what the advisor matches a later run by); {} if unknown."""
    if model is None:
        return {}
    from .estimate import count_params

    try:
        return {"class": type(model).__name__, "params": count_params(model)}
    except Exception:
        return {"class": type(model).__name__}


def _hardware(report: Any) -> str:
    from .probe_store import hardware_of

    return hardware_of(report.by_component.values(), report.hardware.get("cpu_model"))


def _free_accelerator_memory() -> None:
    """After a candidate (one that ran out of memory, say): give its cached GPU memory back."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        import gc

        gc.collect()
        torch.cuda.empty_cache()


class _Quiet(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The candidates' runs log nothing: their notes are collected into the probe's, said once."""
    quiet = _Quiet()
    logging.getLogger("wattwise").addFilter(quiet)
    try:
        yield
    finally:
        logging.getLogger("wattwise").removeFilter(quiet)
