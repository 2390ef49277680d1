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
it could not run (the others went on). ``ProbeResult.from_dict`` reads ``probe.json`` back. The
table (plain text, or rich on a terminal) is drawn here too, ranked by the projected energy of the
whole planned run, the cheapest first; those with no steady state, then those that failed, come
last with the reason. ``probe.png`` is ``probe_render.py``'s.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .records import format_energy, format_mass


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
        print_table(self, file)

    def __str__(self) -> str:
        return plain_table(self)

    def __repr__(self) -> str:
        best = self.best
        chosen = f"best {best.label()} at {format_energy(best.projected_energy_j)}" if best else "none projected"
        return f"ProbeResult({len(self.candidates)} candidates x {self.steps} steps, {chosen})"


# ---- the table ----------------------------------------------------------------------------------

HEADERS = ["#", "configuration", "energy (90% interval)", "time", "CO2e", "J/sample", "ms/sample", "steps",
           "loss*"]
RIGHT = {0, 2, 3, 4, 5, 6, 7, 8}
LOSS_CAUTION = "a few steps say little about the quality a whole run reaches: compare losses with care"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


def _number(value: float | None, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value * scale:.3g}"


def _row(rank: str, c: ProbeCandidate) -> list[str]:
    if c.error is not None:
        return [rank, c.label(), f"failed: {c.error}", "", "", "", "", "", ""]
    energy = "-"
    if c.projected_energy_j is not None:
        energy = (f"{format_energy(c.projected_energy_j)} ({format_energy(c.projected_energy_low_j)}"
                  f"-{format_energy(c.projected_energy_high_j)})")
    return [
        rank, c.label(), energy, _duration(c.projected_duration_s),
        format_mass(c.projected_emissions_kg) if c.projected_emissions_kg is not None else "-",
        _number(c.energy_per_sample_j), _number(c.duration_per_sample_s, 1e3),
        str(c.planned_steps) if c.planned_steps is not None else "-", _number(c.loss),
    ]


def rows(result: ProbeResult) -> list[list[str]]:
    """The table's rows, ranked: ``#`` is the rank among the projected candidates (``-`` for the others)."""
    table, rank = [], 0
    for c in result.ranked():
        if c.ran and c.projected:
            rank += 1
        table.append(_row(str(rank) if c.ran and c.projected else "-", c))
    return table


def headline(result: ProbeResult) -> list[str]:
    best = result.best
    share = result.probe_share_of_best
    own = f"the probe used {format_energy(result.probe_energy_j)} and {_duration(result.probe_duration_s)}"
    if share is not None:
        percent = 100 * share
        own += f" ({percent:.0f}%" if percent >= 10 else f" ({percent:.2g}%"
        own += " of the best candidate's projected run)"
    lines = [
        f"wattwise probe: {len(result.candidates)} candidates x {result.steps} steps ({result.framework}"
        + (f", {result.hardware}" if result.hardware else "") + f"); {own}",
        "each row: the whole planned run with that configuration, projected from its steady steps",
    ]
    if best is not None:
        lines.append(f"best: {best.label()}")
    return lines


def footer(result: ProbeResult) -> list[str]:
    lines = [f"* loss after {result.steps} steps: {LOSS_CAUTION}"]
    lines += [f"note: {c.label()}: {c.note}" for c in result.candidates if c.note and c.ran]
    lines += [f"note: {note}" for note in result.notes]
    if result.output_dir:
        lines.append(f"files: {result.output_dir}")
    return lines


def plain_table(result: ProbeResult) -> str:
    table = rows(result)
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(HEADERS)]
    # a failed candidate's reason spans the figure columns: it does not widen them
    for i in range(2, len(HEADERS)):
        widths[i] = max([len(HEADERS[i])] + [len(r[i]) for r in table if not r[i].startswith("failed: ")])

    def line(cells: list[str]) -> str:
        if cells[2].startswith("failed: "):
            return f"{cells[0].rjust(widths[0])}  {cells[1].ljust(widths[1])}  {cells[2]}"
        return "  ".join(c.rjust(w) if i in RIGHT else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return "\n".join([*headline(result), line(HEADERS), *(line(r) for r in table), *footer(result)])


def print_table(result: ProbeResult, file: Any = None) -> None:
    """Print the table to ``file`` (stdout): rich on a terminal, plain text otherwise."""
    file = file if file is not None else sys.stdout
    isatty = getattr(file, "isatty", None)
    if isatty is not None and isatty():
        try:
            from rich.console import Console
            from rich.table import Table

            console = Console(file=file)
            first, *rest = headline(result)
            console.print(first, style="bold")
            for text in rest:
                console.print(text, style="dim")
            table = Table(box=None, pad_edge=False)
            for i, header in enumerate(HEADERS):
                table.add_column(header, justify="right" if i in RIGHT else "left")
            for r in rows(result):
                table.add_row(*r, style="red" if r[2].startswith("failed: ") else None)
            console.print(table)
            for text in footer(result):
                console.print(text, style="dim")
            return
        except ImportError:
            pass
    print(plain_table(result), file=file, flush=True)
