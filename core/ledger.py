"""The ledger of one run: its windows, and the energy, time, steps and samples of each phase.

Example::

    >>> from wattwise.ledger import Ledger
    >>> ledger = Ledger(meter, window_s=0.5, phase="train")   # reads the meter once: the start
    >>> if ledger.step():                                     # counts; True when a reading is due
    ...     ledger.close_window()                             # reads the meter: a window closes
    >>> ledger.phases["train"].energy_j

Energy is read in *windows*: the meter is read when at least ``window_s`` has passed at a step, at
every log step and at every phase boundary, never more often. A window's joules go to the phase
that was running (``train``, ``eval``, ``test``, ``predict``) and are shared equally by its steps;
its steps and samples are counted into the phase at the same reading.
Every joule goes to a step: a window without steps (a log, the set-up of an evaluation, the end of
training) joins the window before it, whatever its phase, because the time after a step until the
next one belongs to that step; at the very start, before any step, it waits for the first window
with steps and takes that window's phase. Memory stays bounded: totals per phase and component, and
a timeline thinned to at most ``TIMELINE_POINTS`` points (``windows.py``).

The ledger knows nothing of forecasts, budgets, ranks or files: each closed window is handed to
``on_window`` (the run's forecast and budget) and each finished row to ``on_row`` (``steps.csv``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .evidence import EvidenceCollector
from .meter import EnergyMeter, Reading
from .records import ComponentEnergy, PhaseEnergy
from .windows import Timeline, Window

PHASES = ("train", "eval", "test", "predict")


@dataclass(frozen=True)
class Counts:
    """The run's energy and training steps at one moment (this process's reading time)."""

    timestamp_s: float
    total_j: float
    train_steps: int
    train_j: float
    train_samples: int = 0
    train_tokens: float = 0.0


class Ledger:
    """Phase and window accounting over one meter. ``phase`` is the phase a run starts in."""

    def __init__(
        self,
        meter: EnergyMeter,
        *,
        window_s: float,
        phase: str,
        clock: Callable[[], float],
        before_read: Callable[[], None] | None = None,
        on_window: Callable[[str, int, float, float, float | None], None] = lambda *args: None,
        on_row: Callable[[Window], None] = lambda window: None,
    ) -> None:
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        self.meter = meter
        self.window_s = window_s
        self._clock = clock
        self._before_read = before_read
        self.on_window = on_window
        self.on_row = on_row
        self.phases = {name: PhaseEnergy(name) for name in PHASES}
        self.phase = self.start_phase = phase
        self._pass_start_j = 0.0
        self._pass_start_s = 0.0
        self.last_pass_j = 0.0
        self.last_pass_s = 0.0
        self.last_pass_samples = 0
        self._pass_start_samples = 0
        self.passes_ended = 0
        self.window_steps = 0
        self.window_samples = 0  # samples of this window's steps: the phase's count at its reading
        self._window_work = 0.0  # tokens of this window's steps, when the integration counts them
        self._window_work_steps = 0  # how many of its steps came with their tokens
        self.global_step = 0
        self.first = self.last = self._read()
        self.evidence = EvidenceCollector(meter, self.first)  # what the advisor reads at the end
        self._schedule(self.first.timestamp_s + window_s)
        self.timeline = Timeline([c.name for c in meter.components])
        self.held: Window | None = None  # the last closed window, written once the next one is known

    def _read(self) -> Reading:
        if self._before_read is not None:
            self._before_read()
        return self.meter.read()

    # ---- counting ------------------------------------------------------------------------------

    def step(self, work: float | None = None, steps: int = 1, samples: int = 0) -> bool:
        """``steps`` steps ended, with their ``samples``; ``work``: their tokens, when the framework
        counts them. Returns whether the window is due: ``window_s`` has passed since the last
        reading, or the clock went back since (the meter then takes the jump out of the time at
        once, rather than after the jump's length). This runs at every step, where a call costs
        1-3 us, so it makes none."""
        self.window_steps += steps
        self.window_samples += samples
        if work is not None:
            self._window_work += work
            self._window_work_steps += steps
        now = self._clock()
        return now >= self._due_at or now < self._back_at

    def _schedule(self, next_read_at: float) -> None:
        """The next reading's time, and the last one's, on the clock's own scale (the meter's times
        are the clock's plus the shifts it made for a clock that went back, which only a reading
        changes): ``step()`` compares the clock with them and adds nothing."""
        self._due_at = next_read_at - self.meter.clock_shift_s
        self._back_at = self.last.timestamp_s - self.meter.clock_shift_s

    def add_samples(self, phase: str, samples: int) -> None:
        self.phases[phase].samples += samples

    @property
    def train_steps_done(self) -> int:
        """Training steps so far, those of the open window included."""
        return self.phases["train"].steps + (self.window_steps if self.phase == "train" else 0)

    # ---- phases --------------------------------------------------------------------------------

    def begin(self, phase: str) -> None:
        """Enter ``phase``; what came before is closed as the old phase."""
        if phase not in self.phases:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        if phase == self.phase:
            return
        self.close_window()
        self.phase = phase
        self._pass_start_j = self.phases[phase].energy_j
        self._pass_start_s = self.phases[phase].duration_s
        self._pass_start_samples = self.phases[phase].samples

    def end(self, phase: str) -> bool:
        """Leave ``phase`` (back to ``train``): one more pass of it, whose joules and seconds are
        then ``last_pass_j`` and ``last_pass_s``. False when ``phase`` was not running."""
        if self.phase != phase:
            return False
        self.close_window()
        record = self.phases[phase]
        record.passes += 1
        self.passes_ended += 1
        self.last_pass_j = record.energy_j - self._pass_start_j
        self.last_pass_s = record.duration_s - self._pass_start_s
        self.last_pass_samples = record.samples - self._pass_start_samples
        self.phase = "train"
        return True

    # ---- windows -------------------------------------------------------------------------------

    def close_window(self, *, reading: Reading | None = None) -> None:
        """Read the meter (or take ``reading``) and give the window's joules to its steps and phase."""
        reading = reading if reading is not None else self._read()
        previous, self.last = self.last, reading
        self._schedule(reading.timestamp_s + self.window_s)
        steps, self.window_steps = self.window_steps, 0
        self.phases[self.phase].samples += self.window_samples
        self.window_samples = 0
        work = self._window_work if self._window_work_steps == steps else None  # only if every step said
        self._window_work, self._window_work_steps = 0.0, 0
        duration_s = max(0.0, reading.timestamp_s - previous.timestamp_s)  # the meter's time never goes back
        if duration_s <= 0 and steps == 0:
            return
        deltas = [b - a for a, b in zip(previous.energy_j, reading.energy_j, strict=True)]
        held = self.held
        phase = held.phase if steps == 0 and held is not None else self.phase
        record = self.phases[phase]
        record.energy_j += sum(deltas)
        record.duration_s += duration_s
        record.steps += steps
        if work is not None:
            record.tokens += work
        self.evidence.window(reading, phase)
        if phase == "train":
            self.global_step += steps
        self.on_window(phase, steps, sum(deltas), duration_s, work)
        start_s = previous.timestamp_s - self.first.timestamp_s
        self.timeline.add(start_s=start_s, duration_s=duration_s, deltas=deltas, phase=phase)
        window = Window(phase, self.global_step, steps, start_s, duration_s, deltas)
        if held is not None and held.steps == 0 and held.phase != phase:
            self._recharge(held, phase)
        if held is not None and held.phase == phase and (steps == 0 or held.steps == 0):
            held.absorb(window)
            return
        if held is not None:
            self.on_row(held)
        self.held = window

    def flush(self) -> None:
        """Hand the last window's row over (at the end of the run)."""
        if self.held is not None:
            self.on_row(self.held)
            self.held = None

    def _recharge(self, window: Window, phase: str) -> None:
        """Move a step-less window (set-up before the first step) to the phase of the first step."""
        energy_j = sum(window.deltas)
        for name, sign in ((window.phase, -1.0), (phase, 1.0)):
            record = self.phases[name]
            record.energy_j += sign * energy_j
            record.duration_s += sign * window.duration_s
        window.phase = phase

    # ---- figures -------------------------------------------------------------------------------

    def so_far(self) -> tuple[float, float]:
        """Energy and time measured since the start, as of the last reading."""
        return self.last.total_j - self.first.total_j, self.last.timestamp_s - self.first.timestamp_s

    def counts(self) -> Counts:
        train = self.phases["train"]
        return Counts(self.last.timestamp_s, self.last.total_j - self.first.total_j, train.steps, train.energy_j,
                      train.samples, train.tokens)

    def components(self) -> dict[str, ComponentEnergy]:
        """Each component and its energy as of the last reading."""
        return {
            c.name: ComponentEnergy(
                name=c.name, kind=c.kind, energy_j=end - begin, measured=c.measured,
                source=c.source, scope=c.scope, detail=c.detail,
            )
            for c, begin, end in zip(self.meter.components, self.first.energy_j, self.last.energy_j, strict=True)
        }
