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
        self.notes: list[str] = []

    def read(self) -> Reading:
        timestamp_s = self._clock()
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
            self._last[self._slices[i]] = values
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
        """Close every source, and collect what each has to say about its run (``problems()``)."""
        for source in self._sources:
            try:
                source.close()
                self.notes.extend(getattr(source, "problems", list)())
            except Exception as exc:
                self.notes.append(f"closing {type(source).__name__} failed: {exc}")
