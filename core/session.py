"""Session: the framework-neutral tracking that every ``EnergyCallback`` drives.

Example::

    >>> from wattwise.config import Config
    >>> from wattwise.session import Session
    >>> session = Session(Config.from_kwargs(country_iso_code="FRA", write_files=False), framework="loop")
    >>> session.start(output_dir=".", planned_steps=100)
    >>> for step in range(100):
    ...     train_one_step()
    ...     session.step()                       # cheap: counts, and reads counters ~every 0.5 s
    ...     if step % 10 == 0:
    ...         logs = session.log_metrics()     # {"energy/step_j": ..., "energy/total_kwh": ..., ...}
    >>> report = session.finish()                # RunReport, files, printed summary

Energy is read in *windows*: the meter is read when at least ``window_s`` has passed at a step, at
every log step and at every phase boundary, never more often. A window's joules go to the phase
that was running (``train``, ``eval``, ``predict``, ``test``) and are shared equally by its steps.
Memory stays bounded: totals per phase and component, and a timeline thinned to at most
``TIMELINE_POINTS`` points (``windows.py``). ``steps.csv`` gets one row per window as the run goes.

Across torch.distributed ranks (``start(across_ranks=True)``, every rank running the same steps),
``sync()`` at a point every rank reaches (a log step) sums the ranks' energy with one collective,
and the metrics, budget and report are then the run's totals (docs/distributed.md)::

    ...     if step % 10 == 0:
    ...         session.sync()                   # a collective: every rank, the same step
    ...         logs = session.log_metrics(read=False)
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import datetime as _dt
import logging
import math
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .budget import Budget
from .carbon import J_PER_KWH, GridIntensity, resolve_intensity
from .config import Config
from .distributed import Reducer, merge_rank_components, node_identity, node_leaders
from .evidence import EvidenceCollector
from .forecast import MILESTONE_FRACTIONS, Forecast, Forecaster, Milestones
from .meter import EnergyMeter, Reading
from .report import ComponentEnergy, PhaseEnergy, RunReport, hardware_info
from .windows import StepsCsv, Timeline, Window

logger = logging.getLogger("wattwise")

STEP_J = "energy/step_j"
POWER_W = "energy/power_w"
TOTAL_KWH = "energy/total_kwh"
EVAL_J = "energy/eval_j"
TEST_J = "energy/test_j"
PREDICT_J = "energy/predict_j"
UNMEASURED_EVAL_NOTE = (
    "evaluation passes are scheduled but none has run yet: forecasts leave them out (and their interval "
    "covers the training steps only) until the first one is measured"
)
FORECAST_KWH = "energy/forecast_kwh"
FORECAST_LOW_KWH = "energy/forecast_low_kwh"
FORECAST_HIGH_KWH = "energy/forecast_high_kwh"
FORECAST_KG = "carbon/forecast_kg"
FORECAST_EVERY_S = 5.0  # a forecast costs ~0.5 ms; it moves slowly, so recompute it at most this often
PASS_KEYS = {"eval": EVAL_J, "test": TEST_J, "predict": PREDICT_J}  # joules of the pass that just ended
CARBON_KG = "carbon/total_kg"
PHASES = ("train", "eval", "test", "predict")


class Session:
    """Measures one run. Construct it at callback construction (it checks the location), start it
    when training starts, and finish it exactly once (``finish`` is idempotent)."""

    def __init__(
        self,
        config: Config,
        framework: str,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.framework = framework
        self.grid: GridIntensity = resolve_intensity(
            country_iso_code=config.country_iso_code,
            region=config.region,
            cloud_provider=config.cloud_provider,
            cloud_region=config.cloud_region,
            carbon_intensity_g_per_kwh=config.carbon_intensity_g_per_kwh,
            pue=config.pue,
        )
        self.budget = Budget(config.budget_kwh, config.budget_kg_co2e, config.on_budget, self.grid)
        self._synchronize: Callable[[], None] | None = None
        self._clock = clock
        self.notes: list[str] = []
        self._noted: set[str] = set()
        self.report: RunReport | None = None
        self.started = False
        self.finished = False
        self._params: int | None = None  # set_work(): for the run registry
        self._tokens: float | None = None

    # ---- lifecycle -----------------------------------------------------------------------------

    def start(
        self,
        *,
        output_dir: str | os.PathLike | None,
        planned_steps: int | None = None,
        is_main_process: bool = True,
        node_leader: bool | None = None,
        phase: str = "train",
        meter: EnergyMeter | None = None,
        across_ranks: bool = False,
    ) -> None:
        """Open the sources and take the first reading, in ``phase`` (``"test"`` for a standalone
        test run, say). ``meter`` replaces the sources (tests).

        ``across_ranks=True`` says every rank calls ``start``, ``sync``, every training ``step()`` and
        ``finish`` at the same points (HF Trainer, Lightning): when torch.distributed is initialised
        with several ranks, the figures are then the run's totals over all ranks, and the node's
        leader (its lowest rank, whatever ``node_leader`` says) alone reads node-wide counters.
        ``start`` is then a collective.

        With ``sync_cuda=True`` each reading first waits for queued CUDA work (torch must be imported).
        """
        if self.started:
            return
        self.node = node_identity()
        self.run_id = str(uuid.uuid4())
        self._reducer = Reducer.from_environment() if across_ranks else None
        if self._reducer is not None:  # first thing: a collective every rank reaches
            peers = self._reducer.gather((self.node, self.run_id))
            node_leader = node_leaders([node for node, _ in peers])[self._reducer.rank]
            self.run_id = peers[0][1]  # one run, one id: rank 0's
        if self.config.sync_cuda:
            self._synchronize = cuda_synchronizer()
        if node_leader is None:
            node_leader = os.environ.get("LOCAL_RANK", "0") in ("", "0")
        self.node_leader = node_leader
        if meter is None:
            from .sources import open_sources

            opened = open_sources(
                self.config.sources,
                node_leader=node_leader,
                cpu_power_w=self.config.cpu_power_w,
                ram_power_w=self.config.ram_power_w,
            )
            for why in opened.notes:
                self.note(why, level=logging.INFO)
            meter = EnergyMeter(opened.sources, clock=self._clock)
        if not meter.components and not node_leader:
            self.note("this process reads no counter itself: its node's leader reads the node-wide ones", level=logging.INFO)
        elif not meter.components:
            self.note("no energy source could start: energy figures will be zero")
        if self.grid.is_default:
            self.note(
                f"no location given: using the world average carbon intensity ({self.grid.g_per_kwh:g} g/kWh); "
                "pass country_iso_code= (or cloud_provider=/cloud_region=, or set WATTWISE_COUNTRY_ISO_CODE)"
            )
        self.meter = meter
        self.planned_steps = planned_steps
        self.is_main_process = is_main_process
        self.started_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.output_dir = Path(output_dir if output_dir is not None else ".") / "wattwise"
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        self._phases = {name: PhaseEnergy(name) for name in PHASES}
        self._phase = self._start_phase = phase
        self._pass_start_j = 0.0
        self._pass_start_s = 0.0
        self.forecaster = Forecaster(planned_steps)
        self._forecast: Forecast | None = None
        self._forecast_at_s = float("-inf")
        self._milestones = Milestones()  # forecasts at 1, 2, 5, 10, 25, 50% of the plan, for the report
        self._window_steps = 0
        self._window_work = 0.0  # tokens of this window's steps, when the integration counts them
        self._window_work_steps = 0  # how many of its steps came with their tokens
        self._global_step = 0
        self._first = self._last = self._read()
        self.evidence = EvidenceCollector(meter, self._first)  # what the advisor reads at the end
        self._next_read_at = self._first.timestamp_s + self.config.window_s
        self._marks: dict[str, _Counts] = {}  # per interval name: the run's counts when it was last logged
        self._timeline = Timeline([c.name for c in meter.components])
        self._steps_csv: StepsCsv | None = None
        self._held_window: Window | None = None
        self._synced: _Synced | None = None
        self._last_pass_j = 0.0
        self._last_pass_sum_j: float | None = None
        self._sync_step = self._next_sync_step()
        if self.is_main_process and self.config.write_files:
            self._open_steps_csv()
        atexit.register(self._finish_at_exit)
        self.started = True

    @property
    def stop_requested(self) -> bool:
        """True once ``on_budget="stop"`` and the budget is spent: integrations then stop training."""
        return self.budget.stop_requested

    def plan(self, planned_steps: int | None, *, eval_every_steps: int | None = None) -> None:
        """Set the planned training steps once known (it may be after ``start``) and, when the
        framework says it, the evaluation cadence in steps (else it is inferred from the passes)."""
        self.planned_steps = planned_steps
        self.forecaster.planned_steps = planned_steps
        self.forecaster.eval_every_steps = eval_every_steps
        self._sync_step = self._next_sync_step()

    def finish(self, *, partial: bool = False) -> RunReport | None:
        """Close the last window, build the report, write the files and print the summary, once."""
        if not self.started or self.finished:
            return self.report
        self.finished = True
        atexit.unregister(self._finish_at_exit)
        ranks: list[dict] = []
        try:
            self._close_window()
        finally:
            if self._reducer is not None and partial:  # other ranks may be gone: no collective now
                self._stop_reducing("the run was interrupted, so ranks could not be summed")
            elif self._reducer is not None:
                self._reduce()
                if self._reducer is not None:
                    ranks = self._gather_ranks()
        self.meter.close()
        self._note_meter()
        self.report = self._build_report(partial, ranks)
        if self._held_window is not None:
            self._write_steps_row(self._held_window)
        if self._steps_csv is not None:
            self._steps_csv.close()
        if self.is_main_process:
            self._record_run(self.report)
            if self.config.write_files:
                self._write_files(self.report)
            if self.config.print_summary:
                self.report.print_summary(file=sys.stderr if partial else sys.stdout)
        return self.report

    # ---- hot path ------------------------------------------------------------------------------

    def step(self, work: float | None = None) -> bool:
        """One step (an optimizer step in training, a batch in eval/predict) has ended; ``work``:
        the tokens it processed, when the framework counts them (the forecast then separates the
        cost per token from the tokens per step, which vary with sequence lengths).

        Returns True when this step closed a window (the counters were just read).
        """
        self._window_steps += 1
        if work is not None:
            self._window_work += work
            self._window_work_steps += 1
        if self._sync_step is not None and self._phase == "train" and (
            self._phases["train"].steps + self._window_steps >= self._sync_step
        ):  # across ranks only: a forecast milestone, where every rank syncs
            self.sync()
            return True
        if self._clock() >= self._next_read_at:
            self._close_window()
            return True
        return False

    # ---- phases and logs -----------------------------------------------------------------------

    @property
    def phase(self) -> str:
        return self._phase

    def begin(self, phase: str) -> None:
        """Enter ``phase`` (``eval``, ``test``, ``predict``); what came before is closed as the old phase."""
        if phase not in self._phases:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        if phase == self._phase:
            return
        self._close_window()
        self._phase = phase
        self._pass_start_j = self._phases[phase].energy_j
        self._pass_start_s = self._phases[phase].duration_s

    def end(self, phase: str, *, record_pass: bool = True) -> float:
        """Leave ``phase`` (back to ``train``); return the joules of the pass that just ended.

        ``record_pass=False`` keeps a pass that is not one of the run's regular evaluations (a
        sanity check) out of the forecast.
        """
        if self._phase != phase:
            return 0.0
        self._close_window()
        record = self._phases[phase]
        record.passes += 1
        pass_j = record.energy_j - self._pass_start_j
        self._last_pass_j, self._last_pass_sum_j = pass_j, None
        if phase == "eval" and record_pass:
            self.forecaster.add_eval_pass(pass_j, record.duration_s - self._pass_start_s)
        self._phase = "train"
        return pass_j

    def add_samples(self, phase: str, samples: int) -> None:
        self._phases[phase].samples += samples

    def set_work(self, *, model: object = None, tokens: float | None = None) -> None:
        """What the run registry needs to calibrate ``wattwise.estimate``: the model (its parameters
        are counted now) and, when the framework counts them, the training tokens. Never raises."""
        try:
            if model is not None:
                from .estimate import count_params

                self._params = count_params(model)
            if tokens:
                self._tokens = float(tokens)
        except Exception as exc:  # an unbuilt Keras model, say: the run is recorded without it
            self.note(f"the model's parameters could not be counted for the run registry ({exc})", level=logging.INFO)

    def _record_run(self, report: RunReport) -> None:
        """Add the run to the registry (``registry=False`` or ``WATTWISE_REGISTRY=off``: not); a
        registry that cannot be written costs a note, never the run."""
        try:
            from .registry import Registry

            registry = Registry.open(self.config.registry)
            if registry is not None:
                registry.record(report, params=self._params, tokens=self._tokens, output_dir=self.output_dir.parent,
                                precision=self.evidence.setup.precision)
        except Exception as exc:
            message = f"the run was not recorded in the registry ({type(exc).__name__}: {exc})"
            self.note(message)
            report.notes.append(message)

    def log_metrics(self, interval: str = "log", *, read: bool = True) -> dict[str, float]:
        """Metrics of the interval since the previous call with the same ``interval`` name.

        Integrations that log at two levels keep two intervals (Keras: ``"batch"`` and
        ``"epoch"``). ``read=False`` skips closing the window, for a caller whose ``step()`` just did.
        """
        if read:
            self._close_window()
        counts = self._run_counts()
        mark = self._marks.get(interval, _Counts(self._first.timestamp_s, 0.0, 0, 0.0))
        metrics: dict[str, float] = {}
        if counts.train_steps > mark.train_steps:
            metrics[STEP_J] = (counts.train_j - mark.train_j) / (counts.train_steps - mark.train_steps)
        if counts.timestamp_s > mark.timestamp_s:
            metrics[POWER_W] = (counts.total_j - mark.total_j) / (counts.timestamp_s - mark.timestamp_s)
        metrics.update(self.totals())
        metrics.update(self.forecast_metrics())
        self._marks[interval] = counts
        return metrics

    @property
    def last_pass_j(self) -> float:
        """Joules of the evaluation/test/predict pass that ended last; over all ranks once a
        ``sync`` has followed its end."""
        return self._last_pass_j if self._last_pass_sum_j is None else self._last_pass_sum_j

    def sync(self) -> None:
        """Close the window now and, across ranks, sum the run's figures over every rank.

        With ``across_ranks=True`` this is a collective: every rank calls it at the same point (a log
        step, the end of an evaluation). On one process it only closes the window. Figures logged
        across ranks (totals, ``step_j``, ``power_w``, forecasts) are those of the last sync.
        """
        if not self.started or self.finished:
            return
        try:
            self._close_window()
        finally:  # every rank must reach the collective, whatever happened above
            if self._reducer is not None:
                self._reduce()

    def forecast(self) -> Forecast | None:
        """The latest projection of the planned run, recomputed at most every ``FORECAST_EVERY_S``
        (and at every call once the plan is done, when it is the measured total)."""
        now = self._last.timestamp_s
        done = bool(self.planned_steps) and self._phases["train"].steps >= self.planned_steps
        if done or now - self._forecast_at_s >= max(self.config.window_s, FORECAST_EVERY_S):
            self._forecast = self._project()
            self._forecast_at_s = now
            if self._forecast is not None and (
                warning := self.budget.check_forecast(
                    self._forecast, self._run_counts().total_j, advice=self._advice_so_far, framework=self.framework
                )
            ):
                self.note(warning)
        return self._forecast

    def _so_far(self) -> tuple[float, float]:
        """Energy and time measured since the start, as of the last reading."""
        return self._last.total_j - self._first.total_j, self._last.timestamp_s - self._first.timestamp_s

    def forecast_metrics(self) -> dict[str, float]:
        forecast = self.forecast()
        if forecast is None:
            return {}
        return {
            FORECAST_KWH: forecast.energy_j / J_PER_KWH,
            FORECAST_LOW_KWH: forecast.energy_low_j / J_PER_KWH,
            FORECAST_HIGH_KWH: forecast.energy_high_j / J_PER_KWH,
            FORECAST_KG: self.grid.kg_for_j(forecast.energy_j),
        }

    def totals(self) -> dict[str, float]:
        """Cumulative energy and carbon as of the last reading (across ranks: the last sync)."""
        total_j = self._run_counts().total_j
        return {TOTAL_KWH: total_j / J_PER_KWH, CARBON_KG: self.grid.kg_for_j(total_j)}

    # ---- notes ---------------------------------------------------------------------------------

    def note(self, message: str, *, level: int = logging.WARNING) -> None:
        """Record a message for the report and log it, once."""
        if message in self._noted:
            return
        self._noted.add(message)
        self.notes.append(message)
        logger.log(level, "wattwise: %s", message)

    def report_failure(self, where: str, exc: BaseException) -> None:
        """A hook failed: say so once per hook; tracking goes on with what still works."""
        key = f"{where} failed"
        if key in self._noted:
            return
        self._noted.add(key)
        message = f"{where} failed ({type(exc).__name__}: {exc}); training continues, figures may be incomplete"
        self.notes.append(message)
        logger.warning("wattwise: %s", message, exc_info=exc)

    # ---- internals -----------------------------------------------------------------------------

    def _read(self) -> Reading:
        if self._synchronize is not None:
            try:
                self._synchronize()
            except Exception as exc:
                self.report_failure("synchronize", exc)
        return self.meter.read()

    def _close_window(self) -> None:
        """Read the meter and give the window's joules to its steps and their phase.

        Every joule goes to a step: a window without steps (the log, the set-up of an evaluation,
        the end of training) joins the window before it, whatever its phase, because the time after
        a step until the next one belongs to that step; at the very start, before any step, it
        waits for the first window with steps and takes that window's phase.
        """
        reading = self._read()
        previous, self._last = self._last, reading
        self._next_read_at = reading.timestamp_s + self.config.window_s
        steps, self._window_steps = self._window_steps, 0
        work = self._window_work if self._window_work_steps == steps else None  # only if every step said
        self._window_work, self._window_work_steps = 0.0, 0
        duration_s = reading.timestamp_s - previous.timestamp_s
        if duration_s <= 0 and steps == 0:
            return
        deltas = [b - a for a, b in zip(previous.energy_j, reading.energy_j, strict=True)]
        held = self._held_window
        phase = held.phase if steps == 0 and held is not None else self._phase
        record = self._phases[phase]
        record.energy_j += sum(deltas)
        record.duration_s += duration_s
        record.steps += steps
        self.evidence.window(reading, phase)
        if phase == "train":
            self._global_step += steps
            self.forecaster.add_window(steps, sum(deltas), duration_s, work)
            self._check_milestones()
        if self._reducer is None and (warning := self.budget.check_measured(self._so_far()[0], self._phases["train"].steps)):
            self.note(warning)  # across ranks the budget is checked at syncs, on the totals, the same on every rank
        start_s = previous.timestamp_s - self._first.timestamp_s
        self._timeline.add(start_s=start_s, duration_s=duration_s, deltas=deltas, phase=phase)
        window = Window(phase, self._global_step, steps, start_s, duration_s, deltas)
        if held is not None and held.steps == 0 and held.phase != phase:
            self._recharge(held, phase)
        if held is not None and held.phase == phase and (steps == 0 or held.steps == 0):
            held.absorb(window)
            return
        if held is not None:
            self._write_steps_row(held)
        self._held_window = window

    def _check_milestones(self, *, at_sync: bool = False) -> None:
        """Keep the forecast made when training first reached each milestone fraction of the plan
        (or, if there was none then, the first one made before the next milestone). Across ranks
        this happens at the syncs, which are placed at the milestones, so it is of the totals."""
        if self._reducer is not None and not at_sync:
            return
        self._milestones.update(self._global_step, self.planned_steps, self._project)

    def _project(self) -> Forecast | None:
        """The forecaster's projection of the run from what was measured so far (across ranks, scaled
        to the totals); a projection that leaves scheduled evaluation out says so in the notes."""
        forecast = self._scaled(self.forecaster.forecast(*self._so_far()))
        if forecast is not None and forecast.eval_passes_unmeasured:
            self.note(UNMEASURED_EVAL_NOTE, level=logging.INFO)
        return forecast

    # ---- across ranks --------------------------------------------------------------------------

    def _run_counts(self) -> _Counts:
        """The run's energy and steps: this process's as of the last reading or, across ranks, the
        sums at the last sync (nothing before the first)."""
        if self._reducer is not None:
            synced = self._synced
            if synced is None:
                return _Counts(self._first.timestamp_s, 0.0, 0, 0.0)
            return _Counts(synced.timestamp_s, synced.total_j, synced.train_steps, synced.phase_j["train"])
        train = self._phases["train"]
        return _Counts(self._last.timestamp_s, self._last.total_j - self._first.total_j, train.steps, train.energy_j)

    def _scaled(self, forecast: Forecast | None) -> Forecast | None:
        """Across ranks, this rank's forecast scaled to the run: by the ratio of the total to this
        rank's energy at the last sync (ranks run the same steps; None before the first sync)."""
        if self._reducer is None or forecast is None:
            return forecast
        synced = self._synced
        if synced is None or synced.local_total_j <= 0:
            return None
        ratio = synced.total_j / synced.local_total_j
        return dataclasses.replace(
            forecast,
            energy_j=forecast.energy_j * ratio,
            energy_low_j=forecast.energy_low_j * ratio,
            energy_high_j=forecast.energy_high_j * ratio,
            tail_j=forecast.tail_j * ratio,
        )

    def _next_sync_step(self) -> int | None:
        """Across ranks, the next training step at which ``step()`` syncs by itself: each forecast
        milestone (a step count, so the same on every rank), for forecasts of the totals."""
        if getattr(self, "_reducer", None) is None or not self.planned_steps:
            return None
        done = self._phases["train"].steps + (self._window_steps if self._phase == "train" else 0)
        for fraction in MILESTONE_FRACTIONS:
            step = max(1, math.ceil(fraction * self.planned_steps))
            if step > done:
                return step
        return None

    def _reduce(self) -> None:
        """Sum this rank's figures with every other rank's (a collective), then check the budget
        and the milestones on the sums: the same values, so the same decisions, on every rank."""
        try:
            local = self._local_figures()
        except Exception:  # still take part, or the other ranks would wait for ever
            local = [math.nan] * len(_FIGURES)
        try:
            summed = self._reducer.sum(local)
        except Exception as exc:
            self._stop_reducing(f"summing across ranks failed ({type(exc).__name__}: {exc})")
            return
        if not all(math.isfinite(v) for v in summed):
            self._stop_reducing("a rank could not give its figures to the sum")
            return
        sums = dict(zip(_FIGURES, summed, strict=True))
        self._synced = _Synced(
            timestamp_s=self._last.timestamp_s,
            train_steps=self._phases["train"].steps,
            local_total_j=local[0],
            total_j=sums["total_j"],
            phase_j={name: sums[f"{name}_j"] for name in PHASES},
            phase_samples={name: round(sums[f"{name}_samples"]) for name in PHASES},
        )
        self._last_pass_sum_j = sums["last_pass_j"]
        if warning := self.budget.check_measured(self._synced.total_j, self._synced.train_steps):
            self.note(warning)
        self._check_milestones(at_sync=True)
        self._sync_step = self._next_sync_step()

    def _local_figures(self) -> list[float]:
        figures = {"total_j": self._so_far()[0], "last_pass_j": self._last_pass_j}
        for name, record in self._phases.items():
            figures[f"{name}_j"] = record.energy_j
            figures[f"{name}_samples"] = float(record.samples)
        return [figures[key] for key in _FIGURES]

    def _gather_ranks(self) -> list[dict]:
        """Every rank's own components, for the report (a collective, at the end)."""
        mine = {
            "rank": self._reducer.rank,
            "node": self.node,
            "node_leader": self.node_leader,
            "energy_j": self._so_far()[0],
            "components": [dataclasses.asdict(c) for c in self._components().values()],
        }
        try:
            return self._reducer.gather(mine)
        except Exception as exc:
            self._stop_reducing(f"gathering the ranks' components failed ({type(exc).__name__}: {exc})")
            return []

    def _stop_reducing(self, why: str) -> None:
        """Carry on as one process: honest figures for this rank rather than a hang or a guess."""
        rank = self._reducer.rank if self._reducer is not None else 0
        self._reducer = None
        self._synced = None
        self._sync_step = None
        self.note(f"{why}: from here on, figures are rank {rank}'s own, not the whole run's")

    def _recharge(self, window: Window, phase: str) -> None:
        """Move a step-less window (set-up before the first step) to the phase of the first step."""
        energy_j = sum(window.deltas)
        for name, sign in ((window.phase, -1.0), (phase, 1.0)):
            record = self._phases[name]
            record.energy_j += sign * energy_j
            record.duration_s += sign * window.duration_s
        window.phase = phase

    def _open_steps_csv(self) -> None:
        try:
            self._steps_csv = StepsCsv.open(self.output_dir / "steps.csv", [c.name for c in self.meter.components])
        except OSError as exc:
            self.note(f"cannot write steps.csv in {self.output_dir}: {exc}")

    def _write_steps_row(self, window: Window) -> None:
        if self._steps_csv is None:
            return
        try:
            self._steps_csv.write(window)
        except (OSError, ValueError) as exc:
            self.note(f"steps.csv stopped being written: {exc}")
            self._steps_csv = None

    def _note_meter(self) -> None:
        for message in self.meter.notes:
            self.note(message)

    def _build_report(self, partial: bool, ranks: list[dict] | None = None) -> RunReport:
        """This process's figures or, with ``ranks`` gathered at the end, the whole run's."""
        by_component = self._components()
        phases = self._phases
        energy_j = self._last.total_j - self._first.total_j
        if ranks and self._synced is not None:
            by_component = merge_rank_components(ranks)
            energy_j = self._synced.total_j
            phases = {
                name: dataclasses.replace(p, energy_j=self._synced.phase_j[name], samples=self._synced.phase_samples[name])
                for name, p in phases.items()
            }
        by_phase = {
            name: p for name, p in phases.items() if p.energy_j or p.steps or p.passes or name == self._start_phase
        }
        return RunReport(
            run_id=self.run_id,
            framework=self.framework,
            project_name=self.config.project_name,
            started_at=self.started_at,
            duration_s=self._last.timestamp_s - self._first.timestamp_s,
            energy_j=energy_j,
            emissions_kg=self.grid.kg_for_j(energy_j),
            train_steps=self._phases["train"].steps,
            planned_steps=self.planned_steps,
            by_component=by_component,
            by_phase=by_phase,
            carbon=self.grid.to_dict(),
            partial=partial,
            recommendations=self._recommendations(energy_j, by_phase, by_component),  # before notes: its failure is one
            notes=list(self.notes),
            timeline=self._timeline.points(),
            hardware=hardware_info(),
            forecasts=self._scored_milestones(partial, energy_j),
            budget=self.budget.to_dict(),
            ranks=[{**r, "components": {c["name"]: c["energy_j"] for c in r["components"]}} for r in ranks or []],
        )

    def _advice_so_far(self) -> list:
        """The advisor's recommendations on the run so far (for a budget warning)."""
        energy_j = self._so_far()[0]
        by_phase = {name: p for name, p in self._phases.items() if p.energy_j or p.steps}
        return self._recommendations(energy_j, by_phase, self._components())

    def _components(self) -> dict[str, ComponentEnergy]:
        """This process's components and their energy as of the last reading."""
        return {
            c.name: ComponentEnergy(
                name=c.name, kind=c.kind, energy_j=end - begin, measured=c.measured,
                source=c.source, scope=c.scope, detail=c.detail,
            )
            for c, begin, end in zip(self.meter.components, self._first.energy_j, self._last.energy_j, strict=True)
        }

    def _recommendations(self, energy_j: float, by_phase: dict, by_component: dict) -> list:
        """The advisor's recommendations for this run; a failing advisor costs the advice, not the report."""
        from .advisor import advise

        try:
            return advise(self.evidence.evidence(
                energy_j=energy_j, duration_s=self._so_far()[1], phases=by_phase, components=by_component,
                grid=self.grid,
            ))
        except Exception as exc:
            self.report_failure("advisor", exc)
            return []

    def _scored_milestones(self, partial: bool, energy_j: float) -> list[dict]:
        """The milestone forecasts with their error against the measured total, when the run
        went to its plan (a stopped or interrupted run has no true total to compare with)."""
        complete = not partial and self.planned_steps and self._phases["train"].steps >= self.planned_steps
        scored = []
        for milestone in self._milestones.records:
            error = None
            if complete and milestone["energy_j"] is not None and energy_j > 0:
                error = 100.0 * (milestone["energy_j"] - energy_j) / energy_j
            scored.append({**milestone, "error_pct": error})
        return scored

    def _write_files(self, report: RunReport) -> None:
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            report.write_json(self.output_dir / "report.json")
            report.write_emissions_csv(self.output_dir / "emissions.csv")
        except Exception as exc:  # never lose the run to a full disk: the report is still returned
            self.note(f"could not write files in {self.output_dir}: {exc}")
        try:
            report.write_png(self.output_dir / "report.png")
        except Exception as exc:  # no matplotlib, say: the figure is lost, not the run
            self.note(f"could not draw report.png: {exc}")

    def _finish_at_exit(self) -> None:
        with contextlib.suppress(Exception):  # the interpreter is exiting: nowhere left to report
            self.finish(partial=True)


@dataclass(frozen=True)
class _Counts:
    """The run's energy and training steps at one moment (this rank's reading time)."""

    timestamp_s: float
    total_j: float
    train_steps: int
    train_j: float


_FIGURES = ("total_j", *(f"{p}_j" for p in PHASES), *(f"{p}_samples" for p in PHASES), "last_pass_j")


@dataclass(frozen=True)
class _Synced:
    """The run's figures summed over ranks at a sync, and this rank's own total then."""

    timestamp_s: float
    train_steps: int
    local_total_j: float
    total_j: float
    phase_j: dict[str, float]
    phase_samples: dict[str, int]


def cuda_synchronizer() -> Callable[[], None] | None:
    """``torch.cuda.synchronize`` when torch is already imported and CUDA is initialised, else None."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return torch.cuda.synchronize
