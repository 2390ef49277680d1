"""Configuration shared by every ``EnergyCallback``: one set of names, checked before training.

Example::

    >>> from wattwise.config import Config
    >>> Config.from_kwargs(country_iso_code="fra", pue=1.2).country_iso_code
    'FRA'

Every argument can also come from a ``WATTWISE_<NAME>`` environment variable (an explicit keyword
argument wins). Invalid values raise ``ValueError`` naming the argument and what it accepts: an
empty string, no source at all, a number beyond a float's range, a country together with a cloud
region. A ``WATTWISE_*`` variable that is no setting (a typo such as ``WATTWISE_COUNTRY``) is
warned about once per process, with the closest known name.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import os
import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .carbon import check_location_arguments
from .probe_result import ProbeResult

SOURCE_NAMES = ("nvml", "rapl", "cpu", "ram")
ENV_PREFIX = "WATTWISE_"
# WATTWISE_* variables read elsewhere than as a setting (wattwise.distributed: the node's name)
OTHER_VARIABLES = ("WATTWISE_NODE_ID",)


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
    # a probe of this set-up for the advisor (wattwise.probe): its probe.json, or the ProbeResult itself
    probe: Any = None

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
        _warn_unknown_variables(names)
        return cls(**_validated(values))


_warned_variables: set[str] = set()  # unknown WATTWISE_* variables this process has warned about
_warned_lock = threading.Lock()


def known_variables(names: set[str] | None = None) -> list[str]:
    """Every ``WATTWISE_*`` environment variable wattwise reads."""
    names = names if names is not None else {f.name for f in dataclasses.fields(Config)}
    return sorted({ENV_PREFIX + name.upper() for name in names} | set(OTHER_VARIABLES))


def _warn_unknown_variables(names: set[str]) -> None:
    """Warn once per process about each ``WATTWISE_*`` variable wattwise does not read (a typo such as
    ``WATTWISE_COUNTRY``, which would otherwise be ignored without a word)."""
    known = known_variables(names)
    for variable in sorted(os.environ):
        if not variable.startswith(ENV_PREFIX) or variable in known:
            continue
        with _warned_lock:
            if variable in _warned_variables:
                continue
            _warned_variables.add(variable)
        close = difflib.get_close_matches(variable, known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(known)}"
        warnings.warn(f"wattwise: the environment variable {variable} is not a wattwise setting and is ignored; "
                      f"{hint}", UserWarning, stacklevel=4)


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
        parts = tuple(part.strip() for part in raw.split(",") if part.strip())
        if not parts:
            raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r}: {name} must name at least one of "
                             f"{', '.join(SOURCE_NAMES)}")
        return parts
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
        bound = (">= " if inclusive else "> ") + f"{lowest:g}"
        try:
            number = float(value)
        except OverflowError:  # an int beyond a float's range, such as 10**400
            raise ValueError(f"{name} must be a finite number {bound}, got an integer too large "
                             f"for a float ({_short(value)})") from None
        if not math.isfinite(number) or not (number >= lowest if inclusive else number > lowest):
            raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
        values[name] = number
    for name in ("country_iso_code", "region", "cloud_provider", "cloud_region", "output_dir", "project_name"):
        if name in values and not isinstance(values[name], str | os.PathLike):
            raise ValueError(f"{name} must be a string, got {values[name]!r}")
        if name in values:
            values[name] = os.fspath(values[name])
            if not values[name].strip():
                raise ValueError(f"{name} must be a non-empty string (leave it unset for the default), "
                                 f"got {values[name]!r}")
    if "country_iso_code" in values:
        code = values["country_iso_code"].strip().upper()
        if len(code) != 3 or not code.isalpha():
            raise ValueError(
                f"country_iso_code must be a 3-letter ISO 3166-1 alpha-3 code such as 'FRA' or 'USA', got {values['country_iso_code']!r}"
            )
        values["country_iso_code"] = code
    if "cloud_provider" in values:
        values["cloud_provider"] = values["cloud_provider"].strip().lower()
    check_location_arguments(**{name: values.get(name) for name in
                                ("country_iso_code", "region", "cloud_provider", "cloud_region")})
    if "sources" in values:
        values["sources"] = _checked_sources(values["sources"])
    if "on_budget" in values and values["on_budget"] not in ON_BUDGET:
        raise ValueError(f"on_budget must be one of {', '.join(ON_BUDGET)}, got {values['on_budget']!r}")
    if "registry" in values:
        if not isinstance(values["registry"], bool | str | os.PathLike) or values["registry"] == "":
            raise ValueError(f"registry must be True, False or a file path, got {values['registry']!r}")
        if not isinstance(values["registry"], bool):
            values["registry"] = os.fspath(values["registry"])
    if "probe" in values:
        values["probe"] = _checked_probe(values["probe"])
    for name in ("sync_cuda", "print_summary", "write_files"):
        if name in values and not isinstance(values[name], bool):
            raise ValueError(f"{name} must be True or False, got {values[name]!r}")
    return values


def _checked_sources(sources: Any) -> tuple[str, ...]:
    accepted = ", ".join(SOURCE_NAMES)
    if isinstance(sources, str):
        sources = (sources,) if sources.strip() else ()
    if not isinstance(sources, Iterable):
        raise ValueError(f"sources must be a name or a list of names among {accepted}, got {sources!r}")
    sources = tuple(sources)
    if not sources:
        raise ValueError(f"sources must name at least one of {accepted} (to measure nothing, do not track the run)")
    bad = [s for s in sources if s not in SOURCE_NAMES]
    if bad:
        raise ValueError(f"sources has unknown name(s) {bad}; accepted: {accepted}")
    return sources


def _checked_probe(probe: Any) -> Any:
    """A ``ProbeResult`` as it is, or the path of a readable ``probe.json`` as a string."""
    if isinstance(probe, ProbeResult):
        return probe
    if not isinstance(probe, str | os.PathLike) or not os.fspath(probe).strip():
        raise ValueError(f"probe must be a ProbeResult (wattwise.probe's result) or the path of its probe.json, "
                         f"got {probe!r}")
    path = os.fspath(probe)
    try:
        import json

        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except (OSError, ValueError) as exc:
        raise ValueError(f"probe={path!r} could not be read as a probe.json ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("candidates"), list):
        raise ValueError(f"probe={path!r} is not a probe.json (no candidates in it)")
    return path


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 24 else f"{text[:10]}...{text[-6:]}, {len(text)} digits"
