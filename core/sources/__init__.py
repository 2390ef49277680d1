"""Energy sources: hardware counters (NVML, RAPL) and estimates (CPU time x TDP, RAM model).

Example::

    >>> from wattwise.sources import open_sources
    >>> opened = open_sources(("nvml", "rapl", "cpu", "ram"))
    >>> [c.name for s in opened.sources for c in s.components]   # e.g. ['cpu', 'ram'] on a laptop
    >>> opened.notes                                             # why the others did not start
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from .base import Component, EnergySource, SourceUnavailable

__all__ = ["Component", "EnergySource", "SourceUnavailable", "OpenedSources", "open_sources"]


@dataclass
class OpenedSources:
    sources: list[EnergySource] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def open_sources(
    names: tuple[str, ...],
    *,
    node_leader: bool = True,
    cpu_power_w: float | None = None,
    ram_power_w: float | None = None,
    rapl_root: str | None = None,
) -> OpenedSources:
    """Start the named sources that can run here; a counter replaces the estimate it would duplicate.

    ``node_leader`` is False on every process but one per node: RAPL covers the whole node, so only
    the leader reads it (the per-process CPU and RAM estimates are summed over ranks instead).
    """
    opened = OpenedSources()
    kinds: set[str] = set()

    def attempt(label: str, factory) -> None:
        try:
            source = factory()
        except SourceUnavailable as why:
            opened.notes.append(str(why))
            return
        except Exception as exc:  # a source that crashes while starting is skipped, not fatal
            opened.notes.append(f"{label} source failed to start: {type(exc).__name__}: {exc}")
            return
        opened.sources.append(source)
        kinds.update(c.kind for c in source.components)

    if "nvml" in names:
        from .nvml import NvmlSource

        attempt("nvml", NvmlSource.open)
    if "rapl" in names:
        from .rapl import DEFAULT_ROOT, RaplSource

        if node_leader:
            attempt("rapl", lambda: RaplSource.open(rapl_root or DEFAULT_ROOT))
        else:
            # The node's leader reads RAPL, which covers this process too: no estimate beside it.
            # Whatever stops RAPL here stops it on the leader too, which then says why.
            with contextlib.suppress(Exception):
                kinds.update(c.kind for c in RaplSource.open(rapl_root or DEFAULT_ROOT).components)
    if "cpu" in names and "cpu" not in kinds:
        from .model import CpuTimeSource

        attempt("cpu", lambda: CpuTimeSource.open(cpu_power_w))
    if "ram" in names and "dram" not in kinds:
        from .model import RamShareSource

        attempt("ram", lambda: RamShareSource.open(ram_power_w))
    return opened
