"""Forecast a run's total energy and time from its first windows, with an honest interval.

Example::

    >>> from wattwise.forecast import Forecaster
    >>> f = Forecaster(planned_steps=1000)
    >>> for _ in range(40):
    ...     f.add_window(steps=5, energy_j=50.0, duration_s=0.5)      # steady: 10 J and 0.1 s per step
    >>> forecast = f.forecast()
    >>> round(forecast.energy_j), round(forecast.duration_s)
    (10000, 100)

What makes naive extrapolation ("first epoch x epochs") wrong, and what is done about it:

- warm-up (compilation, autotuning, cold caches): the first windows are dropped while their energy
  per step stands out above the steady level, up to a third of the steps seen;
- evaluation: passes are projected separately, at the observed cadence (or ``eval_every_steps``);
- noise and drift: the steady windows are cut into contiguous blocks; the spread of the block
  rates sets the interval, so it widens when steps vary (sequence lengths, data loading) or drift.

Everything already measured is exact; only the remainder is projected.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

MAX_WINDOWS = 1024  # bounded memory: older windows are merged in pairs past this
WARMUP_FACTOR = 1.25
MAX_WARMUP_SHARE = 1.0 / 3.0
MIN_STEADY_WINDOWS = 4
BLOCKS = 8


@dataclass(frozen=True)
class Forecast:
    """Projected totals of the planned run, with a central value and an interval."""

    at_step: int
    planned_steps: int
    energy_j: float
    energy_low_j: float
    energy_high_j: float
    duration_s: float
    duration_low_s: float
    duration_high_s: float
    warmup_steps: int
    eval_passes_expected: int
    confidence: float = 0.9


@dataclass
class _Window:
    steps: int
    energy_j: float
    duration_s: float


class Forecaster:
    """Collects training windows and evaluation passes; ``forecast()`` projects the planned run."""

    def __init__(
        self, planned_steps: int | None, *, eval_every_steps: int | None = None, confidence: float = 0.9
    ) -> None:
        if planned_steps is not None and planned_steps <= 0:
            raise ValueError(f"planned_steps must be > 0, got {planned_steps!r}")
        self.planned_steps = planned_steps  # None: unknown yet, no forecast
        self.eval_every_steps = eval_every_steps
        self.z = _z_for(confidence)
        self.confidence = confidence
        self._windows: list[_Window] = []
        self._steps = 0
        self._energy_j = 0.0
        self._duration_s = 0.0
        self._eval_passes: list[tuple[int, float, float]] = []  # (train step, joules, seconds)

    def add_window(self, steps: int, energy_j: float, duration_s: float) -> None:
        """A closed training window: its steps, joules and seconds (windows without steps too)."""
        self._steps += steps
        self._energy_j += energy_j
        self._duration_s += duration_s
        if self._windows and (steps == 0 or self._windows[-1].steps == 0):
            last = self._windows[-1]  # a step-less window belongs to its neighbour's steps
            last.steps += steps
            last.energy_j += energy_j
            last.duration_s += duration_s
            return
        self._windows.append(_Window(steps, energy_j, duration_s))
        if len(self._windows) > MAX_WINDOWS:
            merged = [
                _Window(a.steps + b.steps, a.energy_j + b.energy_j, a.duration_s + b.duration_s)
                for a, b in zip(self._windows[0::2], self._windows[1::2], strict=False)
            ]
            if len(self._windows) % 2:
                merged.append(self._windows[-1])
            self._windows = merged

    def add_eval_pass(self, energy_j: float, duration_s: float) -> None:
        """An evaluation pass that ran after the training steps seen so far."""
        self._eval_passes.append((self._steps, energy_j, duration_s))

    def forecast(self, energy_so_far_j: float | None = None, duration_so_far_s: float | None = None) -> Forecast | None:
        """The projection, or None without a plan or while there are too few steady windows.

        ``energy_so_far_j`` and ``duration_so_far_s`` are the run's measured totals when the caller
        knows them better (a session counts set-up and time between phases too); by default, the
        windows and passes given to this forecaster.
        """
        if not self.planned_steps:
            return None
        warmup = self._warmup_windows()
        steady = self._windows[warmup:]
        if len(steady) < MIN_STEADY_WINDOWS or sum(w.steps for w in steady) == 0:
            return None
        warmup_steps = sum(w.steps for w in self._windows[:warmup])
        remaining = max(self.planned_steps - self._steps, 0)
        energy_rate, energy_sd = _rate_and_sd(steady, "energy_j")
        time_rate, time_sd = _rate_and_sd(steady, "duration_s")
        passes = self._future_eval_passes(remaining)
        eval_j, eval_j_sd, eval_s, eval_s_sd = self._eval_costs()
        energy_so_far = energy_so_far_j
        if energy_so_far is None:
            energy_so_far = self._energy_j + sum(j for _, j, _ in self._eval_passes)
        duration_so_far = duration_so_far_s
        if duration_so_far is None:
            duration_so_far = self._duration_s + sum(s for _, _, s in self._eval_passes)
        energy = self._projection(energy_so_far, remaining, energy_rate, energy_sd, passes, eval_j, eval_j_sd, steady)
        duration = self._projection(duration_so_far, remaining, time_rate, time_sd, passes, eval_s, eval_s_sd, steady)
        return Forecast(
            at_step=self._steps, planned_steps=self.planned_steps,
            energy_j=energy[0], energy_low_j=energy[1], energy_high_j=energy[2],
            duration_s=duration[0], duration_low_s=duration[1], duration_high_s=duration[2],
            warmup_steps=warmup_steps, eval_passes_expected=passes, confidence=self.confidence,
        )

    # ---- internals -------------------------------------------------------------------------------

    def _warmup_windows(self) -> int:
        """Leading windows whose joules per step stand out above the steady level (the median of the
        later half), never more than a third of the steps seen."""
        windows = [w for w in self._windows if w.steps]
        if len(windows) < 2 * MIN_STEADY_WINDOWS:
            return 1 if self._windows else 0  # too few to judge: drop the start-up window only
        later = windows[len(windows) // 2 :]
        steady_rate = statistics.median(w.energy_j / w.steps for w in later)
        budget = MAX_WARMUP_SHARE * self._steps
        dropped, dropped_steps = 0, 0
        for window in self._windows:
            per_step = window.energy_j / window.steps if window.steps else math.inf
            if per_step <= WARMUP_FACTOR * steady_rate or dropped_steps + window.steps > budget:
                break
            dropped += 1
            dropped_steps += window.steps
        return max(dropped, 1)  # the first window always holds start-up work

    def _future_eval_passes(self, remaining_steps: int) -> int:
        if self.eval_every_steps:
            end = self._steps + remaining_steps
            return end // self.eval_every_steps - self._steps // self.eval_every_steps
        if not self._eval_passes or remaining_steps == 0:
            return 0
        positions = [step for step, _, _ in self._eval_passes]
        gaps = [b - a for a, b in zip([0, *positions[:-1]], positions, strict=True) if b > a]
        if not gaps:
            return 0
        every = statistics.median(gaps)
        return int((self._steps + remaining_steps) // every - self._steps // every)

    def _eval_costs(self) -> tuple[float, float, float, float]:
        if not self._eval_passes:
            return 0.0, 0.0, 0.0, 0.0
        joules = [j for _, j, _ in self._eval_passes]
        seconds = [s for _, _, s in self._eval_passes]
        sd_j = statistics.stdev(joules) if len(joules) > 1 else 0.25 * joules[0]
        sd_s = statistics.stdev(seconds) if len(seconds) > 1 else 0.25 * seconds[0]
        return statistics.fmean(joules), sd_j, statistics.fmean(seconds), sd_s

    def _projection(self, so_far, remaining, rate, rate_sd, passes, per_pass, per_pass_sd, steady):
        central = so_far + rate * remaining + per_pass * passes
        # uncertainty of the steady rate itself (block spread / sqrt(blocks)) scales with all the
        # remaining steps; block-to-block variation averages out over the remaining blocks
        blocks = min(BLOCKS, len(steady))
        steps_per_block = max(sum(w.steps for w in steady) / blocks, 1.0)
        variance = (remaining * rate_sd) ** 2 / blocks + remaining * steps_per_block * rate_sd**2
        variance += passes * per_pass_sd**2 + (passes * per_pass_sd) ** 2 / max(len(self._eval_passes), 1)
        half_width = self.z * math.sqrt(variance)
        return central, max(so_far, central - half_width), central + half_width


def _rate_and_sd(windows: list[_Window], field: str) -> tuple[float, float]:
    """Mean per step, and the spread of per-step rates between contiguous blocks of windows."""
    total_steps = sum(w.steps for w in windows)
    rate = sum(getattr(w, field) for w in windows) / total_steps
    blocks = min(BLOCKS, len(windows))
    size = len(windows) / blocks
    block_rates = []
    for b in range(blocks):
        chunk = windows[round(b * size) : round((b + 1) * size)]
        steps = sum(w.steps for w in chunk)
        if steps:
            block_rates.append(sum(getattr(w, field) for w in chunk) / steps)
    sd = statistics.stdev(block_rates) if len(block_rates) > 1 else 0.0
    return rate, sd


def _z_for(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence!r}")
    return statistics.NormalDist().inv_cdf(0.5 + confidence / 2.0)
