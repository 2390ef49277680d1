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
``TIMELINE_POINTS`` points. ``steps.csv`` gets one row per window as the run goes.
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import datetime as _dt
import logging
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
from .forecast import Forecast, Forecaster
from .meter import EnergyMeter, Reading
from .report import ComponentEnergy, PhaseEnergy, RunReport, hardware_info

logger = logging.getLogger("wattwise")

STEP_J = "energy/step_j"
POWER_W = "energy/power_w"
TOTAL_KWH = "energy/total_kwh"
EVAL_J = "energy/eval_j"
TEST_J = "energy/test_j"
PREDICT_J = "energy/predict_j"
FORECAST_KWH = "energy/forecast_kwh"
FORECAST_LOW_KWH = "energy/forecast_low_kwh"
FORECAST_HIGH_KWH = "energy/forecast_high_kwh"
FORECAST_KG = "carbon/forecast_kg"
FORECAST_EVERY_S = 5.0  # a forecast costs ~0.5 ms; it moves slowly, so recompute it at most this often
FORECAST_MILESTONES = (0.01, 0.02, 0.05, 0.10, 0.25, 0.50)  # fractions of the plan the report keeps
PASS_KEYS = {"eval": EVAL_J, "test": TEST_J, "predict": PREDICT_J}  # joules of the pass that just ended
CARBON_KG = "carbon/total_kg"
TIMELINE_POINTS = 512
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
    ) -> None:
        """Open the sources and take the first reading, in ``phase`` (``"test"`` for a standalone
        test run, say). ``meter`` replaces the sources (tests).

        With ``sync_cuda=True`` each reading first waits for queued CUDA work (torch must be imported).
        """
        if self.started:
            return
        if self.config.sync_cuda:
            self._synchronize = cuda_synchronizer()
        if node_leader is None:
            node_leader = os.environ.get("LOCAL_RANK", "0") in ("", "0")
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
        if not meter.components:
            self.note("no energy source could start: energy figures will be zero")
        if self.grid.is_default:
            self.note(
                f"no location given: using the world average carbon intensity ({self.grid.g_per_kwh:g} g/kWh); "
                "pass country_iso_code= (or cloud_provider=/cloud_region=, or set WATTWISE_COUNTRY_ISO_CODE)"
            )
        self.meter = meter
        self.planned_steps = planned_steps
        self.is_main_process = is_main_process
        self.run_id = str(uuid.uuid4())
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
        self._milestones: list[dict[str, float]] = []
        self._window_steps = 0
        self._global_step = 0
        self._first = self._last = self._read()
        self._next_read_at = self._first.timestamp_s + self.config.window_s
        self._marks: dict[str, tuple[Reading, int, float]] = {}  # per interval name: reading, train steps and joules
        self._timeline: list[dict[str, float | str]] = []
        self._timeline_stride = 1
        self._pending_point: dict[str, float | str] | None = None
        self._pending_windows = 0
        self._steps_file = None
        self._steps_writer = None
        self._held_window: _Window | None = None
        self._rows_written = 0
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

    def finish(self, *, partial: bool = False) -> RunReport | None:
        """Close the last window, build the report, write the files and print the summary, once."""
        if not self.started or self.finished:
            return self.report
        self.finished = True
        atexit.unregister(self._finish_at_exit)
        self._close_window()
        self.meter.close()
        self._note_meter()
        self.report = self._build_report(partial)
        if self._held_window is not None and self._steps_writer is not None:
            self._write_steps_row(self._held_window)
        if self._steps_file is not None:
            self._steps_file.close()
        if self.is_main_process:
            if self.config.write_files:
                self._write_files(self.report)
            if self.config.print_summary:
                print(self.report.summary(), file=sys.stderr if partial else sys.stdout, flush=True)
        return self.report

    # ---- hot path ------------------------------------------------------------------------------

    def step(self) -> bool:
        """One step (an optimizer step in training, a batch in eval/predict) has ended.

        Returns True when this step closed a window (the counters were just read).
        """
        self._window_steps += 1
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
        if phase == "eval" and record_pass:
            self.forecaster.add_eval_pass(pass_j, record.duration_s - self._pass_start_s)
        self._phase = "train"
        return pass_j

    def add_samples(self, phase: str, samples: int) -> None:
        self._phases[phase].samples += samples

    def log_metrics(self, interval: str = "log", *, read: bool = True) -> dict[str, float]:
        """Metrics of the interval since the previous call with the same ``interval`` name.

        Integrations that log at two levels keep two intervals (Keras: ``"batch"`` and
        ``"epoch"``). ``read=False`` skips closing the window, for a caller whose ``step()`` just did.
        """
        if read:
            self._close_window()
        last_reading, last_steps, last_train_j = self._marks.get(interval, (self._first, 0, 0.0))
        train = self._phases["train"]
        metrics: dict[str, float] = {}
        steps = train.steps - last_steps
        if steps:
            metrics[STEP_J] = (train.energy_j - last_train_j) / steps
        duration_s = self._last.timestamp_s - last_reading.timestamp_s
        if duration_s > 0:
            metrics[POWER_W] = (self._last.total_j - last_reading.total_j) / duration_s
        metrics.update(self.totals())
        metrics.update(self.forecast_metrics())
        self._marks[interval] = (self._last, train.steps, train.energy_j)
        return metrics

    def forecast(self) -> Forecast | None:
        """The latest projection of the planned run, recomputed at most every ``FORECAST_EVERY_S``
        (and at every call once the plan is done, when it is the measured total)."""
        now = self._last.timestamp_s
        done = bool(self.planned_steps) and self._phases["train"].steps >= self.planned_steps
        if done or now - self._forecast_at_s >= max(self.config.window_s, FORECAST_EVERY_S):
            self._forecast = self.forecaster.forecast(*self._so_far())
            self._forecast_at_s = now
            if self._forecast is not None and (warning := self.budget.check_forecast(self._forecast, self._so_far()[0])):
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
        """Cumulative energy and carbon as of the last reading."""
        total_j = self._last.total_j - self._first.total_j
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
        if phase == "train":
            self._global_step += steps
            self.forecaster.add_window(steps, sum(deltas), duration_s)
            self._check_milestones()
        if warning := self.budget.check_measured(self._so_far()[0], self._phases["train"].steps):
            self.note(warning)
        start_s = previous.timestamp_s - self._first.timestamp_s
        self._add_timeline_point(start_s, duration_s, deltas, phase)
        window = _Window(phase, self._global_step, steps, start_s, duration_s, deltas)
        if held is not None and held.steps == 0 and held.phase != phase:
            self._recharge(held, phase)
        if held is not None and held.phase == phase and (steps == 0 or held.steps == 0):
            held.absorb(window)
            return
        if held is not None and self._steps_writer is not None:
            self._write_steps_row(held)
        self._held_window = window

    def _check_milestones(self) -> None:
        """Keep the forecast made when training first reached each milestone fraction of the plan."""
        if not self.planned_steps or len(self._milestones) == len(FORECAST_MILESTONES):
            return
        fraction = FORECAST_MILESTONES[len(self._milestones)]
        if self._global_step < fraction * self.planned_steps:
            return
        forecast = self.forecaster.forecast(*self._so_far())
        self._milestones.append(
            {
                "fraction": fraction,
                "at_step": self._global_step,
                "energy_j": forecast.energy_j if forecast else None,
                "energy_low_j": forecast.energy_low_j if forecast else None,
                "energy_high_j": forecast.energy_high_j if forecast else None,
                "duration_s": forecast.duration_s if forecast else None,
            }
        )
        self._check_milestones()  # one window may cross several milestones

    def _recharge(self, window: _Window, phase: str) -> None:
        """Move a step-less window (set-up before the first step) to the phase of the first step."""
        energy_j = sum(window.deltas)
        for name, sign in ((window.phase, -1.0), (phase, 1.0)):
            record = self._phases[name]
            record.energy_j += sign * energy_j
            record.duration_s += sign * window.duration_s
        window.phase = phase

    def _add_timeline_point(self, start_s: float, duration_s: float, deltas: list[float], phase: str) -> None:
        """Keep at most TIMELINE_POINTS evenly spaced points: when full, merge pairs and double the stride."""
        point: dict[str, float | str] = {"t_s": start_s, "duration_s": duration_s, "phase": phase}
        for component, joules in zip(self.meter.components, deltas, strict=True):
            point[component.name] = joules
        pending = self._pending_point
        self._pending_point = point if pending is None else _merge_points(pending, point)
        self._pending_windows += 1
        if self._pending_windows < self._timeline_stride:
            return
        self._timeline.append(self._pending_point)
        self._pending_point, self._pending_windows = None, 0
        if len(self._timeline) >= TIMELINE_POINTS:
            pairs = zip(self._timeline[0::2], self._timeline[1::2], strict=False)
            self._timeline = [_merge_points(a, b) for a, b in pairs]
            self._timeline_stride *= 2

    def _open_steps_csv(self) -> None:
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            path = self.output_dir / "steps.csv"
            self._steps_file = path.open("w", newline="")
            self._steps_writer = csv.writer(self._steps_file)
            self._steps_writer.writerow(
                ["window", "phase", "global_step", "steps", "start_s", "duration_s", "energy_j", "power_w", "step_j"]
                + [f"{c.name}_j" for c in self.meter.components]
            )
            self._steps_file.flush()
        except OSError as exc:
            self.note(f"cannot write steps.csv in {self.output_dir}: {exc}")
            self._steps_file = self._steps_writer = None

    def _write_steps_row(self, window: _Window) -> None:
        energy_j = sum(window.deltas)
        power_w = energy_j / window.duration_s if window.duration_s > 0 else 0.0
        step_j = repr(energy_j / window.steps) if window.steps else ""
        try:
            self._steps_writer.writerow(
                [self._rows_written + 1, window.phase, window.global_step, window.steps, f"{window.start_s:.4f}",
                 f"{window.duration_s:.4f}", repr(energy_j), f"{power_w:.3f}", step_j]
                + [repr(d) for d in window.deltas]
            )
            self._steps_file.flush()
            self._rows_written += 1
        except (OSError, ValueError) as exc:
            self.note(f"steps.csv stopped being written: {exc}")
            self._steps_writer = None

    def _note_meter(self) -> None:
        for message in self.meter.notes:
            self.note(message)

    def _build_report(self, partial: bool) -> RunReport:
        by_component = {
            c.name: ComponentEnergy(
                name=c.name, kind=c.kind, energy_j=end - begin, measured=c.measured,
                source=c.source, scope=c.scope, detail=c.detail,
            )
            for c, begin, end in zip(self.meter.components, self._first.energy_j, self._last.energy_j, strict=True)
        }
        by_phase = {
            name: p for name, p in self._phases.items() if p.energy_j or p.steps or p.passes or name == self._start_phase
        }
        energy_j = self._last.total_j - self._first.total_j
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
            notes=list(self.notes),
            timeline=list(self._timeline) + ([self._pending_point] if self._pending_point else []),
            hardware=hardware_info(),
            forecasts=self._scored_milestones(partial, energy_j),
            budget=self.budget.to_dict(),
        )

    def _scored_milestones(self, partial: bool, energy_j: float) -> list[dict]:
        """The milestone forecasts with their error against the measured total, when the run
        went to its plan (a stopped or interrupted run has no true total to compare with)."""
        complete = not partial and self.planned_steps and self._phases["train"].steps >= self.planned_steps
        scored = []
        for milestone in self._milestones:
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

    def _finish_at_exit(self) -> None:
        with contextlib.suppress(Exception):  # the interpreter is exiting: nowhere left to report
            self.finish(partial=True)


@dataclass
class _Window:
    """A closed window, as a row of steps.csv."""

    phase: str
    global_step: int
    steps: int
    start_s: float
    duration_s: float
    deltas: list[float]

    def absorb(self, later: _Window) -> None:
        self.global_step = later.global_step
        self.steps += later.steps
        self.duration_s += later.duration_s
        self.deltas = [a + b for a, b in zip(self.deltas, later.deltas, strict=True)]


def _merge_points(a: dict[str, float | str], b: dict[str, float | str]) -> dict[str, float | str]:
    merged: dict[str, float | str] = dict(a)
    for key, value in b.items():
        if key in ("t_s", "phase"):
            continue
        merged[key] = float(a.get(key, 0.0)) + float(value)
    if float(b["duration_s"]) > float(a["duration_s"]):
        merged["phase"] = b["phase"]
    return merged


def cuda_synchronizer() -> Callable[[], None] | None:
    """``torch.cuda.synchronize`` when torch is already imported and CUDA is initialised, else None."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return torch.cuda.synchronize
