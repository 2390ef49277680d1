"""Configuration shared by every ``EnergyCallback``: one set of names, checked before training.

Example::

    >>> from wattwise.config import Config
    >>> Config.from_kwargs(country_iso_code="fra", pue=1.2).country_iso_code
    'FRA'

Every argument can also come from a ``WATTWISE_<NAME>`` environment variable (an explicit keyword
argument wins). Invalid values raise ``ValueError`` naming the argument and what it accepts.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
from dataclasses import dataclass
from typing import Any

SOURCE_NAMES = ("nvml", "rapl", "cpu", "ram")
ENV_PREFIX = "WATTWISE_"


@dataclass(frozen=True)
class Config:
    """Validated settings of a tracked run (see ``docs/guide.md`` for each one)."""

    country_iso_code: str | None = None
    region: str | None = None
    cloud_provider: str | None = None
    cloud_region: str | None = None
    carbon_intensity_g_per_kwh: float | None = None
    pue: float = 1.0
    output_dir: str | None = None
    cpu_power_w: float | None = None
    ram_power_w: float | None = None
    sources: tuple[str, ...] = SOURCE_NAMES
    sync_cuda: bool = False
    window_s: float = 0.5
    print_summary: bool = True
    write_files: bool = True
    project_name: str = "wattwise"
    budget_kwh: float | None = None
    budget_kg_co2e: float | None = None
    on_budget: str = "warn"
    # the run registry (wattwise.registry): None or True = the per-user file; False = none; a path = that file
    registry: bool | str | None = None

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> Config:
        """Build a config from keyword arguments, then ``WATTWISE_*`` variables, then defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise ValueError(
                f"unknown argument(s) {', '.join(unknown)}; accepted: {', '.join(sorted(names))}"
            )
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in kwargs and kwargs[f.name] is not None:
                values[f.name] = kwargs[f.name]
            elif (raw := os.environ.get(ENV_PREFIX + f.name.upper())) not in (None, ""):
                values[f.name] = _parse_env(f.name, raw, f.default)
        return cls(**_validated(values))


def _parse_env(name: str, raw: str, default: Any) -> Any:
    if name == "registry":  # WATTWISE_REGISTRY: a path, or an on/off word
        from .registry import OFF, ON

        lowered = raw.strip().lower()
        return False if lowered in OFF else True if lowered in ON else raw
    if isinstance(default, bool):
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r}: expected true/false")
    if isinstance(default, tuple):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if name in _NUMBERS:
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r}: expected a number") from None
    return raw


# Each numeric argument with its lowest accepted value and whether that value itself is accepted.
_NUMBERS: dict[str, tuple[float, bool]] = {
    "carbon_intensity_g_per_kwh": (0.0, True),
    "pue": (1.0, True),
    "cpu_power_w": (0.0, False),
    "ram_power_w": (0.0, True),
    "window_s": (0.0, False),
    "budget_kwh": (0.0, False),
    "budget_kg_co2e": (0.0, False),
}
ON_BUDGET = ("warn", "stop")


def _validated(values: dict[str, Any]) -> dict[str, Any]:
    for name, (lowest, inclusive) in _NUMBERS.items():
        if name not in values:
            continue
        value = values[name]
        if isinstance(value, bool) or not isinstance(value, numbers.Real):  # numpy scalars are Real too
            raise ValueError(f"{name} must be a number, got {value!r}")
        above = value >= lowest if inclusive else value > lowest
        if not above or value == float("inf"):
            bound = (">= " if inclusive else "> ") + f"{lowest:g}"
            raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
        values[name] = float(value)
    for name in ("country_iso_code", "region", "cloud_provider", "cloud_region", "output_dir", "project_name"):
        if name in values and not isinstance(values[name], str | os.PathLike):
            raise ValueError(f"{name} must be a string, got {values[name]!r}")
        if name in values:
            values[name] = os.fspath(values[name])
    if "country_iso_code" in values:
        code = values["country_iso_code"].strip().upper()
        if len(code) != 3 or not code.isalpha():
            raise ValueError(
                f"country_iso_code must be a 3-letter ISO 3166-1 alpha-3 code such as 'FRA' or 'USA', got {values['country_iso_code']!r}"
            )
        values["country_iso_code"] = code
    if "cloud_provider" in values:
        values["cloud_provider"] = values["cloud_provider"].strip().lower()
    if ("cloud_provider" in values) != ("cloud_region" in values):
        raise ValueError("cloud_provider and cloud_region must be given together (e.g. 'gcp' and 'europe-west1')")
    if "region" in values and "country_iso_code" not in values:
        raise ValueError("region needs country_iso_code too (e.g. country_iso_code='USA', region='california')")
    if "sources" in values:
        sources = values["sources"]
        if isinstance(sources, str):
            sources = (sources,)
        sources = tuple(sources)
        bad = [s for s in sources if s not in SOURCE_NAMES]
        if bad:
            raise ValueError(f"sources has unknown name(s) {bad}; accepted: {', '.join(SOURCE_NAMES)}")
        values["sources"] = sources
    if "on_budget" in values and values["on_budget"] not in ON_BUDGET:
        raise ValueError(f"on_budget must be one of {', '.join(ON_BUDGET)}, got {values['on_budget']!r}")
    if "registry" in values:
        if not isinstance(values["registry"], bool | str | os.PathLike) or values["registry"] == "":
            raise ValueError(f"registry must be True, False or a file path, got {values['registry']!r}")
        if not isinstance(values["registry"], bool):
            values["registry"] = os.fspath(values["registry"])
    for name in ("sync_cuda", "print_summary", "write_files"):
        if name in values and not isinstance(values[name], bool):
            raise ValueError(f"{name} must be True or False, got {values[name]!r}")
    return values
