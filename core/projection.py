"""A run's forecasts as it goes: the forecaster fed window by window, the forecast logged, and the
milestone forecasts the report scores.

Example::

    >>> from wattwise.projection import Projection
    >>> projection = Projection(planned_steps=1000)
    >>> projection.add_window(steps=10, energy_j=50.0, duration_s=0.5, work=None)
    >>> projection.current(reading_s=12.0, project=lambda: projection.forecaster.forecast())

How the forecast itself is made (warm-up, evaluation passes, drift, the interval) is
``forecast.py``; this module decides *when* it is made and keeps what the report needs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .carbon import J_PER_KWH, GridIntensity
from .forecast import Forecast, Forecaster, Milestones

FORECAST_KWH = "energy/forecast_kwh"
FORECAST_LOW_KWH = "energy/forecast_low_kwh"
FORECAST_HIGH_KWH = "energy/forecast_high_kwh"
FORECAST_KG = "carbon/forecast_kg"


class Projection:
    """The forecaster of one run, its latest forecast and its milestone forecasts."""

    def __init__(self, planned_steps: int | None) -> None:
        self.forecaster = Forecaster(planned_steps)
        self.milestones = Milestones()  # forecasts at 1, 2, 5, 10, 25, 50% of the plan, for the report
        self._latest: Forecast | None = None
        self._latest_at_s: float | None = None  # the reading the latest forecast was made from

    @property
    def planned_steps(self) -> int | None:
        return self.forecaster.planned_steps

    def plan(self, planned_steps: int | None, eval_every_steps: int | None = None) -> None:
        self.forecaster.planned_steps = planned_steps
        self.forecaster.eval_every_steps = eval_every_steps
        self._latest_at_s = None  # a new plan: the next forecast is made afresh

    def add_window(self, steps: int, energy_j: float, duration_s: float, work: float | None) -> None:
        self.forecaster.add_window(steps, energy_j, duration_s, work)

    def add_eval_pass(self, energy_j: float, duration_s: float) -> None:
        self.forecaster.add_eval_pass(energy_j, duration_s)
        self._latest_at_s = None

    def update_milestones(self, step: int, project: Callable[[], Forecast | None]) -> None:
        """Keep the forecast made when training first reached each milestone fraction of the plan
        (or, if there was none then, the first one made before the next milestone)."""
        self.milestones.update(step, self.planned_steps, project)

    def current(self, *, reading_s: float, project: Callable[[], Forecast | None]) -> tuple[Forecast | None, bool]:
        """The projection of the planned run from every window closed up to the reading at
        ``reading_s``, and whether it was made just now: a forecast is never reused once a later
        window has closed (a stale one, made during a warm-up say, would be logged long after it
        ended), and made once per reading however often it is asked for."""
        if reading_s != self._latest_at_s:
            self._latest = project()
            self._latest_at_s = reading_s
            return self._latest, True
        return self._latest, False

    def scored(self, *, complete: bool, energy_j: float) -> list[dict[str, Any]]:
        """The milestone forecasts with their error against the measured total, when the run went
        to its plan (a stopped or interrupted run has no true total to compare with)."""
        scored = []
        for milestone in self.milestones.records:
            error = None
            if complete and milestone["energy_j"] is not None and energy_j > 0:
                error = 100.0 * (milestone["energy_j"] - energy_j) / energy_j
            scored.append({**milestone, "error_pct": error})
        return scored


def forecast_metrics(forecast: Forecast | None, grid: GridIntensity) -> dict[str, float]:
    """The logged forecast keys for ``forecast`` (none without one)."""
    if forecast is None:
        return {}
    return {
        FORECAST_KWH: forecast.energy_j / J_PER_KWH,
        FORECAST_LOW_KWH: forecast.energy_low_j / J_PER_KWH,
        FORECAST_HIGH_KWH: forecast.energy_high_j / J_PER_KWH,
        FORECAST_KG: grid.kg_for_j(forecast.energy_j),
    }
