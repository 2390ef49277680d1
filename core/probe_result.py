"""What a probe found: each candidate configuration measured for a few steps, and its whole run projected.

Example::

    >>> result = wattwise.probe(run_steps, {"batch_size": [8, 16, 32]}, steps=40, planned_samples=50_000)
    >>> print(result)                        # the table, ranked by the projected energy of the planned run
    >>> result.print_table()                 # the same, as rich tables on a terminal
    >>> result.best.config                   # {"batch_size": 32}: the cheapest candidate that ran
    >>> result.best.projected_energy_j, result.best.projected_energy_low_j, result.best.projected_energy_high_j
    >>> result.to_dict()                     # what probe.json holds

``ProbeCandidate`` is one configuration: what was measured in its steps (steady state, after the
forecaster's warm-up rule) and the projection of the whole planned run with it; ``error`` says why
it could not run (the others went on). ``ProbeResult.from_dict`` reads ``probe.json`` back.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .probe_render import LOSS_CAUTION, plain_table
from .records import format_energy


@dataclass
class ProbeCandidate:
    """One configuration: measured for a few steps, then projected over the planned run.

    Example: ``candidate.config`` ``{"per_device_train_batch_size": 32, "bf16": True}``,
    ``candidate.energy_per_sample_j`` ``0.8``, ``candidate.projected_energy_j`` ``1.2e6`` (with
    ``projected_energy_low_j``/``_high_j``, the 90% interval). Figures are None when not known: all
    of them when ``error`` is set, the projections when no steady state was reached (``note``).
    """

    config: dict[str, Any]
    setup: dict[str, Any] = field(default_factory=dict)  # batch_size and precision as a run would describe them
    steps: int = 0  # training steps measured
    samples: int = 0  # training samples in them
    warmup_steps: int | None = None  # of which left out as warm-up
    energy_per_step_j: float | None = None  # steady state (recent half of the steady steps)
    duration_per_step_s: float | None = None
    energy_per_sample_j: float | None = None
    duration_per_sample_s: float | None = None
    planned_steps: int | None = None  # of the whole run with this configuration
    eval_passes: int = 0  # evaluation passes in it
    eval_pass_energy_j: float | None = None  # one of them, projected from the batches measured
    projected_energy_j: float | None = None  # the whole planned run, evaluation passes included
    projected_energy_low_j: float | None = None
    projected_energy_high_j: float | None = None
    projected_duration_s: float | None = None
    projected_emissions_kg: float | None = None
    loss: float | None = None  # at the end of its steps: see LOSS_CAUTION
    probe_energy_j: float = 0.0  # this candidate's own measurement (its steps, evaluation batches, set-up)
    probe_duration_s: float = 0.0
    error: str | None = None  # why it could not run (out of memory, say)
    note: str | None = None  # why a figure is missing

    @property
    def ran(self) -> bool:
        return self.error is None

    @property
    def projected(self) -> bool:
        return self.projected_energy_j is not None

    def label(self) -> str:
        """``per_device_train_batch_size=32, bf16=True``."""
        return ", ".join(f"{k}={v}" for k, v in self.config.items()) or "(as configured)"


@dataclass(repr=False)
class ProbeResult:
    """Every candidate of one probe, the probe's own cost, and where its files went.

    Example: ``result.best`` (the cheapest candidate that ran), ``result.ranked()`` (cheapest first;
    those without a projection, then those that failed, last), ``result.probe_energy_j``,
    ``print(result)``, ``result.to_dict()``.
    """

    candidates: list[ProbeCandidate]
    framework: str
    steps: int  # training steps measured per candidate
    model: dict[str, Any] = field(default_factory=dict)  # {"class": ..., "params": ...} when known
    hardware: str = ""
    created_at: str = ""
    probe_energy_j: float = 0.0  # the whole probe, set-up between candidates included
    probe_duration_s: float = 0.0
    probe_emissions_kg: float = 0.0
    carbon: dict[str, Any] = field(default_factory=dict)
    output_dir: str | None = None  # where probe.json and probe.png went
    notes: list[str] = field(default_factory=list)

    @property
    def best(self) -> ProbeCandidate | None:
        """The candidate whose planned run is projected to cost least (None when none could be projected)."""
        projected = [c for c in self.candidates if c.ran and c.projected]
        return min(projected, key=lambda c: c.projected_energy_j) if projected else None

    def ranked(self) -> list[ProbeCandidate]:
        """Cheapest projected first, then those that ran without a projection, then those that failed."""
        def key(c: ProbeCandidate) -> tuple:
            return (not c.ran, not c.projected, c.projected_energy_j or 0.0)

        return sorted(self.candidates, key=key)

    @property
    def probe_share_of_best(self) -> float | None:
        """The probe's own energy as a share of the best candidate's projected run."""
        best = self.best
        if best is None or not best.projected_energy_j:
            return None
        return self.probe_energy_j / best.projected_energy_j

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        best = self.best
        data["best"] = self.candidates.index(best) if best is not None else None
        data["loss_caution"] = LOSS_CAUTION
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeResult:
        """A result read back from ``probe.json`` (fields a newer version added are ignored)."""
        names = {f.name for f in dataclasses.fields(ProbeCandidate)}
        candidates = [ProbeCandidate(**{k: v for k, v in c.items() if k in names}) for c in data.get("candidates", [])]
        own = {f.name for f in dataclasses.fields(cls)} - {"candidates"}
        return cls(candidates=candidates, **{k: v for k, v in data.items() if k in own})

    def write_json(self, path: str | os.PathLike) -> None:
        from .report import write_atomically

        text = json.dumps(self.to_dict(), indent=2, default=str, allow_nan=False)
        write_atomically(Path(path), text.encode())

    def print_table(self, file: Any = None) -> None:
        """The table on ``file`` (stdout): rich on a terminal, plain text otherwise (``print(result)``: plain)."""
        from .probe_render import print_table

        print_table(self, file)

    def __str__(self) -> str:
        return plain_table(self)

    def __repr__(self) -> str:
        best = self.best
        chosen = f"best {best.label()} at {format_energy(best.projected_energy_j)}" if best else "none projected"
        return f"ProbeResult({len(self.candidates)} candidates x {self.steps} steps, {chosen})"
