"""Energy and carbon budgets: warn from the forecast, warn or stop on the measure.

Example::

    >>> from wattwise.budget import Budget
    >>> from wattwise.carbon import resolve_intensity
    >>> budget = Budget(kwh=0.5, kg_co2e=None, on_budget="stop", grid=resolve_intensity(country_iso_code="FRA"))
    >>> budget.check_measured(energy_j=1.0e6, step=600) is None      # 0.28 kWh: under budget
    True
    >>> budget.check_measured(energy_j=2.0e6, step=1200)             # 0.56 kWh: spent
    "budget spent at training step 1200: 0.5556 kWh (0.03113 kg CO2e) against a budget of 0.5 kWh; ..."
    >>> budget.stop_requested
    True

The tighter of ``kwh`` and ``kg_co2e`` applies (carbon through the grid intensity and PUE). Each
check speaks at most once: the first time the forecast's low end is over the budget (with how many
steps would fit), and the first time the measured energy is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .carbon import J_PER_KWH, GridIntensity
from .forecast import Forecast


@dataclass
class Budget:
    kwh: float | None
    kg_co2e: float | None
    on_budget: str
    grid: GridIntensity
    stop_requested: bool = False
    exceeded: bool = False
    forecast_over: bool = False
    stopped_at_step: int | None = None
    on_stop: Callable[[], None] | None = None  # told once, when stop_requested becomes True
    _limit_j: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        limits = []
        if self.kwh is not None:
            limits.append(self.kwh * J_PER_KWH)
        kg_per_j = self.grid.kg_for_j(1.0)
        if self.kg_co2e is not None and kg_per_j > 0:
            limits.append(self.kg_co2e / kg_per_j)
        self._limit_j = min(limits) if limits else None

    @property
    def active(self) -> bool:
        return self._limit_j is not None

    def check_measured(self, energy_j: float, step: int) -> str | None:
        """After a window: the first time ``energy_j`` reaches the budget, what to tell the user
        (and, with ``on_budget="stop"``, ``stop_requested`` becomes True)."""
        if self._limit_j is None or self.exceeded or energy_j < self._limit_j:
            return None
        self.exceeded = True
        if self.on_budget == "stop":
            self.stop_requested = True
            self.stopped_at_step = step
            if self.on_stop is not None:
                self.on_stop()
            return f"budget spent at training step {step}: {self._describe(energy_j)}; training stopped (on_budget='stop')"
        return f"budget exceeded at training step {step}: {self._describe(energy_j)} (on_budget='warn')"

    def check_forecast(
        self, forecast: Forecast, energy_so_far_j: float, advice: Callable[[], Sequence[Any]] | None = None,
        framework: str | None = None,
    ) -> str | None:
        """The first time even the forecast's low end is over the budget: the warning, with how many
        of the planned steps the budget covers at the current rate and, when ``advice()`` (asked only
        then) has a recommendation whose estimated saving would bring the low end under the budget,
        that change (in ``framework``'s terms)."""
        remaining = forecast.planned_steps - forecast.at_step
        if self._limit_j is None or self.forecast_over or remaining <= 0 or forecast.energy_low_j <= self._limit_j:
            return None
        self.forecast_over = True
        per_step_j = (forecast.energy_j - energy_so_far_j) / remaining
        fits = ""
        if per_step_j > 0:
            steps_that_fit = forecast.at_step + max(0.0, (self._limit_j - energy_so_far_j) / per_step_j)
            fits = f"; at the current rate the budget covers about {round(steps_that_fit)} of the {forecast.planned_steps} planned steps"
        fitting = next((r for r in (advice() if advice else ()) if self._would_fit(r, forecast.energy_low_j)), None)
        if fitting is not None:
            fits += (f"; this change would fit it by its estimate ({fitting.saving_pct:.0f}% saved, "
                     f"{fitting.confidence} confidence): {fitting.change_for(framework)}")
        return (
            f"forecast over budget at step {forecast.at_step}: even the low end of the forecast, "
            f"{self._describe(forecast.energy_low_j)}{fits}"
        )

    def _would_fit(self, recommendation: Any, energy_j: float) -> bool:
        """Whether ``energy_j`` less the recommendation's saving is within every budget: an energy
        saving lowers both energy and carbon; a carbon-only one (another grid) lowers carbon only."""
        share = recommendation.saving_pct / 100.0
        if recommendation.saving_j > 0:
            energy_after_j, kg_after = energy_j * (1 - share), self.grid.kg_for_j(energy_j) * (1 - share)
        else:
            energy_after_j, kg_after = energy_j, self.grid.kg_for_j(energy_j) * (1 - share)
        return (self.kwh is None or energy_after_j <= self.kwh * J_PER_KWH) and (
            self.kg_co2e is None or kg_after <= self.kg_co2e
        )

    def to_dict(self) -> dict[str, Any]:
        if not self.active:
            return {}
        return {
            "budget_kwh": self.kwh, "budget_kg_co2e": self.kg_co2e, "on_budget": self.on_budget,
            "exceeded": self.exceeded, "stopped_at_step": self.stopped_at_step, "forecast_over": self.forecast_over,
        }

    def _describe(self, energy_j: float) -> str:
        budgets = [f"{v:g} {unit}" for v, unit in ((self.kwh, "kWh"), (self.kg_co2e, "kg CO2e")) if v is not None]
        return (f"{energy_j / J_PER_KWH:.4g} kWh ({self.grid.kg_for_j(energy_j):.4g} kg CO2e) "
                f"against a budget of {' and '.join(budgets)}")
