"""``report.png``: where the power went over the run, and how the energy added up against the forecasts.

Example::

    >>> from wattwise.plot import write_png
    >>> write_png(report, "runs/hf/wattwise/report.png")     # or report.write_png(...)

Top panel: power by component over time (stacked, from ``report.timeline``: each window's joules
over its duration), measured components drawn solid and estimated ones hatched. Bottom panel: the
cumulative energy, the final measured total, and each milestone forecast of the whole run (at the
run time it predicted, with its 90% interval), the latest one also as a band. Evaluation, test and
prediction phases are shaded in both. matplotlib is imported here only, through its object API and
the Agg canvas: no pyplot, no global backend switch, no window.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .report import RunReport

PHASE_COLOURS = {"eval": "#f4a261", "test": "#e76f51", "predict": "#9b5de5"}
COMPONENT_COLOURS = ("#2a9d8f", "#264653", "#e9c46a", "#8ab17d", "#457b9d", "#b56576", "#6d6875", "#adb5bd")


def energy_scale(energy_j: float) -> tuple[float, str]:
    """Divisor and unit for an axis that reaches ``energy_j``: J, Wh or kWh."""
    if energy_j < 3600.0:
        return 1.0, "J"
    if energy_j < 3.6e6:
        return 3600.0, "Wh"
    return 3.6e6, "kWh"


def phase_spans(timeline: list[dict]) -> list[tuple[str, float, float]]:
    """Contiguous runs of the same phase as (phase, start_s, end_s), in time order."""
    spans: list[tuple[str, float, float]] = []
    for point in timeline:
        phase, start, end = str(point["phase"]), float(point["t_s"]), float(point["t_s"]) + float(point["duration_s"])
        if spans and spans[-1][0] == phase:
            spans[-1] = (phase, spans[-1][1], end)
        else:
            spans.append((phase, start, end))
    return spans


def merge_short(timeline: list[dict], min_duration_s: float) -> list[dict]:
    """The timeline with each window shorter than ``min_duration_s`` merged into the one before it.

    A window of a few milliseconds (the last read of a run, a phase change) holds a CPU-time tick or
    a counter update of a longer span: its power would be a spike that says nothing. Energy is kept.
    """
    merged: list[dict] = []
    for point in timeline:
        if merged and float(point["duration_s"]) < min_duration_s:
            previous = merged[-1]
            for key, value in point.items():
                if key not in ("t_s", "phase"):
                    previous[key] = float(previous.get(key, 0.0)) + float(value)
        else:
            merged.append(dict(point))
    return merged


def write_png(report: RunReport, path: str | os.PathLike, *, dpi: int = 110) -> Path:
    """Draw the report's figure into ``path`` (PNG, whatever its suffix): the whole image or, when it
    cannot be written, no file at all (OSError raised)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    path = Path(path)
    timeline = sorted(report.timeline, key=lambda p: float(p["t_s"]))
    components = list(report.by_component.values())
    figure = Figure(figsize=(9.0, 7.6), layout="constrained")
    FigureCanvasAgg(figure)
    power_ax, energy_ax = figure.subplots(2, 1, sharex=True, height_ratios=(1.0, 1.1))
    figure.suptitle(_title(report), fontsize=11)

    spans = phase_spans(timeline)
    timeline = merge_short(timeline, report.duration_s / 200.0)
    starts = [float(p["t_s"]) for p in timeline]
    ends = [float(p["t_s"]) + float(p["duration_s"]) for p in timeline]
    if timeline:
        edges = starts + [ends[-1]]
        bottom = [0.0] * len(timeline)
        for i, c in enumerate(components):
            watts = [float(p.get(c.name, 0.0)) / float(p["duration_s"]) if float(p["duration_s"]) > 0 else 0.0
                     for p in timeline]
            top = [b + w for b, w in zip(bottom, watts, strict=True)]
            power_ax.stairs(top, edges, baseline=bottom, fill=True, color=COMPONENT_COLOURS[i % len(COMPONENT_COLOURS)],
                            alpha=0.9 if c.measured else 0.6, hatch=None if c.measured else "///",
                            label=f"{c.name} ({'measured' if c.measured else 'estimated'})")
            bottom = top
    power_ax.set_ylabel("power (W)")
    power_ax.set_ylim(bottom=0)
    power_ax.grid(alpha=0.3)

    made = [f for f in report.forecasts if f.get("energy_j") is not None and f.get("duration_s")]
    # the axes cover the run: a forecast that was far off (early, before the level was known) is drawn
    # at the edge with an arrow and its value in the legend, not allowed to squeeze the run
    x_end, y_top_j = figure_extent(report, ends[-1] if timeline else 0.0)
    scale, unit = energy_scale(y_top_j)
    cumulative, total = [0.0], 0.0
    for p in timeline:
        total += sum(float(p.get(c.name, 0.0)) for c in components)
        cumulative.append(total / scale)
    energy_ax.plot([starts[0]] + ends if timeline else [0.0], cumulative, color="#264653", lw=2,
                   label="energy measured so far")
    energy_ax.scatter([report.duration_s], [report.energy_j / scale], color="#264653", zorder=5, s=30,
                      label=f"measured total {report.energy_j / scale:.3g} {unit}")
    for k, f in enumerate(made):
        shade = 0.35 + 0.6 * (k + 1) / len(made)
        colour = (0.85 * (1 - shade), 0.3, 0.6 * shade)
        value, low, high = f["energy_j"] / scale, f["energy_low_j"] / scale, f["energy_high_j"] / scale
        x = min(f["duration_s"], x_end / 1.04)
        top = y_top_j / scale
        words = f"forecast at {100 * f['fraction']:g}% of the plan: {value:.3g} {unit} [{low:.3g}, {high:.3g}]"
        beyond = []
        if f["duration_s"] > x_end / 1.04:
            beyond.append(f"ends at {f['duration_s']:.0f} s")
        if value > top:
            beyond.append("off the scale")
        if beyond:
            energy_ax.scatter([x], [min(value, top)], marker=">" if value <= top else "^", color=colour, s=45,
                              zorder=6, label=f"{words} ({'; '.join(beyond)})")
            continue
        energy_ax.errorbar([x], [value], yerr=[[value - low], [min(high, top) - value]], fmt="D", color=colour,
                           capsize=4, ms=5, label=words)
    if made:
        last = made[-1]
        energy_ax.axhspan(min(last["energy_low_j"], y_top_j) / scale, min(last["energy_high_j"], y_top_j) / scale,
                          color="#9d4edd", alpha=0.12,
                          label="latest forecast's 90% interval for the whole run")
        if last["energy_j"] <= y_top_j:
            energy_ax.axhline(last["energy_j"] / scale, color="#9d4edd", lw=1, ls="--")
    energy_ax.set_xlim(0.0, x_end)
    energy_ax.set_ylim(0.0, y_top_j / scale)
    energy_ax.set_ylabel(f"cumulative energy ({unit})")
    energy_ax.set_xlabel("time since training began (s)")
    energy_ax.grid(alpha=0.3)

    shaded: set[str] = set()
    for phase, start, end in spans:
        if phase in PHASE_COLOURS:
            for ax in (power_ax, energy_ax):
                ax.axvspan(start, end, color=PHASE_COLOURS[phase], alpha=0.25, lw=0)
            shaded.add(phase)
    handles, labels = power_ax.get_legend_handles_labels()
    for phase in sorted(shaded):
        handles.append(Patch(color=PHASE_COLOURS[phase], alpha=0.4))
        labels.append(f"{phase} phase")
    power_ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    energy_ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.16), fontsize=7.5, frameon=False, ncol=2,
                     title="each forecast of the whole run's energy is drawn at the run time it predicted "
                           "(a marker at the edge: beyond the axes)", title_fontsize=7.5)
    from .report import write_atomically

    image = io.BytesIO()
    figure.savefig(image, format="png", dpi=dpi)  # drawn whole first: a failure leaves no empty file
    write_atomically(path, image.getvalue())
    return path


def figure_extent(report: RunReport, last_window_end_s: float = 0.0) -> tuple[float, float]:
    """The time (s) and energy (J) the lower axes reach: the run itself, and the forecasts whose
    interval stays within twice the measured total (a forecast far off is drawn at the edge)."""
    made = [f for f in report.forecasts if f.get("energy_j") is not None and f.get("duration_s")]
    x_end = max(report.duration_s, last_window_end_s, 1e-9) * 1.04
    near = [f["energy_high_j"] for f in made if f["energy_high_j"] <= 2 * report.energy_j]
    return x_end, max(report.energy_j, *near, 1e-12) * 1.08


def _title(report: RunReport) -> str:
    from .records import format_energy, format_mass

    return (
        f"{report.framework}: {format_energy(report.energy_j)}, {format_mass(report.emissions_kg)} CO2e "
        f"({report.carbon.get('location')}), {report.duration_s:.1f} s, {report.train_steps} steps"
        + (" (partial)" if report.partial else "")
    )
