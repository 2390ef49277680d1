"""``probe.png``: the projected energy of each candidate's planned run, with its 90% interval.

Example::

    >>> write_png(result, "out/wattwise/probe.png")

The candidates are drawn cheapest first; those with no steady state, or that failed, are counted in
the title. matplotlib is imported only to draw the figure, through its object API and the Agg canvas
(no pyplot). The table (``print(result)``, ``result.print_table()``) is ``probe_result.py``'s.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .probe_result import ProbeResult


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
