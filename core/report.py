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

import csv
import json
import os
import platform
import sys
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

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["energy_kwh"] = self.energy_kwh
        data["measured_energy_j"] = self.measured_energy_j
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunReport:
        data = dict(data)
        data.pop("energy_kwh", None)
        data.pop("measured_energy_j", None)
        data["by_component"] = {k: ComponentEnergy(**v) for k, v in data["by_component"].items()}
        data["by_phase"] = {k: PhaseEnergy(**v) for k, v in data["by_phase"].items()}
        data["recommendations"] = [Recommendation.from_dict(r) for r in data.get("recommendations", [])]
        return cls(**data)

    # ---- writers -------------------------------------------------------------------------------

    def write_json(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        os.replace(tmp, path)  # readers never see half a report
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
        """Append this run to ``emissions.csv`` (header first when the file is new)."""
        path = Path(path)
        columns = emissions_csv_columns()
        row = self.emissions_row()
        new = not path.exists() or path.stat().st_size == 0
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns, restval="", extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
        return path


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
