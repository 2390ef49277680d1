"""What a run says about itself as it goes: the logged metrics, the totals, the forecast.

Example::

    >>> run.metrics()              # {"energy/step_j": ..., "energy/power_w": ..., "energy/total_kwh": ..., ...}
    >>> run.pass_metrics("eval")   # {"energy/eval_j": ..., "energy/total_kwh": ..., "carbon/total_kg": ...}

``Figures`` is the part of ``Run`` (``run.py``) that reads: it changes nothing but the marks of
the logged intervals, the latest forecast and, through the budget, the notes.
"""

from __future__ import annotations

import logging

from .assemble import recommend
from .carbon import J_PER_KWH
from .forecast import Forecast
from .ledger import Counts
from .projection import forecast_metrics

STEP_J = "energy/step_j"
POWER_W = "energy/power_w"
TOTAL_KWH = "energy/total_kwh"
CARBON_KG = "carbon/total_kg"
EVAL_J = "energy/eval_j"
TEST_J = "energy/test_j"
PREDICT_J = "energy/predict_j"
PASS_KEYS = {"eval": EVAL_J, "test": TEST_J, "predict": PREDICT_J}  # joules of the pass that just ended
SAMPLE_J = "energy/sample_j"  # joules per training sample since the previous log
TOKENS_PER_J = "energy/tokens_per_j"  # training tokens per joule since the previous log
PASS_SAMPLE_KEYS = {"eval": "energy/eval_sample_j", "test": "energy/test_sample_j", "predict": "energy/predict_sample_j"}
UNMEASURED_EVAL_NOTE = (
    "evaluation passes are scheduled but none has run yet: forecasts leave them out (and their interval "
    "covers the training steps only) until the first one is measured"
)


class Figures:
    """The metrics of a ``Run`` (its ``ledger``, ``ranks``, ``grid``, ``projection``, ``budget``)."""

    @property
    def last_pass_j(self) -> float:
        """Joules of the pass that ended last; over all ranks once a ``sync`` has followed its end."""
        return self.ranks.last_pass_j(self.ledger) if self.ledger is not None else 0.0

    def metrics(self, interval: str = "log", *, read: bool = True) -> dict[str, float]:
        """The logged keys for the interval since the previous call with the same ``interval`` name
        (integrations that log at two levels keep two: Keras's ``"batch"`` and ``"epoch"``).
        ``read=False`` skips reading the counters, for a caller whose ``step()`` or ``sync()`` just did."""
        if self.ledger is None:
            return {}
        if read and not self.finished:
            self.ledger.close_window()
        counts = self.ranks.counts(self.ledger)
        mark = self._marks.get(interval, Counts(self.ledger.first.timestamp_s, 0.0, 0, 0.0))
        metrics: dict[str, float] = {}
        train_j = counts.train_j - mark.train_j
        if counts.train_steps > mark.train_steps:
            metrics[STEP_J] = train_j / (counts.train_steps - mark.train_steps)
        if counts.train_samples > mark.train_samples and counts.train_steps > mark.train_steps:
            metrics[SAMPLE_J] = train_j / (counts.train_samples - mark.train_samples)
        if counts.train_tokens > mark.train_tokens and train_j > 0:
            metrics[TOKENS_PER_J] = (counts.train_tokens - mark.train_tokens) / train_j
        if counts.timestamp_s > mark.timestamp_s:
            metrics[POWER_W] = (counts.total_j - mark.total_j) / (counts.timestamp_s - mark.timestamp_s)
        metrics.update(self.totals())
        metrics.update(forecast_metrics(self.forecast(), self.grid))
        self._marks[interval] = counts
        return metrics

    def pass_metrics(self, phase: str, *, totals: bool = True) -> dict[str, float]:
        """``energy/<phase>_j`` of the pass just ended (``energy/<phase>_sample_j`` when its samples were
        counted) and, with ``totals``, the run's totals."""
        metrics = {PASS_KEYS[phase]: self.last_pass_j}
        if self.ledger is not None and self.ledger.last_pass_samples:  # this rank's joules per its samples
            metrics[PASS_SAMPLE_KEYS[phase]] = self.ledger.last_pass_j / self.ledger.last_pass_samples
        if totals:
            metrics.update(self.totals())
        return metrics

    def totals(self) -> dict[str, float]:
        """Cumulative energy and carbon as of the last reading (across ranks: the last sync)."""
        if self.ledger is None:
            return {}
        total_j = self.ranks.counts(self.ledger).total_j
        return {TOTAL_KWH: total_j / J_PER_KWH, CARBON_KG: self.grid.kg_for_j(total_j)}

    def forecast(self) -> Forecast | None:
        """The projection of the planned run from every window closed so far (once per reading)."""
        if self.ledger is None:
            return None
        forecast, fresh = self.projection.current(reading_s=self.ledger.last.timestamp_s, project=self._project)
        if fresh and forecast is not None and (warning := self.budget.check_forecast(
            forecast, self.ranks.counts(self.ledger).total_j, advice=self._advice_so_far, framework=self.framework,
        )):
            self.note(warning)
        return forecast

    def _project(self) -> Forecast | None:
        """The forecaster's projection from what was measured so far (across ranks, scaled to the totals)."""
        forecast = self.ranks.scale(self.projection.forecaster.forecast(*self.ledger.so_far()))
        if forecast is not None and forecast.eval_passes_unmeasured:
            self.note(UNMEASURED_EVAL_NOTE, level=logging.INFO)
        return forecast

    def _advice_so_far(self) -> list:
        """The advisor's recommendations on the run so far (for a budget warning)."""
        by_phase = {name: p for name, p in self.ledger.phases.items() if p.energy_j or p.steps}
        return recommend(self, self.ledger.so_far()[0], by_phase, self.ledger.components())
