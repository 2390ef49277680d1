"""EnergyMeter: one read of every source, as cumulative joules per component.

Example::

    >>> from wattwise.meter import EnergyMeter
    >>> from wattwise.sources import open_sources
    >>> meter = EnergyMeter(open_sources(("cpu", "ram")).sources)
    >>> first = meter.read()
    >>> later = meter.read()
    >>> joules = [b - a for a, b in zip(first.energy_j, later.energy_j)]

A source that raises while being read is dropped with one note (``meter.notes``); its energy up to
its last good read is kept, so totals never go backwards and training never sees the error.

Readings never go back either. A clock that goes back (a suspended VM, a faulty clock source) is
shifted forward by as much (``clock_shift_s``), so the window over the jump lasts 0 s and keeps its
energy; a component whose cumulative joules go back is counted from its new value on, its window
0 J for it. Either is said once, at ``close()``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .sources import Component, EnergySource


@dataclass(frozen=True)
class Reading:
    """Cumulative joules per component (in ``EnergyMeter.components`` order) at ``timestamp_s``."""

    timestamp_s: float
    energy_j: tuple[float, ...]

    @property
    def total_j(self) -> float:
        return sum(self.energy_j)


def _seconds(value: float) -> str:
    """``1000`` or ``2.5``: a duration for a note."""
    return f"{value:.0f}" if abs(value) >= 10 else f"{value:.3g}"


class EnergyMeter:
    """Reads a fixed set of sources; the component list never changes after construction."""

    def __init__(self, sources: Sequence[EnergySource], clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._sources = list(sources)
        self.components: tuple[Component, ...] = tuple(c for s in self._sources for c in s.components)
        self._slices: list[slice] = []
        start = 0
        for source in self._sources:
            self._slices.append(slice(start, start + len(source.components)))
            start += len(source.components)
        self._alive = [True] * len(self._sources)
        self._last = [0.0] * len(self.components)
        self._offsets = [0.0] * len(self.components)  # joules each component's source went back, in all
        self._last_s = float("-inf")
        self.clock_shift_s = 0.0  # added to the clock's time: what it went back, in all
        self._clock_jumps = 0
        self.notes: list[str] = []

    def read(self) -> Reading:
        timestamp_s = self._clock() + self.clock_shift_s
        if timestamp_s < self._last_s:  # the clock went back: this reading is taken as the last one's time
            self.clock_shift_s += self._last_s - timestamp_s
            self._clock_jumps += 1
            timestamp_s = self._last_s
        self._last_s = timestamp_s
        for i, source in enumerate(self._sources):
            if not self._alive[i]:
                continue
            try:
                values = source.read_j()
                if len(values) != len(source.components):
                    raise RuntimeError(f"returned {len(values)} values for {len(source.components)} components")
            except Exception as exc:  # a broken counter must never stop training
                self._alive[i] = False
                names = ", ".join(c.name for c in source.components)
                self.notes.append(f"stopped reading {names}: {type(exc).__name__}: {exc}; its energy until then is kept")
                continue
            for j, value in zip(range(self._slices[i].start, self._slices[i].stop), values, strict=True):
                value += self._offsets[j]
                if value < self._last[j]:  # went back: counted from here on, never negative
                    self._offsets[j] += self._last[j] - value
                    value = self._last[j]
                self._last[j] = value
        return Reading(timestamp_s, tuple(self._last))

    def usage(self) -> list:
        """What the sources that can say it report about their devices' use now (``usage()``: NVML's
        utilisation and memory); a source that fails here is skipped, its energy still read."""
        samples: list = []
        for alive, source in zip(self._alive, self._sources, strict=True):
            usage = getattr(source, "usage", None)
            if alive and usage is not None:
                try:
                    samples.extend(usage())
                except Exception:  # telemetry is evidence for advice, never a reason to stop
                    continue
        return samples

    def close(self) -> None:
        """Close every source, and collect what each has to say about its run (``problems()``) and
        the components' final labels (a source may say in ``detail`` how its figure was made)."""
        for source in self._sources:
            try:
                source.close()
                self.notes.extend(getattr(source, "problems", list)())
            except Exception as exc:
                self.notes.append(f"closing {type(source).__name__} failed: {exc}")
        relabelled = tuple(c for s in self._sources for c in s.components)
        if [c.name for c in relabelled] == [c.name for c in self.components]:
            self.components = relabelled
        if self._clock_jumps:
            times = f" ({self._clock_jumps} times)" if self._clock_jumps > 1 else ""
            self.notes.append(
                f"the clock went back by {_seconds(self.clock_shift_s)} s{times} (a suspended VM, a faulty clock source): "
                f"the window over {'each jump' if self._clock_jumps > 1 else 'it'} was counted as 0 s, its energy kept"
            )
        for component, offset_j in zip(self.components, self._offsets, strict=True):
            if offset_j > 0:
                self.notes.append(
                    f"{component.name}'s cumulative energy went back by {offset_j:.3g} J: counted from its new "
                    "value on, never as negative energy"
                )
