"""The end-of-training summary as tables: plain text for logs and pipes, rich on a terminal.

Example::

    >>> from wattwise.render import plain_summary, print_summary
    >>> print(plain_summary(report))          # the summary printed at the end of a run
    >>> print_summary(report)                 # rich tables when stdout is a terminal, else the plain text

Both show the same tables from the same rows: the headline (energy, CO2e, duration, steps), carbon
intensity, energy by component (measured or estimated, and from what) and by phase, forecast
accuracy (each milestone forecast against the measured total), the recommendations ranked by the
CO2e they would save, and the notes. ``rich`` is imported only when printing to a terminal.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .records import format_energy, format_mass

if TYPE_CHECKING:
    from .report import RunReport


@dataclass
class Table:
    """One table of the summary: ``right`` lists the right-aligned columns; ``details`` holds, per row,
    extra lines printed under it (the recommendations' change, evidence and estimate)."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    right: set[int] = field(default_factory=set)
    details: list[list[str]] = field(default_factory=list)


def headline(report: RunReport) -> list[str]:
    first = (
        f"wattwise: {format_energy(report.energy_j)} and {format_mass(report.emissions_kg)} CO2e "
        f"over {report.duration_s:.1f} s and {report.train_steps} training steps"
        + (" [PARTIAL: the run did not finish]" if report.partial else "")
        + (f" [STOPPED by the budget at step {report.budget['stopped_at_step']}]"
           if report.budget.get("stopped_at_step") is not None else "")
    )
    carbon = report.carbon
    second = (
        f"carbon: {carbon.get('g_per_kwh', 0):.0f} g CO2e/kWh ({carbon.get('location')}; {carbon.get('source')}), "
        f"PUE {carbon.get('pue', 1.0):g}"
    )
    return [first, second]


def tables(report: RunReport) -> list[Table]:
    total = report.energy_j or 1.0
    components = Table(
        "by component", ["component", "energy", "share", "figure", "source"],
        [
            [c.name, format_energy(c.energy_j), f"{100 * c.energy_j / total:.1f}%",
             "measured" if c.measured else "estimated", f"{c.source}: {c.detail}" if c.detail else c.source]
            for c in report.by_component.values()
        ],
        right={1, 2},
    )
    phases = Table(
        "by phase", ["phase", "energy", "share", "time", "steps", "per step", "samples", "per sample", "samples/J",
                     "tokens/J", "passes"],
        [
            [p.name, format_energy(p.energy_j), f"{100 * p.energy_j / total:.1f}%", f"{p.duration_s:.1f} s",
             str(p.steps), format_energy(p.j_per_step) if p.j_per_step is not None else "",
             str(p.samples) if p.samples else "", format_energy(p.j_per_sample) if p.j_per_sample else "",
             f"{p.samples_per_j:.3g}" if p.samples_per_j else "", f"{p.tokens_per_j:.3g}" if p.tokens_per_j else "",
             str(p.passes) if p.passes else ""]
            for p in report.by_phase.values()
        ],
        right=set(range(1, 11)),
    )
    result = [components, phases]
    made = [f for f in report.forecasts if f.get("energy_j") is not None]
    if made:
        result.append(Table(
            "forecast accuracy (the whole run's energy, forecast at each point of the plan)",
            ["at", "step", "forecast", "90% interval", "error"],
            [
                [f"{100 * f['fraction']:g}%", str(f["at_step"]), _forecast_cell(f),
                 f"{format_energy(f['energy_low_j'])} - {format_energy(f['energy_high_j'])}",
                 f"{f['error_pct']:+.1f}%" if f.get("error_pct") is not None else "n/a (run not complete)"]
                for f in made
            ],
            right={1, 2, 4},
        ))
    if report.recommendations:
        rows, details = [], []
        for i, r in enumerate(report.recommendations, 1):
            saving = f"{format_energy(r.saving_j)}" if r.saving_j else "same energy"
            rows.append([str(i), r.title, saving, format_mass(r.saving_kg), f"{r.saving_pct:.1f}%", r.confidence])
            details.append([
                f"change: {r.change_for(report.framework)}",
                f"evidence: {r.evidence}",
                f"estimate: {r.method}",
            ])
        result.append(Table(
            "recommendations, ranked by CO2e saved (savings overlap: do not add them up)",
            ["#", "recommendation", "saves", "CO2e", "of run", "confidence"], rows, right={2, 3, 4}, details=details,
        ))
    return result


def plain_summary(report: RunReport) -> str:
    """The summary as aligned plain-text tables."""
    first, second = headline(report)
    lines = [first, f"  {second}"]
    for table in tables(report):
        lines.append(f"  {table.title}:")
        lines.append(plain_table(table, indent="    "))
    lines.extend(f"  note: {note}" for note in report.notes)
    return "\n".join(lines)


def print_summary(report: RunReport, file: Any = None) -> None:
    """Print the summary to ``file`` (stdout): rich tables on a terminal, plain text otherwise."""
    file = file if file is not None else sys.stdout
    isatty = getattr(file, "isatty", None)
    if isatty is not None and isatty():
        try:
            _print_rich(report, file)
            return
        except ImportError:
            pass  # rich is a dependency, but a broken install still gets the plain text
    print(plain_summary(report), file=file, flush=True)


def _print_rich(report: RunReport, file: Any) -> None:
    from rich.console import Console
    from rich.table import Table as RichTable
    from rich.text import Text

    console = Console(file=file)
    first, second = headline(report)
    console.print(Text(first, style="bold"))
    console.print(Text(second, style="dim"))
    for table in tables(report):
        rich_table = RichTable(title=table.title, title_justify="left", title_style="bold", box=None, pad_edge=False)
        if table.details:  # recommendations: the figures stacked in one column, the text given the width
            rich_table.add_column("#", justify="right")
            rich_table.add_column("saves", justify="right", no_wrap=True)
            rich_table.add_column("recommendation", overflow="fold", ratio=1)
            for row, details in zip(table.rows, table.details, strict=True):
                number, title, saves, co2e, share, confidence = row
                figures = f"{saves}\n{co2e} CO2e\n{share} of run\n{confidence} confidence"
                text = Text(title, style="bold") + Text("\n" + "\n".join(details), style="dim")
                rich_table.add_row(number, figures, text)
            console.print(rich_table)
            continue
        for i, header in enumerate(table.headers):
            rich_table.add_column(header, justify="right" if i in table.right else "left",
                                  overflow="fold", no_wrap=i == 0)
        for row in table.rows:
            cells: list[Any] = list(row)
            if "figure" in table.headers:  # measured in green, estimated in yellow
                at = table.headers.index("figure")
                cells[at] = Text(row[at], style="green" if row[at] == "measured" else "yellow")
            rich_table.add_row(*cells)
        console.print(rich_table)
    for note in report.notes:
        console.print(Text(f"note: {note}", style="dim"))


# ---- saved runs: the `wattwise report` and `wattwise compare` commands ----------------------------


def find_report_json(path: str | os.PathLike) -> Path:
    """``path`` itself when it is a file, else ``report.json`` in it or in its ``wattwise/``; ValueError
    naming ``path`` when there is none."""
    path = Path(path)
    candidates = [path] if path.is_file() else [path / "report.json", path / "wattwise" / "report.json"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ValueError(f"path {str(path)!r} is not a report.json nor a directory holding one (or a wattwise/ with one)")


def load_report(path: str | os.PathLike) -> tuple[RunReport, Path]:
    """The saved report at ``path`` (see ``find_report_json``) and the file it came from. ValueError,
    one line naming the file, when it cannot be read or is not a report wattwise can show (a field of
    the wrong type, say); fields it does not know (a newer version's) are ignored."""
    from .report import RunReport

    json_path = find_report_json(path)
    try:
        text = json_path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"path {str(json_path)!r} is not a wattwise report (not UTF-8 text: {exc.reason} "
                         f"at byte {exc.start})") from None
    except OSError as exc:
        raise ValueError(f"path {str(json_path)!r} cannot be read ({exc.strerror or exc})") from None
    try:
        report = RunReport.from_dict(json.loads(text))
        plain_summary(report)  # what the commands show must be showable: a bad value deeper down is
        compare_table(report, report)  # refused here, naming the file, not a traceback later
    except json.JSONDecodeError as exc:
        raise ValueError(f"path {str(json_path)!r} is not a wattwise report (not JSON: {exc})") from None
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        detail = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
        raise ValueError(f"path {str(json_path)!r} is not a wattwise report ({detail})") from None
    return report, json_path


MIN_ID_PREFIX = 8
_RUN_ID = re.compile(r"[0-9A-Fa-f-]+")


def load_run(target: str | os.PathLike, *, registry: bool | str | os.PathLike | None = None) -> tuple[RunReport, Path]:
    """The saved report of ``target``, a path (see ``find_report_json``) or a run id as ``wattwise runs``
    lists it (the whole id, or a unique prefix of at least ``MIN_ID_PREFIX`` characters) looked up in the
    run registry (``registry=``, else ``WATTWISE_REGISTRY``, else the per-user one), and the file it came
    from. ValueError, one line naming ``target``, when there is none."""
    text = os.fspath(target)
    if Path(text).exists() or not _RUN_ID.fullmatch(text):
        return load_report(text)
    return load_report(find_run_report(text, registry=registry))


def find_run_report(run_id: str, *, registry: bool | str | os.PathLike | None = None) -> Path:
    """The ``report.json`` of the run ``run_id`` (or a unique prefix of it) in the run registry, from
    its recorded directory; ValueError naming ``run_id`` when it is unknown, ambiguous or wrote no files."""
    from .registry import Registry

    if len(run_id) < MIN_ID_PREFIX:
        raise ValueError(f"{run_id!r} is neither a path nor a run id: give at least {MIN_ID_PREFIX} characters "
                         "of an id that `wattwise runs` lists")
    opened = Registry.open(registry)
    if opened is None:
        raise ValueError(f"{run_id!r} is not a path, and run ids cannot be looked up: the run registry is off "
                         "(WATTWISE_REGISTRY)")
    found = opened.find(run_id)
    if not found:
        raise ValueError(f"no run {run_id!r}: not a path, nor a run id in the run registry {str(opened.path)!r} "
                         "(see `wattwise runs`)")
    if len(found) > 1:
        ids = ", ".join(r.run_id for r in found[:3]) + (", ..." if len(found) > 3 else "")
        raise ValueError(f"run id {run_id!r} is ambiguous: {len(found)} runs start with it ({ids}); give more of it")
    record = found[0]
    if not record.output_dir:
        raise ValueError(f"run {record.run_id!r} wrote no files (write_files=False, or not the main process): "
                         "no report to load")
    try:
        return find_report_json(record.output_dir)
    except ValueError:
        raise ValueError(f"run {record.run_id!r}: no report.json in its directory {record.output_dir!r} "
                         "(moved or deleted?)") from None


def compare_table(a: RunReport, b: RunReport, names: tuple[str, str] = ("A", "B")) -> Table:
    """Two runs side by side: totals, phases, components, forecast error and the top recommendation."""

    def change(x: float | None, y: float | None) -> str:
        if x is None or y is None or x == 0:
            return ""
        return f"{100 * (y - x) / x:+.1f}%"

    def energy_row(label: str, x: float | None, y: float | None) -> list[str]:
        show = lambda v: format_energy(v) if v is not None else "-"  # noqa: E731
        return [label, show(x), show(y), change(x, y)]

    rows = [
        ["run", a.run_id[:8], b.run_id[:8], ""],
        ["framework", a.framework, b.framework, ""],
        ["started", a.started_at, b.started_at, ""],
        energy_row("energy", a.energy_j, b.energy_j),
        ["CO2e", format_mass(a.emissions_kg), format_mass(b.emissions_kg), change(a.emissions_kg, b.emissions_kg)],
        ["grid", f"{a.carbon.get('g_per_kwh', 0):.0f} g/kWh", f"{b.carbon.get('g_per_kwh', 0):.0f} g/kWh", ""],
        ["duration", f"{a.duration_s:.1f} s", f"{b.duration_s:.1f} s", change(a.duration_s, b.duration_s)],
        ["training steps", str(a.train_steps), str(b.train_steps), change(a.train_steps, b.train_steps)],
    ]
    for phase in dict.fromkeys([*a.by_phase, *b.by_phase]):
        pa, pb = a.by_phase.get(phase), b.by_phase.get(phase)
        rows.append(energy_row(f"{phase}", pa.energy_j if pa else None, pb.energy_j if pb else None))
        rows.append(energy_row(f"{phase} per step", pa.j_per_step if pa else None, pb.j_per_step if pb else None))
        if (pa and pa.samples) or (pb and pb.samples):
            rows.append(energy_row(f"{phase} per sample", pa.j_per_sample if pa else None,
                                   pb.j_per_sample if pb else None))
            per_j = [p.samples_per_j if p else None for p in (pa, pb)]
            rows.append([f"{phase} samples per J", *(f"{v:.3g}" if v else "-" for v in per_j), change(*per_j)])
        if (pa and pa.tokens) or (pb and pb.tokens):
            per_j = [p.tokens_per_j if p else None for p in (pa, pb)]
            rows.append([f"{phase} tokens per J", *(f"{v:.3g}" if v else "-" for v in per_j), change(*per_j)])
    for name in dict.fromkeys([*a.by_component, *b.by_component]):
        ca, cb = a.by_component.get(name), b.by_component.get(name)
        flag = lambda c: "" if c is None else (" (measured)" if c.measured else " (estimated)")  # noqa: E731
        rows.append(energy_row(f"{name}{flag(ca or cb)}", ca.energy_j if ca else None, cb.energy_j if cb else None))
    rows.append(["forecast error", _last_error(a), _last_error(b), ""])
    rows.append(["recommendations", str(len(a.recommendations)), str(len(b.recommendations)), ""])
    rows.append(["top recommendation", _top(a), _top(b), ""])
    return Table("two runs side by side", ["", *names, "change"], rows, right={3})


def plain_table(table: Table, indent: str = "") -> str:
    """``table`` as aligned plain text, each row's details indented under it; the last column is not
    padded (it may be long: a component's source)."""
    widths = [
        max([len(table.headers[i]), *(len(row[i]) for row in table.rows)]) for i in range(len(table.headers))
    ]
    last = len(widths) - 1

    def line(cells: list[str]) -> str:
        parts = [
            c.rjust(widths[i]) if i in table.right else (c if i == last else c.ljust(widths[i]))
            for i, c in enumerate(cells)
        ]
        return indent + "  ".join(parts).rstrip()

    lines = [line(table.headers)]
    for i, row in enumerate(table.rows):
        lines.append(line(row))
        lines.extend(f"{indent}    {detail}" for detail in (table.details[i] if table.details else []))
    return "\n".join(lines)


def _forecast_cell(milestone: dict) -> str:
    """The forecast, and what it left out: scheduled evaluation passes none of which had run yet."""
    unmeasured = milestone.get("eval_passes_unmeasured") or 0
    cell = format_energy(milestone["energy_j"])
    return f"{cell} (without {unmeasured} eval passes, none run yet)" if unmeasured else cell


def _last_error(report: RunReport) -> str:
    scored = [f for f in report.forecasts if f.get("error_pct") is not None]
    if not scored:
        return "-"
    return f"{scored[-1]['error_pct']:+.1f}% at {100 * scored[-1]['fraction']:g}%"


def _top(report: RunReport) -> str:
    if not report.recommendations:
        return "-"
    top = report.recommendations[0]
    return f"{top.rule} ({format_mass(top.saving_kg)} CO2e)"
