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
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .base import Component, SourceUnavailable

DEFAULT_ROOT = "/sys/class/powercap"
_ZONE = re.compile(r"^intel-rapl:(\d+)(?::(\d+))?$")
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
    total_uj: int = 0


class RaplSource:
    """Cumulative joules per RAPL package and DRAM zone since ``open()``."""

    def __init__(self, zones: list[_Zone]) -> None:
        self._zones = zones
        self.components = tuple(z.component for z in zones)

    @classmethod
    def open(cls, root: str | Path = DEFAULT_ROOT) -> RaplSource:
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
            zones.append(_Zone(component, energy_file, max_range_uj, start_uj))
        if not zones:
            raise SourceUnavailable(f"no RAPL source: no package or dram zone under {root}")
        return cls(zones)

    def read_j(self) -> tuple[float, ...]:
        values = []
        for zone in self._zones:
            now_uj = int(zone.energy_file.read_text())
            delta_uj = now_uj - zone.last_uj
            if delta_uj < 0:  # the counter wrapped past max_energy_range_uj
                delta_uj += zone.max_range_uj
            zone.total_uj += delta_uj
            zone.last_uj = now_uj
            values.append(zone.total_uj / 1e6)
        return tuple(values)

    def close(self) -> None:
        """Nothing to release: every read opens and closes its file."""


def _read_text(path: Path) -> str:
    return path.read_text().strip()


def _zone_sort_key(path: Path) -> tuple[int, int]:
    match = _ZONE.match(path.name)
    if match is None:
        return (1 << 30, 0)
    return (int(match.group(1)), int(match.group(2) or -1))
