"""The plain records a run's report is made of, and how their units are written for people.

Example::

    >>> from wattwise.records import PhaseEnergy, format_energy
    >>> PhaseEnergy("train", energy_j=7200.0, steps=100).j_per_step
    72.0
    >>> format_energy(7200.0)
    '2 Wh'

Data only: this module imports nothing of wattwise but the unit constant, so the report, the
advisor, the renderers and the plot can all use it without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .carbon import J_PER_KWH

__all__ = ["ComponentEnergy", "PhaseEnergy", "Recommendation", "format_energy", "format_mass"]


@dataclass
class ComponentEnergy:
    """Energy of one component (``gpu:0``, ``cpu:0``, ``dram:0``, ``cpu``, ``ram``) over the run."""

    name: str
    kind: str
    energy_j: float
    measured: bool
    source: str
    scope: str
    detail: str = ""

    @property
    def energy_kwh(self) -> float:
        return self.energy_j / J_PER_KWH


@dataclass
class PhaseEnergy:
    """Energy and time spent in one phase: ``train``, ``eval``, ``predict`` (and ``other``)."""

    name: str
    energy_j: float = 0.0
    duration_s: float = 0.0
    steps: int = 0
    passes: int = 0
    samples: int = 0
    tokens: float = 0.0  # when the framework counts them (HF include_num_input_tokens_seen, track(tokens=))

    @property
    def energy_kwh(self) -> float:
        return self.energy_j / J_PER_KWH

    @property
    def j_per_step(self) -> float | None:
        """Joules per step: per optimizer step in training, per batch in a pass."""
        return self.energy_j / self.steps if self.steps else None

    @property
    def j_per_sample(self) -> float | None:
        return self.energy_j / self.samples if self.samples else None

    @property
    def samples_per_j(self) -> float | None:
        return self.samples / self.energy_j if self.samples and self.energy_j > 0 else None

    @property
    def tokens_per_j(self) -> float | None:
        return self.tokens / self.energy_j if self.tokens and self.energy_j > 0 else None

    def efficiency(self) -> dict[str, float]:
        """The efficiency metrics of the study behind wattwise (Mavromatis et al. 2024): energy per
        sample, samples per joule, tokens per joule, energy per step; only those this phase knows."""
        figures = {"j_per_sample": self.j_per_sample, "samples_per_j": self.samples_per_j,
                   "tokens_per_j": self.tokens_per_j, "j_per_step": self.j_per_step}
        return {name: value for name, value in figures.items() if value is not None}


@dataclass
class Recommendation:
    """One change for next time, with its evidence and its estimated saving."""

    rule: str
    title: str
    change: dict[str, str]  # framework ("transformers", "lightning", "keras", or "any") -> what to write
    evidence: str
    saving_j: float
    saving_kg: float
    saving_pct: float  # of this run's energy (of its CO2e for a carbon-only change)
    method: str  # how the saving was estimated
    confidence: str
    source: str

    @property
    def saving_kwh(self) -> float:
        return self.saving_j / J_PER_KWH

    def change_for(self, framework: str | None) -> str:
        """The change in ``framework``'s terms, else the framework-independent one, else all of them."""
        if framework in self.change:
            return self.change[framework]
        if "any" in self.change:
            return self.change["any"]
        return "; ".join(f"{name}: {text}" for name, text in self.change.items())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recommendation:
        return cls(**data)


def format_energy(energy_j: float) -> str:
    """``12.3 J``, ``4.56 Wh`` or ``7.89 kWh``, whichever reads best."""
    if abs(energy_j) < 3600.0:
        return f"{energy_j:.3g} J"
    if abs(energy_j) < J_PER_KWH:
        return f"{energy_j / 3600.0:.3g} Wh"
    return f"{energy_j / J_PER_KWH:.3g} kWh"


def format_mass(mass_kg: float) -> str:
    """``0.12 mg``, ``3.4 g`` or ``5.6 kg``."""
    if abs(mass_kg) < 1e-3:
        return f"{mass_kg * 1e6:.3g} mg"
    if abs(mass_kg) < 1.0:
        return f"{mass_kg * 1e3:.3g} g"
    return f"{mass_kg:.3g} kg"
