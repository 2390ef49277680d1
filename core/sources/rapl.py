"""CPU package and DRAM energy from Linux RAPL counters under ``/sys/class/powercap``.

Example::

    >>> from wattwise.sources.rapl import RaplSource, SourceUnavailable
    >>> try:
    ...     cpu = RaplSource.open()                    # root="/sys/class/powercap"
    ... except SourceUnavailable as why:
    ...     print(why)

The powercap tree lists one zone per CPU package (``intel-rapl:0``, name ``package-0``) with
sub-zones (``intel-rapl:0:0``, names ``core``, ``uncore`` or ``dram``); AMD processors appear in
the same tree, usually with package zones only. Packages become ``cpu:N`` and DRAM sub-zones
``dram:N``; ``core``/``uncore`` (inside the package) and ``psys`` (the whole platform) are skipped
so nothing is counted twice. ``energy_uj`` wraps at ``max_energy_range_uj``; each read adds the
wrapped difference. The counters cover the whole node, not only this process.

A counter can also *reset* (a driver reload, a resume from suspend, a VM migration): it goes back
like a wrap, but counting it as one would add up to ``max_energy_range_uj`` (262 kJ for a package)
that was never drawn. A counter that went back is a wrap only if the power that wrap implies over
the time since the last read is possible for the zone (at most ``FAR_ABOVE`` x the largest
``constraint_*_max_power_uw`` it states, else ``DEFAULT_MAX_W`` for its kind); otherwise, if what
it shows now is possible since the last read, it reset, and what it shows is counted. Each zone
that reset says so once (``problems()``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .base import Component, SourceUnavailable

DEFAULT_ROOT = "/sys/class/powercap"
_ZONE = re.compile(r"^intel-rapl:(\d+)(?::(\d+))?$")
_MAX_POWER = re.compile(r"^constraint_\d+_max_power_uw$")
DEFAULT_MAX_W = {"cpu": 1000.0, "dram": 500.0}  # no package or DRAM zone averages more, between two reads
FAR_ABOVE = 5.0  # a zone boosts past its stated maximum power for seconds (PL2), never 5x on average
PERMISSION_HINT = (
    "RAPL energy counters are readable by root only since Linux 5.10; to let this user read them, run "
    "`sudo chmod -R a+r /sys/class/powercap/intel-rapl` (until reboot) or add a udev rule such as "
    '`SUBSYSTEM=="powercap", ACTION=="add", RUN+="/bin/chmod a+r /sys%p/energy_uj"`'
)

__all__ = ["RaplSource", "SourceUnavailable", "DEFAULT_ROOT"]


@dataclass
class _Zone:
    component: Component
    energy_file: Path
    max_range_uj: int
    last_uj: int
    max_w: float  # the most this zone can average between two reads
    total_uj: int = 0
    resets: list[str] = field(default_factory=list)  # what each reset looked like
    unexplained: list[str] = field(default_factory=list)  # went back: neither a wrap nor a reset fits


class RaplSource:
    """Cumulative joules per RAPL package and DRAM zone since ``open()``; ``clock`` times the reads
    (to tell a counter's wrap from its reset)."""

    def __init__(self, zones: list[_Zone], clock: Callable[[], float] = time.monotonic) -> None:
        self._zones = zones
        self._clock = clock
        self._last_t = clock()
        self.components = tuple(z.component for z in zones)

    @classmethod
    def open(cls, root: str | Path = DEFAULT_ROOT, clock: Callable[[], float] = time.monotonic) -> RaplSource:
        """Find the package and DRAM zones under ``root``; raise ``SourceUnavailable`` if none is readable."""
        root = Path(root)
        if not root.is_dir():
            raise SourceUnavailable(f"no RAPL source: {root} does not exist (not Linux, or no powercap driver)")
        zones: list[_Zone] = []
        for entry in sorted(root.iterdir(), key=_zone_sort_key):
            match = _ZONE.match(entry.name)
            if match is None:
                continue
            package = int(match.group(1))
            label = _read_text(entry / "name")
            if label.startswith("package"):
                name, kind = f"cpu:{package}", "cpu"
            elif label == "dram":
                name, kind = f"dram:{package}", "dram"
            else:
                continue  # core/uncore are inside the package; psys is the whole platform
            energy_file = entry / "energy_uj"
            try:
                start_uj = int(_read_text(energy_file))
            except PermissionError:
                raise SourceUnavailable(f"no RAPL source: permission denied on {energy_file}. {PERMISSION_HINT}") from None
            max_range_uj = int(_read_text(entry / "max_energy_range_uj"))
            component = Component(
                name, kind=kind, measured=True, source="rapl", scope="node",
                detail=f"RAPL zone {entry.name} ({label}), whole node",
            )
            zones.append(_Zone(component, energy_file, max_range_uj, start_uj, _max_power_w(entry, kind)))
        if not zones:
            raise SourceUnavailable(f"no RAPL source: no package or dram zone under {root}")
        return cls(zones, clock)

    def read_j(self) -> tuple[float, ...]:
        now_t = self._clock()
        elapsed_s, self._last_t = now_t - self._last_t, now_t
        values = []
        for zone in self._zones:
            now_uj = int(zone.energy_file.read_text())
            delta_uj = now_uj - zone.last_uj
            if delta_uj < 0:  # the counter went back: a wrap past max_energy_range_uj, or a reset
                delta_uj = _since_last_read(zone, now_uj, elapsed_s)
            zone.total_uj += delta_uj
            zone.last_uj = now_uj
            values.append(zone.total_uj / 1e6)
        return tuple(values)

    def close(self) -> None:
        """Nothing to release: every read opens and closes its file."""

    def problems(self) -> list[str]:
        """Each zone whose counter reset, or went back in a way nothing explains, once."""
        said = []
        for zone in self._zones:
            where = zone.component.detail.split(",")[0]  # "RAPL zone intel-rapl:0 (package-0)"
            if zone.resets:
                many = len(zone.resets) > 1
                said.append(
                    f"{where}: the counter reset{f' ({len(zone.resets)} times)' if many else ''} (a driver reload, "
                    f"a resume, a VM migration): it went back {zone.resets[0]}; what it showed since "
                    f"{'each' if many else 'the'} reset was counted, not a wrap"
                )
            if zone.unexplained:
                times = f" ({len(zone.unexplained)} times)" if len(zone.unexplained) > 1 else ""
                said.append(
                    f"{where}: the counter went back{times} {zone.unexplained[0]}, which neither a wrap nor a reset "
                    "explains in the time between the reads; counted as a wrap"
                )
        return said


def _since_last_read(zone: _Zone, now_uj: int, elapsed_s: float) -> int:
    """Microjoules since the last read of a counter that went back: the wrapped difference if the power
    it implies is possible for the zone, else (a reset) what the counter shows, if that is possible."""
    wrapped_uj = now_uj - zone.last_uj + zone.max_range_uj
    possible_uj = zone.max_w * 1e6 * elapsed_s
    if wrapped_uj <= possible_uj:
        return wrapped_uj
    how = f"from {zone.last_uj / 1e6:.1f} J to {now_uj / 1e6:.1f} J " + (
        f"in {elapsed_s:.3g} s (a wrap would mean {wrapped_uj / 1e6 / elapsed_s:.3g} W, more than the "
        f"{zone.max_w:g} W this zone can draw)" if elapsed_s > 0 else "with no time between the reads"
    )
    if now_uj <= possible_uj:
        zone.resets.append(how)
        return now_uj
    zone.unexplained.append(how)
    return wrapped_uj


def _max_power_w(zone: Path, kind: str) -> float:
    """The most a zone can average between two reads: ``FAR_ABOVE`` x the largest maximum power its
    constraints state, else the default for its kind (zones often state none, or 0)."""
    stated = []
    try:
        entries = list(zone.iterdir())
    except OSError:
        entries = []
    for entry in entries:
        if _MAX_POWER.match(entry.name):
            try:
                stated.append(int(_read_text(entry)) / 1e6)
            except (OSError, ValueError):
                continue
    stated_w = max(stated, default=0.0)
    return FAR_ABOVE * stated_w if stated_w > 0 else DEFAULT_MAX_W[kind]


def _read_text(path: Path) -> str:
    return path.read_text().strip()


def _zone_sort_key(path: Path) -> tuple[int, int]:
    match = _ZONE.match(path.name)
    if match is None:
        return (1 << 30, 0)
    return (int(match.group(1)), int(match.group(2) or -1))
