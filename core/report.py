"""RunReport: what a run consumed, where each figure comes from, and its writers.

Example::

    >>> report = callback.report                       # after trainer.train()
    >>> report.energy_kwh, report.emissions_kg
    >>> report.by_component["cpu"].measured            # False: CPU time x TDP estimate
    >>> report.by_phase["eval"].energy_j
    >>> RunReport.from_dict(report.to_dict()) == report
    True

``to_dict()`` is what ``report.json`` holds; ``write_emissions_csv`` appends one row with
codecarbon's ``emissions.csv`` columns so tools that read codecarbon's output read ours.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import io
import json
import os
import platform
import sys
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .carbon import J_PER_KWH
from .records import ComponentEnergy, PhaseEnergy, Recommendation

__all__ = ["ComponentEnergy", "PhaseEnergy", "RunReport", "emissions_csv_columns", "hardware_info"]


@dataclass
class RunReport:
    """Everything one tracked run consumed. SI units inside; kWh and kg where people read them."""

    run_id: str
    framework: str
    project_name: str
    started_at: str
    duration_s: float
    energy_j: float
    emissions_kg: float
    train_steps: int
    planned_steps: int | None
    by_component: dict[str, ComponentEnergy]
    by_phase: dict[str, PhaseEnergy]
    carbon: dict[str, Any]
    partial: bool = False
    notes: list[str] = field(default_factory=list)
    timeline: list[dict[str, float | str]] = field(default_factory=list)
    hardware: dict[str, Any] = field(default_factory=dict)
    forecasts: list[dict[str, Any]] = field(default_factory=list)
    budget: dict[str, Any] = field(default_factory=dict)
    ranks: list[dict[str, Any]] = field(default_factory=list)  # torch.distributed: each rank's node and components
    recommendations: list[Recommendation] = field(default_factory=list)  # ranked, largest saving first

    @property
    def energy_kwh(self) -> float:
        return self.energy_j / J_PER_KWH

    @property
    def measured_energy_j(self) -> float:
        """The part of the total read from hardware counters (the rest is estimated)."""
        return sum(c.energy_j for c in self.by_component.values() if c.measured)

    def efficiency(self) -> dict[str, dict[str, float]]:
        """Per phase: energy per sample, samples and tokens per joule, energy per step (those known)."""
        return {name: figures for name, p in self.by_phase.items() if (figures := p.efficiency())}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["efficiency"] = self.efficiency()
        data["energy_kwh"] = self.energy_kwh
        data["measured_energy_j"] = self.measured_energy_j
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunReport:
        """The report that ``to_dict()`` (``report.json``) holds. Fields it does not know, at the top
        level or in a record (a newer version's), are ignored; a field of the wrong type or a
        missing one raises ValueError naming it."""
        data = _known_fields(cls, data, "")
        data["by_component"] = {k: ComponentEnergy(**_known_fields(ComponentEnergy, v, f"by_component[{k!r}]."))
                                for k, v in data["by_component"].items()}
        data["by_phase"] = {k: PhaseEnergy(**_known_fields(PhaseEnergy, v, f"by_phase[{k!r}]."))
                            for k, v in data["by_phase"].items()}
        data["recommendations"] = [Recommendation.from_dict(_known_fields(Recommendation, r, f"recommendations[{i}]."))
                                   for i, r in enumerate(data.get("recommendations", []))]
        for i, point in enumerate(data.get("timeline", [])):  # the figure's points: when, how long, which phase
            for key, kind in (("t_s", float), ("duration_s", float), ("phase", str)):
                if not _matches(point.get(key), kind):
                    raise ValueError(f"field timeline[{i}].{key}: expected {_described(kind)}, "
                                     f"got {_shown(point.get(key))}")
        return cls(**data)

    # ---- writers -------------------------------------------------------------------------------

    def write_json(self, path: str | os.PathLike) -> Path:
        """``report.json``, written whole or not at all: readers never see half a report, and a write
        that fails leaves neither a half file nor ``report.json.tmp`` behind."""
        path = Path(path)
        write_atomically(path, (json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n").encode("utf-8"))
        return path

    def emissions_row(self) -> dict[str, Any]:
        """One row of codecarbon's ``emissions.csv``: energies in kWh and powers in W, PUE applied."""
        pue = float(self.carbon.get("pue", 1.0))
        duration_s = max(self.duration_s, 1e-9)
        kinds = {"cpu": ("cpu",), "gpu": ("gpu",), "ram": ("ram", "dram")}
        energy_kwh = {
            key: pue * sum(c.energy_j for c in self.by_component.values() if c.kind in group) / J_PER_KWH
            for key, group in kinds.items()
        }
        gpus = [c.detail.split(",")[0] for c in self.by_component.values() if c.kind == "gpu"]
        return {
            "timestamp": self.started_at,
            "project_name": self.project_name,
            "run_id": self.run_id,
            "experiment_id": "",
            "duration": self.duration_s,
            "emissions": self.emissions_kg,
            "emissions_rate": self.emissions_kg / duration_s,
            "cpu_power": energy_kwh["cpu"] * J_PER_KWH / duration_s,
            "gpu_power": energy_kwh["gpu"] * J_PER_KWH / duration_s,
            "ram_power": energy_kwh["ram"] * J_PER_KWH / duration_s,
            "cpu_energy": energy_kwh["cpu"],
            "gpu_energy": energy_kwh["gpu"],
            "ram_energy": energy_kwh["ram"],
            "energy_consumed": self.energy_kwh * pue,
            "country_name": self.carbon.get("country_name") or "",
            "country_iso_code": self.carbon.get("country_iso_code") or "",
            "region": self.carbon.get("region") or "",
            "cloud_provider": self.carbon.get("cloud_provider") or "",
            "cloud_region": self.carbon.get("cloud_region") or "",
            "os": platform.platform(),
            "python_version": platform.python_version(),
            "codecarbon_version": self.hardware.get("codecarbon_version", ""),
            "cpu_count": os.cpu_count(),
            "cpu_model": self.hardware.get("cpu_model", ""),
            "gpu_count": len(gpus),
            "gpu_model": ", ".join(sorted(set(gpus))),
            "ram_total_size": self.hardware.get("ram_total_gb", ""),
            "tracking_mode": "process",
            "on_cloud": "Y" if self.carbon.get("cloud_provider") else "N",
            "pue": pue,
        }

    def write_emissions_csv(self, path: str | os.PathLike) -> Path:
        """Append this run to ``emissions.csv`` (header first when the file is new), a whole row or nothing."""
        path = Path(path)
        columns = emissions_csv_columns()
        new = not path.exists() or path.stat().st_size == 0
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, restval="", extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(self.emissions_row())
        append_whole(path, text.getvalue().encode("utf-8"))
        return path


def write_atomically(path: str | os.PathLike, data: bytes) -> None:
    """``path`` holds ``data``, or is left as it was: written to ``<path>.tmp`` then renamed over it;
    on any failure the temporary file is removed and the error raised."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def append_whole(path: str | os.PathLike, data: bytes) -> None:
    """Append ``data`` to ``path`` whole or not at all: on failure the file is cut back to its size
    before (a file this call created is removed) and the error raised."""
    path = Path(path)
    existed = path.exists()
    size = path.stat().st_size if existed else 0
    try:
        with open(path, "ab", buffering=0) as f:
            view = memoryview(data)
            while view:
                written = f.write(view)
                if not written:
                    raise OSError(errno.EIO, f"{path.name} took none of the data")
                view = view[written:]
    except BaseException:
        with contextlib.suppress(OSError):
            if existed:
                os.truncate(path, size)
            else:
                path.unlink()
        raise


def emissions_csv_columns() -> list[str]:
    """codecarbon's own column list, read from its ``EmissionsData`` dataclass."""
    import dataclasses

    from codecarbon.output_methods.emissions_data import EmissionsData

    return [f.name for f in dataclasses.fields(EmissionsData)]


def hardware_info() -> dict[str, Any]:
    import psutil

    from .sources.model import cpu_model_name

    try:
        from importlib.metadata import version

        codecarbon_version = version("codecarbon")
    except Exception:
        codecarbon_version = ""
    return {
        "cpu_model": cpu_model_name(),
        "cpu_count": os.cpu_count(),
        "ram_total_gb": round(psutil.virtual_memory().total / 1e9, 2),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "codecarbon_version": codecarbon_version,
    }


# ---- reading report.json back ------------------------------------------------------------------------


def _known_fields(cls: type, data: Any, where: str) -> dict[str, Any]:
    """``data``'s fields that dataclass ``cls`` has (others are ignored: a newer file), each checked
    against its annotation; ValueError naming the field (``where`` + name) otherwise."""
    if not isinstance(data, dict):
        raise ValueError(f"{where.rstrip('.') or 'the file'}: expected an object, got {_shown(data)}")
    hints = typing.get_type_hints(cls)
    known: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ValueError(f"field {where}{f.name} is missing")
            continue
        value = data[f.name]
        if not _matches(value, hints[f.name]):
            raise ValueError(f"field {where}{f.name}: expected {_described(hints[f.name])}, got {_shown(value)}")
        known[f.name] = value
    return known


def _matches(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if dataclasses.is_dataclass(hint):  # a record: checked field by field by _known_fields
        return isinstance(value, dict)
    if origin is dict:
        return isinstance(value, dict) and (not args or all(
            _matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items()))
    if origin is list:
        return isinstance(value, list) and (not args or all(_matches(v, args[0]) for v in value))
    if origin is tuple:
        return isinstance(value, list | tuple)
    return isinstance(value, origin or hint)


def _described(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_described(arg) for arg in args)
    if dataclasses.is_dataclass(hint) or origin is dict or hint is dict:
        return "an object"
    if origin is list or hint is list:
        plural = {str: "strings", float: "numbers", int: "whole numbers"}.get(args[0] if args else None)
        return f"a list of {plural}" if plural else "a list"
    names = {type(None): "null", bool: "true or false", int: "a whole number", float: "a number", str: "a string"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def _shown(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, str | int | float | bool | type(None)) else type(value).__name__
    if isinstance(value, dict | list):
        text = "an object" if isinstance(value, dict) else "a list"
    return text if len(text) <= 40 else text[:37] + "..."
