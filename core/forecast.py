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

- warm-up (compilation, autotuning, cold caches): the first window is always dropped, and so are the
  leading windows whose energy per step stands out above the level of the later half of the steps
  seen (a step-weighted median, so it can be judged from a handful of windows); no forecast is
  given until four steady windows follow the warm-up, nor while the cost per step is still falling
  (the recent half of the steady steps more than ``SETTLING_DROP`` cheaper than the earlier half, on
  average and by the halves' medians, which spikes do not move, or the last quarter clearly cheaper
  than the one before: a warm-up spread over many windows, whose level is not known yet) until the
  run has shown its level (a window closed at ``LEVEL_SHOWN_AT``
  of the plan or later with the cost not falling); after that the warm-up found then stays what is
  dropped, and a fall is the level wandering, projected like any drift;
- evaluation: passes are projected separately, at the observed cadence (or ``eval_every_steps``),
  each at the mean cost of the passes measured; scheduled passes with none measured yet are counted
  in ``eval_passes_unmeasured`` and left out of the forecast (their cost is unknown until the first);
- drift: the remainder is projected at the rate of the *recent* half of the steady steps, and the
  difference between the recent and the earlier half widens the interval;
- variable sequence lengths: when the framework counts each step's tokens, the cost per token is
  taken from the recent half and the tokens per step from all the steady steps (batches vary at
  random, so more of them estimate the next ones better); warm-up is judged per token;
- noise: the steady windows are cut into contiguous blocks; the spread of the block rates (with a
  Student t factor, since it is estimated from a few blocks) sets the interval: the remainder's
  level may sit anywhere the blocks' levels sat (a level wanders in spells, so the blocks are not
  independent draws whose mean would narrow with their number). The interval never
  narrows below a floor: ``MIN_REL_HALF_WIDTH`` of the projected remainder when as many steps are
  left as were seen, growing with the square root of remaining / seen steps before that (a level
  that moves for reasons no early window shows can move further the further one projects);
- the end of the run (teardown after the last step): projected as one more transition out of
  training, at the mean cost of the step-less gaps seen so far (the largest one sets its range).

Everything already measured is exact; only the remainder is projected. ``Milestones`` keeps the
forecast made when training first reached 1, 2, 5, 10, 25 and 50% of the plan.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_WINDOWS = 1024  # bounded memory: older windows are merged in pairs past this
WARMUP_FACTOR = 1.25  # a leading window above 1.25 x the steady level per step is warm-up
MAX_WARMUP_SHARE = 0.5  # never more than the earlier half of the steps seen (the later half is the reference)
MIN_STEADY_WINDOWS = 4
# While the cost per step is still falling this fast (the recent half of the steady steps this much
# cheaper than the earlier half), the run has not shown the level it will settle at: a warm-up
# spread over many windows (a data cache filling, autotuning) is still going, and no forecast is made.
SETTLING_DROP = 0.2
# Once a window closes with at least this share of the plan seen and the cost per step is not
# falling, the run has shown its level: later falls (a neighbour leaving a shared machine, the end of
# a slow spell) are the level wandering, projected with the drift widening the interval, not a
# warm-up to wait out. Warm-ups (compilation, autotuning, caches filling) are over long before.
LEVEL_SHOWN_AT = 0.05
BLOCKS = 8
# The interval never claims to know the remainder better than +-5% (at the chosen confidence) when
# as many steps are left as were seen: what no early window can show (clock and thermal changes,
# other work on a shared machine, data that gets harder later) moves the steady rate by a few
# percent on a real machine. Earlier in the run the floor is 5% x sqrt(remaining / seen steps): a
# level that wanders moves further over a longer horizon (random-walk scaling, in units of the
# steps seen, since the wander's own scale cannot be measured from the start of a run).
MIN_REL_HALF_WIDTH = 0.05
MILESTONE_FRACTIONS = (0.01, 0.02, 0.05, 0.10, 0.25, 0.50)


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
    tail_j: float = 0.0  # projected energy after the last step (teardown), inside energy_j
    # evaluation passes the schedule says are coming whose cost is unknown (none measured yet): they
    # are not in energy_j nor in its interval, which then only covers the training steps
    eval_passes_unmeasured: int = 0


@dataclass
class _Window:
    steps: int
    energy_j: float
    duration_s: float
    work: float | None = None  # tokens (or samples) the steps processed, when the framework counts them


def _sum_work(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


def _counts_work(windows: list[_Window]) -> bool:
    """True when every window with steps knows the (positive) work of its steps: costs can then be
    taken per token rather than per step."""
    with_steps = [w for w in windows if w.steps]
    return bool(with_steps) and all(w.work for w in with_steps)


@dataclass
class _Part:
    """One projected quantity (energy or time): its rate, spread, drift and tail."""

    so_far: float
    rate: float  # per step, recent half of the steady steps
    block_sd: float  # spread of per-step rates between blocks
    drift: float  # recent-half rate minus earlier-half rate
    per_pass: float
    per_pass_sd: float
    tail: float
    tail_sd: float


class Forecaster:
    """Collects training windows and evaluation passes; ``forecast()`` projects the planned run."""

    def __init__(
        self, planned_steps: int | None, *, eval_every_steps: int | None = None, confidence: float = 0.9,
        level_shown_at: float | None = LEVEL_SHOWN_AT,
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
        # step-less gaps after the first step (logs, epoch ends, saves): count, sums and largest
        self._gaps = 0
        self._gap_j = self._gap_s = 0.0
        self._gap_max_j = self._gap_max_s = 0.0
        # whether the run has shown its level: at a window with ``level_shown_at`` of the plan seen
        # or more, the cost per step was not falling (from then on, a fall is projected, not
        # withheld); None: never (a probe, whose plan is its own few steps, all of them warm-up)
        self.level_shown_at = level_shown_at
        self._level_shown = False
        self._warmup_steps = 0  # the warm-up's steps, fixed once the level is shown

    def add_window(self, steps: int, energy_j: float, duration_s: float, work: float | None = None) -> None:
        """A closed training window: its steps, joules and seconds (windows without steps too) and,
        when the framework counts them, the tokens (or samples) its steps processed."""
        if steps == 0:
            work = 0.0
        self._steps += steps
        self._energy_j += energy_j
        self._duration_s += duration_s
        if steps == 0 and self._steps > 0:  # a transition out of stepping: the end of the run is one
            self._gaps += 1
            self._gap_j += energy_j
            self._gap_s += duration_s
            self._gap_max_j = max(self._gap_max_j, energy_j)
            self._gap_max_s = max(self._gap_max_s, duration_s)
        if self._windows and (steps == 0 or self._windows[-1].steps == 0):
            last = self._windows[-1]  # a step-less window belongs to its neighbour's steps
            last.steps += steps
            last.energy_j += energy_j
            last.duration_s += duration_s
            last.work = _sum_work(last.work, work)
        else:
            self._append(_Window(steps, energy_j, duration_s, work))
        if (not self._level_shown and self.planned_steps and self.level_shown_at is not None
                and self._steps >= self.level_shown_at * self.planned_steps):
            found = self._steady()  # judged once per window until it is
            if found is not None:
                self._level_shown = True
                self._warmup_steps = self._steps - found[1].total_steps  # the warm-up, known from now on

    def _append(self, window: _Window) -> None:
        self._windows.append(window)
        if len(self._windows) > MAX_WINDOWS:
            merged = [
                _Window(a.steps + b.steps, a.energy_j + b.energy_j, a.duration_s + b.duration_s,
                        _sum_work(a.work, b.work))
                for a, b in zip(self._windows[0::2], self._windows[1::2], strict=False)
            ]
            if len(self._windows) % 2:
                merged.append(self._windows[-1])
            self._windows = merged

    def add_eval_pass(self, energy_j: float, duration_s: float) -> None:
        """An evaluation pass that ran after the training steps seen so far."""
        self._eval_passes.append((self._steps, energy_j, duration_s))

    def forecast(self, energy_so_far_j: float | None = None, duration_so_far_s: float | None = None) -> Forecast | None:
        """The projection, or None without a plan, during warm-up, or with too few steady windows.

        ``energy_so_far_j`` and ``duration_so_far_s`` are the run's measured totals when the caller
        knows them better (a run counts set-up and time between phases too); by default, the
        windows and passes given to this forecaster.
        """
        if not self.planned_steps:
            return None
        found = self._steady()
        if found is None:
            return None
        steady, layout, energy_rates = found
        warmup_steps = self._steps - layout.total_steps  # the windows hold every step seen
        remaining = max(self.planned_steps - self._steps, 0)
        passes = self._future_eval_passes(remaining)
        eval_j, eval_j_sd, eval_s, eval_s_sd = self._eval_costs()
        energy_so_far = energy_so_far_j
        if energy_so_far is None:
            energy_so_far = self._energy_j + sum(j for _, j, _ in self._eval_passes)
        duration_so_far = duration_so_far_s
        if duration_so_far is None:
            duration_so_far = self._duration_s + sum(s for _, _, s in self._eval_passes)
        tail = remaining > 0 and self._gaps > 0
        energy = _Part(energy_so_far, *energy_rates, eval_j, eval_j_sd,
                       self._gap_j / self._gaps if tail else 0.0, self._gap_max_j if tail else 0.0)
        duration = _Part(duration_so_far, *_rates([w.duration_s for w in steady], layout), eval_s, eval_s_sd,
                         self._gap_s / self._gaps if tail else 0.0, self._gap_max_s if tail else 0.0)
        blocks = len(layout.blocks)
        steps_per_block = max(layout.total_steps / blocks, 1.0)
        t = _t_quantile(self.confidence, blocks - 1)
        e = self._projection(energy, remaining, passes, steps_per_block, t)
        d = self._projection(duration, remaining, passes, steps_per_block, t)
        return Forecast(
            at_step=self._steps, planned_steps=self.planned_steps,
            energy_j=e[0], energy_low_j=e[1], energy_high_j=e[2],
            duration_s=d[0], duration_low_s=d[1], duration_high_s=d[2],
            warmup_steps=warmup_steps, eval_passes_expected=passes, confidence=self.confidence,
            tail_j=energy.tail, eval_passes_unmeasured=0 if self._eval_passes else passes,
        )

    # ---- internals -------------------------------------------------------------------------------

    def _steady(self) -> tuple[list[_Window], _Layout, tuple[float, float, float]] | None:
        """The steady windows, their layout and their energy rates (``_rates``), or None while the
        level is not known: a warm-up still in the later half of the steps seen, fewer than
        ``MIN_STEADY_WINDOWS`` after it, or, until the run has shown its level, a cost per step
        that is still falling (``_halves_falling``, ``_falling_trend``)."""
        warmup, capped = self._warmup_windows()
        if capped:  # warm-up still in the later half of the steps seen: the level is not known yet
            return None
        steady = self._windows[warmup:]
        if len(steady) < MIN_STEADY_WINDOWS:
            return None
        layout = _Layout.of(steady)
        if layout.total_steps == 0:
            return None
        rates = _rates([w.energy_j for w in steady], layout)
        if not self._level_shown and (_halves_falling(steady, layout, rates) or _falling_trend(steady, layout.per_work)):
            return None
        return steady, layout, rates

    def _warmup_windows(self) -> tuple[int, bool]:
        """Leading windows whose joules per step (per token, when known) stand out above the steady
        level, never more than the earlier half of the steps seen; always at least the first
        (start-up) window. And whether that half was not enough (the warm-up goes on past it).

        The steady level is the step-weighted median of the joules per step over the windows of the
        later half of the steps seen: warm-up windows are few-step windows (slow steps), so weighting
        by steps lets a handful of windows be judged. Once the run has shown its level, the warm-up
        is the one found then (the windows holding its steps), whatever the later windows cost.
        """
        if not self._windows:
            return 0, False
        if self._level_shown:  # the warm-up was over then: what it dropped stays dropped, nothing more
            seen, count = 0, 0
            for window in self._windows:
                if seen >= self._warmup_steps:
                    break
                seen += window.steps
                count += 1
            return max(count, 1), False
        windows = [w for w in self._windows if w.steps]
        if len(windows) < 2:
            return 1, False
        half, seen, later = self._steps / 2.0, 0, []
        for window in windows:
            seen += window.steps
            if seen > half:
                later.append(window)
        # with tokens known, a window of long sequences is dear for its tokens, not warm-up
        per_work = _counts_work(windows)

        def unit_cost(w: _Window) -> float:
            return w.energy_j / (w.work if per_work else w.steps) if w.steps else math.inf

        steady_rate = _weighted_median([(unit_cost(w), w.steps) for w in later])
        budget = MAX_WARMUP_SHARE * self._steps
        dropped, dropped_steps = 0, 0
        for window in self._windows:
            if unit_cost(window) <= WARMUP_FACTOR * steady_rate:
                break
            if dropped_steps + window.steps > budget:
                return max(dropped, 1), True
            dropped += 1
            dropped_steps += window.steps
        return max(dropped, 1), False  # the first window always holds start-up work

    def _future_eval_passes(self, remaining_steps: int) -> int:
        if self.eval_every_steps:
            return self._passes_after(self.eval_every_steps, remaining_steps)
        if not self._eval_passes or remaining_steps == 0:
            return 0
        positions = [step for step, _, _ in self._eval_passes]
        gaps = [b - a for a, b in zip([0, *positions[:-1]], positions, strict=True) if b > a]
        if not gaps:
            return 0
        return self._passes_after(statistics.median(gaps), remaining_steps)

    def _passes_after(self, every: float, remaining_steps: int) -> int:
        """Passes still to run at a cadence of ``every`` steps: those due by the end of the plan less
        those run. A pass due at the step just made may not have run yet (a forecast taken at the end
        of that step comes before it), so the passes seen decide, within what the steps allow."""
        due = int((self._steps + remaining_steps) // every)
        done = min(max(len(self._eval_passes), int(max(self._steps - 1, 0) // every)), int(self._steps // every))
        return max(due - done, 0)

    def _eval_costs(self) -> tuple[float, float, float, float]:
        if not self._eval_passes:
            return 0.0, 0.0, 0.0, 0.0
        joules = [j for _, j, _ in self._eval_passes]
        seconds = [s for _, _, s in self._eval_passes]
        sd_j = _stdev(joules) if len(joules) > 1 else 0.25 * joules[0]
        sd_s = _stdev(seconds) if len(seconds) > 1 else 0.25 * seconds[0]
        return statistics.fmean(joules), sd_j, statistics.fmean(seconds), sd_s

    def _projection(self, part: _Part, remaining: int, passes: int, steps_per_block: float,
                    t: float) -> tuple[float, float, float]:
        """Central value and interval of ``so_far + remaining steps + eval passes + tail``."""
        train = part.rate * remaining
        central = part.so_far + train + part.per_pass * passes + part.tail
        # the level the remainder runs at may sit anywhere the blocks' levels have sat (a level
        # wanders: on a shared machine it moves by spells longer than a block, so the blocks are not
        # independent draws whose mean narrows as sqrt(blocks)), over all the remaining steps; the
        # block-to-block variation around it averages out over the remainder; the drift seen between
        # the halves may go on (or turn) for the rest of the run
        variance = (remaining * part.block_sd) ** 2
        variance += remaining * steps_per_block * part.block_sd**2
        variance += (remaining * part.drift) ** 2
        variance += passes * part.per_pass_sd**2 + (passes * part.per_pass_sd) ** 2 / max(len(self._eval_passes), 1)
        variance += part.tail_sd**2
        floor = min_rel_half_width(self._steps, remaining) * (central - part.so_far)
        half_width = max(t * math.sqrt(variance), floor)
        return central, max(part.so_far, central - half_width), central + half_width


def min_rel_half_width(seen_steps: int, remaining_steps: int) -> float:
    """The interval's floor, as a share of the projected remainder: ``MIN_REL_HALF_WIDTH`` once at
    least as many steps were seen as remain, x sqrt(remaining / seen) before (x3 at 10% of the plan)."""
    if remaining_steps <= 0:
        return MIN_REL_HALF_WIDTH
    return MIN_REL_HALF_WIDTH * max(1.0, math.sqrt(remaining_steps / max(seen_steps, 1)))


@dataclass(frozen=True)
class _Layout:
    """What the rates of energy and of time share: the steady windows' steps and work, whether
    costs are taken per unit of work, the split between the earlier and the recent half of the
    steps, and the contiguous blocks of windows (index ranges) with their steps."""

    steps: list[int]
    works: list[float]
    total_steps: int
    total_work: float
    per_work: bool
    split: int  # windows[:split] are the earlier half: a window goes to the half that holds its middle step
    blocks: list[tuple[int, int, int]]  # (first, end, steps) of each block of windows

    @classmethod
    def of(cls, windows: list[_Window]) -> _Layout:
        steps = [w.steps for w in windows]  # plain lists: summed in C, not per attribute
        works = [w.work or 0.0 for w in windows]
        total_steps = sum(steps)
        seen, split = 0, len(windows)
        for i, n in enumerate(steps):
            if seen + n / 2.0 >= total_steps / 2.0:
                split = i
                break
            seen += n
        count = min(BLOCKS, len(windows))
        size = len(windows) / count
        bounds = [(round(b * size), round((b + 1) * size)) for b in range(count)]
        blocks = [(lo, hi, sum(steps[lo:hi])) for lo, hi in bounds]
        return cls(steps, works, total_steps, sum(works), _counts_work(windows), split, blocks)


def _rates(costs: list[float], layout: _Layout) -> tuple[float, float, float]:
    """Per-step rate of the recent half of the steps, the spread of per-step rates between
    contiguous blocks of windows, and the recent-half rate minus the earlier-half rate, of the
    windows' ``costs`` (joules or seconds).

    When every window knows the work its steps did (tokens), cost and work are kept apart: the
    cost per unit of work comes from the recent half (it may drift, and the drift is its change),
    the work per step from all the steady steps (it varies at random from batch to batch, e.g. with
    sequence lengths, so the more steps the better), and the rate is their product. The spread is
    always that of the blocks' cost per step, which is what the remainder averages over.
    """
    steps, works, split, per_work = layout.steps, layout.works, layout.split, layout.per_work
    work_per_step = layout.total_work / layout.total_steps if per_work else 1.0

    def rate(cost: float, n: int, work: float) -> float:
        return cost / work * work_per_step if per_work else cost / n

    early = [sum(costs[:split]), sum(steps[:split]), sum(works[:split])]
    late = [sum(costs[split:]), sum(steps[split:]), sum(works[split:])]
    # a half with steps has work too when per_work (every window with steps has some)
    recent = rate(*late) if late[1] else rate(sum(costs), layout.total_steps, layout.total_work)
    drift = recent - rate(*early) if early[1] and late[1] else 0.0
    # per step, tokens or not: their spread is what the remainder averages over
    block_rates = [sum(costs[lo:hi]) / n for lo, hi, n in layout.blocks if n]
    sd = _stdev(block_rates) if len(block_rates) > 1 else 0.0
    return recent, sd, drift


def _stdev(values: list[float]) -> float:
    """The sample standard deviation in floats (``statistics.stdev`` is exact, in fractions, and
    costs most of a forecast for a handful of values)."""
    mean = math.fsum(values) / len(values)
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _halves_falling(windows: list[_Window], layout: _Layout, rates: tuple[float, float, float]) -> bool:
    """Whether the recent half of the steady steps costs more than ``SETTLING_DROP`` less than the
    earlier half both on average (``rates``: ``_rates`` of the windows' joules, whose drift is the
    halves' difference) and by the halves' step-weighted medians of their windows' cost per step (per
    token, when counted). A warm-up spread over many windows lowers the whole later half, both; a
    few spikes (another process taking the CPU for a moment) move a half's mean, not its median, and
    with a handful of windows the median of plain noise moves more than the mean."""
    recent, _, drift = rates
    earlier = recent - drift
    if not (earlier > 0 and -drift > SETTLING_DROP * earlier):
        return False
    halves: tuple[list[tuple[float, float]], list[tuple[float, float]]] = ([], [])
    for index, w in enumerate(windows):
        weight = (w.work if layout.per_work else w.steps) or 0.0
        if w.steps and weight > 0:
            halves[index >= layout.split].append((w.energy_j / weight, w.steps))
    if not halves[0] or not halves[1]:
        return False
    earlier_median = _weighted_median(halves[0])
    return earlier_median - _weighted_median(halves[1]) > SETTLING_DROP * earlier_median


def _falling_trend(windows: list[_Window], per_work: bool) -> bool:
    """Whether the cost per step (per token, when counted) is still falling at the end of
    ``windows``: their last quarter of steps clearly cheaper than the quarter before it (by more
    than ``SETTLING_DROP / 4`` and by more than three standard errors of the difference). A level
    that changed once and stayed (both quarters at the new level) and noise alone are not.
    ``per_work``: whether every window with steps knows its work (``_counts_work``)."""
    total = sum(w.steps for w in windows)
    quarters: list[list[tuple[float, float]]] = [[], []]  # (unit cost, weight) of quarters 3 and 4
    seen = 0
    for w in windows:
        middle = seen + w.steps / 2.0
        seen += w.steps
        if not w.steps or middle < total / 2.0:
            continue
        weight = (w.work if per_work else w.steps) or 0.0
        if weight > 0:
            quarters[middle >= 0.75 * total].append((w.energy_j / weight, weight))
    if min(len(q) for q in quarters) < 3:  # too few windows to compare quarters: the line through all
        return _falling_line(windows, per_work)
    means, errors = [], []
    for q in quarters:
        weight = sum(n for _, n in q)
        mean = sum(c * n for c, n in q) / weight
        spread = sum(n * (c - mean) ** 2 for c, n in q) / weight
        means.append(mean)
        errors.append(spread / (len(q) - 1))
    drop = means[0] - means[1]
    clearly = drop > 3.0 * math.sqrt(errors[0] + errors[1])
    return means[0] > 0 and drop > SETTLING_DROP / 4.0 * means[0] and clearly


def _falling_line(windows: list[_Window], per_work: bool) -> bool:
    """A least-squares line through each window's unit cost against its middle step, weighted by
    its steps, falls by more than ``SETTLING_DROP / 2`` over the windows' span, and clearly (t > 3)."""
    points, seen = [], 0
    for w in windows:
        weight = (w.work if per_work else w.steps) or 0.0
        if w.steps and weight > 0:
            points.append((seen + w.steps / 2.0, w.energy_j / weight, float(w.steps)))
        seen += w.steps
    if len(points) < 3:
        return False
    total = sum(n for _, _, n in points)
    mx = sum(x * n for x, _, n in points) / total
    my = sum(y * n for _, y, n in points) / total
    sxx = sum(n * (x - mx) ** 2 for x, _, n in points)
    if sxx <= 0 or my <= 0:
        return False
    slope = sum(n * (x - mx) * (y - my) for x, y, n in points) / sxx
    residual = sum(n * (y - my - slope * (x - mx)) ** 2 for x, y, n in points) / (len(points) - 2)
    clearly = residual <= 0 or -slope / math.sqrt(residual / sxx) > 3.0
    return slope < 0 and -slope * (points[-1][0] - points[0][0]) > SETTLING_DROP / 2.0 * my and clearly


def _weighted_median(values: list[tuple[float, float]]) -> float:
    """The value below and above which half of the total weight lies."""
    ordered = sorted(values)
    total = sum(weight for _, weight in ordered)
    seen = 0.0
    for value, weight in ordered:
        seen += weight
        if seen >= total / 2.0:
            return value
    return ordered[-1][0]


def _z_for(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence!r}")
    return statistics.NormalDist().inv_cdf(0.5 + confidence / 2.0)


def _t_quantile(confidence: float, dof: int) -> float:
    """Two-sided Student t factor for ``confidence`` with ``dof`` degrees of freedom.

    Exact for 1 and 2 degrees of freedom; from 3 up, the Cornish-Fisher expansion of t in z
    (Abramowitz and Stegun 26.7.5), within 0.3% of the exact value (2.353 at 90% and 3 dof; 1.645
    as dof grows).
    """
    z = _z_for(confidence)
    p = 0.5 + confidence / 2.0
    if dof <= 0:
        return z
    if dof == 1:
        return math.tan(math.pi * (p - 0.5))
    if dof == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    v = float(dof)
    return (z + (z**3 + z) / (4 * v) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3))


class Milestones:
    """The forecast made when training first reached each fraction of the plan.

    Example::

        >>> m = Milestones()
        >>> m.update(step=12, planned_steps=1000, forecast=lambda: None)      # 1%: no forecast yet
        >>> m.update(step=15, planned_steps=1000, forecast=lambda: f.forecast())  # filled at step 15
        >>> m.records[0]["at_step"]
        15

    When the forecaster has nothing to say at the crossing (warm-up, too few windows), the milestone
    is filled by the first forecast made after it, as long as training has not reached the next
    milestone; ``at_step`` says when it was made. Past that, it stays empty.
    """

    def __init__(self, fractions: tuple[float, ...] = MILESTONE_FRACTIONS) -> None:
        self.fractions = fractions
        self.records: list[dict[str, Any]] = []

    def update(self, step: int, planned_steps: int | None, forecast: Callable[[], Forecast | None]) -> None:
        """After a training window ending at ``step``: record (or fill) the milestones it reached."""
        if not planned_steps:
            return
        pending = self.records[-1] if self.records and self.records[-1]["energy_j"] is None else None
        crossed = len(self.records) < len(self.fractions) and step >= self.fractions[len(self.records)] * planned_steps
        if pending is None and not crossed:
            return
        made = forecast()
        if pending is not None and made is not None and not crossed:  # past the next one it stays empty
            pending.update(_record(pending["fraction"], step, made))
        while len(self.records) < len(self.fractions) and step >= self.fractions[len(self.records)] * planned_steps:
            self.records.append(_record(self.fractions[len(self.records)], step, made))


def _record(fraction: float, step: int, forecast: Forecast | None) -> dict[str, Any]:
    return {
        "fraction": fraction,
        "at_step": step,
        "energy_j": forecast.energy_j if forecast else None,
        "energy_low_j": forecast.energy_low_j if forecast else None,
        "energy_high_j": forecast.energy_high_j if forecast else None,
        "duration_s": forecast.duration_s if forecast else None,
        "eval_passes_unmeasured": forecast.eval_passes_unmeasured if forecast else 0,
    }
