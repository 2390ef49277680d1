"""What every energy source provides: components, cumulative joules, and an honest label.

Example::

    >>> from wattwise.sources.base import Component
    >>> Component("gpu:0", kind="gpu", measured=True, source="nvml", scope="device").name
    'gpu:0'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class SourceUnavailable(RuntimeError):
    """A source cannot run on this machine; the message says why and, where possible, the fix."""


@dataclass(frozen=True)
class Component:
    """One thing that draws power, and where its figure comes from.

    ``measured`` is True for a hardware counter (NVML, RAPL) and False for a model (CPU time x TDP,
    RAM model). ``scope`` says what the figure covers: ``device`` (one accelerator), ``node`` (the
    whole machine's package or DRAM, not only this run) or ``process`` (this run's own share).
    """

    name: str
    kind: str
    measured: bool
    source: str
    scope: str
    detail: str = ""


class EnergySource(Protocol):
    """Cumulative energy per component since the source started."""

    components: tuple[Component, ...]

    def read_j(self) -> tuple[float, ...]:
        """Joules consumed by each component since the source started, in ``components`` order."""
        ...

    def close(self) -> None:
        """Release handles and threads; reading after close is not allowed."""
        ...

    # Optional: ``problems() -> list[str]``, what went wrong while the source ran (read at close).
