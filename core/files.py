"""What a run leaves behind: its directory's files and its row in the run registry.

Example::

    >>> from wattwise.files import RunFiles
    >>> files = RunFiles(Path("out/wattwise"), write=True, note=print)
    >>> files.open_steps(["cpu", "ram"])      # steps.csv, one row per window as the run goes
    >>> files.write_row(window)
    >>> files.write_report(report)            # report.json, emissions.csv, report.png
    >>> files.record(report, registry=None, params=124_000_000, tokens=None, precision="bf16")

A run's directory is ``<output_dir>/wattwise/``; a later run in the same process whose output
directory is one an earlier run used goes to ``<output_dir>/<call>/wattwise/`` (then
``<call>-2``, ...), where ``<call>`` is the framework call (``train``, ``evaluate``, ``predict``,
``fit``, ``validate``, ``test``) or ``track``: no run overwrites another's files. A file that cannot
be written costs a note, never the run: the report is still returned.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from .report import RunReport
from .windows import StepsCsv, Window

_claimed: set[str] = set()  # run directories used in this process
_claim_lock = threading.Lock()


def claim_directory(output_dir: str | os.PathLike, call: str) -> Path:
    """The directory of a new run of ``call`` writing under ``output_dir``: ``<output_dir>/wattwise``
    unless a run of this process has it, else ``<output_dir>/<call>/wattwise`` (``<call>-2``, ...)."""
    base = Path(output_dir)
    candidate, n = base / "wattwise", 1
    with _claim_lock:
        while os.path.abspath(candidate) in _claimed:
            n += 1
            candidate = base / (call if n == 2 else f"{call}-{n - 1}") / "wattwise"
        _claimed.add(os.path.abspath(candidate))
    return candidate


class RunFiles:
    """The files of one run under ``directory`` (``<output_dir>/wattwise``); ``write=False``: none."""

    def __init__(self, directory: Path, *, write: bool, note: Callable[[str], None]) -> None:
        self.directory = directory
        self.write = write
        self._note = note
        self._steps: StepsCsv | None = None

    def open_steps(self, components: Sequence[str]) -> None:
        if not self.write:
            return
        try:
            self._steps = StepsCsv.open(self.directory / "steps.csv", components)
        except OSError as exc:
            self._note(f"cannot write steps.csv in {self.directory}: {exc}")

    def write_row(self, window: Window) -> None:
        if self._steps is None:
            return
        try:
            self._steps.write(window)
        except (OSError, ValueError) as exc:
            self._note(f"steps.csv stopped being written: {exc}")
            self._steps = None

    def close_steps(self) -> None:
        if self._steps is not None:
            self._steps.close()
            self._steps = None

    def write_report(self, report: RunReport) -> None:
        """``report.json``, ``emissions.csv`` and ``report.png``."""
        if not self.write:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            report.write_json(self.directory / "report.json")
            report.write_emissions_csv(self.directory / "emissions.csv")
        except Exception as exc:  # never lose the run to a full disk: the report is still returned
            self._note(f"could not write files in {self.directory}: {exc}")
        try:
            from .plot import write_png

            write_png(report, self.directory / "report.png")
        except Exception as exc:  # no matplotlib, say: the figure is lost, not the run
            self._note(f"could not draw report.png: {exc}")

    def record(self, report: RunReport, *, registry: bool | str | None, params: int | None,
               tokens: float | None, precision: str | None) -> None:
        """Add the run to the registry (``registry=False`` or ``WATTWISE_REGISTRY=off``: not); a
        registry that cannot be written costs a note, never the run."""
        try:
            from .registry import Registry

            opened = Registry.open(registry)
            if opened is not None:
                where = self.directory if self.write else None
                opened.record(report, params=params, tokens=tokens, output_dir=where, precision=precision)
        except Exception as exc:
            message = f"the run was not recorded in the registry ({type(exc).__name__}: {exc})"
            self._note(message)
            report.notes.append(message)
