"""The Hugging Face Hub's ``co2_eq_emissions`` model-card metadata, from a run's report.

Example::

    >>> from wattwise.modelcard import co2_eq_emissions, write_co2_eq_emissions
    >>> co2_eq_emissions(report, training_type="fine-tuning")
    {'emissions': 1.15, 'source': 'wattwise ...', 'training_type': 'fine-tuning',
     'geographical_location': 'France', 'hardware_used': '1 x AMD EPYC (CPU)'}
    >>> write_co2_eq_emissions("out/README.md", report, training_type="fine-tuning")

The fields are the Hub's (https://huggingface.co/docs/hub/model-cards-co2): ``emissions`` in grams
of CO2e, ``source``, ``training_type`` (``pre-training`` or ``fine-tuning``),
``geographical_location`` and ``hardware_used``. ``write_co2_eq_emissions`` merges them into the
YAML block of an existing ``README.md`` (every other key and the Markdown body are kept) or starts
one, with ``huggingface_hub``'s own ``metadata_load``/``metadata_save``.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .report import RunReport

TRAINING_TYPES = ("pre-training", "fine-tuning")


def co2_eq_emissions(report: RunReport, *, training_type: str) -> dict[str, Any]:
    """The ``co2_eq_emissions`` mapping for ``report`` (emissions in grams)."""
    if training_type not in TRAINING_TYPES:
        raise ValueError(f"training_type must be one of {', '.join(TRAINING_TYPES)}, got {training_type!r}")
    measured = [c.name for c in report.by_component.values() if c.measured]
    estimated = [c.name for c in report.by_component.values() if not c.measured]
    how = "; ".join(
        part for part in (
            f"measured: {', '.join(measured)}" if measured else "",
            f"estimated: {', '.join(estimated)}" if estimated else "",
        ) if part
    )
    from . import __version__

    return {
        "emissions": report.emissions_kg * 1000.0,
        "source": f"wattwise {__version__} ({how}; {report.carbon.get('g_per_kwh', 0):.0f} g CO2e/kWh from "
        f"{report.carbon.get('source')}, PUE {report.carbon.get('pue', 1.0):g})"
        + (" [partial run]" if report.partial else ""),
        "training_type": training_type,
        "geographical_location": str(report.carbon.get("location") or "unknown"),
        "hardware_used": hardware_used(report),
    }


def hardware_used(report: RunReport) -> str:
    """``2 x NVIDIA A100-SXM4-80GB``; the CPU (``1 x AMD EPYC (CPU)``) when no GPU was measured."""
    gpus = Counter(c.detail.split(",")[0] or c.name for c in report.by_component.values() if c.kind == "gpu")
    if gpus:
        return ", ".join(f"{n} x {model}" for model, n in gpus.items())
    nodes = len({r.get("node") for r in report.ranks}) or 1  # a run over torch.distributed lists its ranks
    return f"{nodes} x {report.hardware.get('cpu_model') or 'CPU'} (CPU)"


def write_co2_eq_emissions(readme: str | os.PathLike, report: RunReport, *, training_type: str) -> Path:
    """Set ``co2_eq_emissions`` in the model card at ``readme``, creating the card if need be."""
    from huggingface_hub.repocard import metadata_load, metadata_save

    path = Path(readme)
    metadata = (metadata_load(path) if path.is_file() else None) or {}
    metadata["co2_eq_emissions"] = co2_eq_emissions(report, training_type=training_type)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata_save(path, metadata)
    return path
