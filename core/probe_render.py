"""A probe's table (plain text, or rich on a terminal) and ``probe.png`` (projected energy per candidate).

Example::

    >>> print(result)                         # plain_table(result)
    >>> print_table(result)                   # rich on a terminal, else the plain text
    >>> write_png(result, "out/wattwise/probe.png")

The candidates are ranked by the projected energy of the whole planned run, the cheapest first; those
with no steady state, then those that failed, come last with the reason. matplotlib is imported only
to draw the figure, through its object API and the Agg canvas (no pyplot).
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .records import format_energy, format_mass

if TYPE_CHECKING:
    from .probe_result import ProbeCandidate, ProbeResult

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


def write_png(result: ProbeResult, path: str | os.PathLike) -> None:
    """Bars of the projected energy of each candidate's planned run, with its 90% interval, cheapest first."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .plot import energy_scale

    shown = [c for c in result.ranked() if c.ran and c.projected]
    failed = [c for c in result.candidates if not (c.ran and c.projected)]
    figure = Figure(figsize=(8.0, 1.2 + 0.45 * max(len(shown), 1)), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    if shown:
        scale, unit = energy_scale(max(c.projected_energy_high_j for c in shown))
        ys = list(range(len(shown)))[::-1]
        centres = [c.projected_energy_j / scale for c in shown]
        errors = [[(c.projected_energy_j - c.projected_energy_low_j) / scale for c in shown],
                  [(c.projected_energy_high_j - c.projected_energy_j) / scale for c in shown]]
        colours = ["#2a9d8f" if i == 0 else "#8ab17d" for i in range(len(shown))]
        axes.barh(ys, centres, xerr=errors, color=colours, capsize=3, ecolor="#264653")
        axes.set_yticks(ys, [c.label() for c in shown], fontsize=8)
        axes.set_xlabel(f"projected energy of the planned run ({unit}; 90% interval)")
    else:
        axes.text(0.5, 0.5, "no candidate could be projected", ha="center", va="center", transform=axes.transAxes)
        axes.set_yticks([])
    title = f"wattwise probe: {len(result.candidates)} candidates x {result.steps} steps"
    if failed:
        title += f" ({len(failed)} not shown: failed or not steady)"
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    from .report import write_atomically

    write_atomically(Path(path), buffer.getvalue())
