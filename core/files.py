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
    """The files of one run under ``directory`` (``<output_dir>/wattwise``); ``write=False``: none.

    A file that cannot be written is one note per cause (a full disk, a read-only directory), naming
    every file that cause cost: the note made when ``steps.csv`` fails during the run is extended at
    the end, in the report, with ``report.json``, ``emissions.csv`` and ``report.png`` rather than
    repeated. A failed write leaves nothing half written (see ``StepsCsv``, ``write_atomically``)."""

    def __init__(self, directory: Path, *, write: bool, note: Callable[[str], None]) -> None:
        self.directory = directory
        self.write = write
        self._note = note
        self._steps: StepsCsv | None = None
        self._lost: dict[tuple, list[str]] = {}  # cause -> the files it cost, in order
        self._said: dict[tuple, str] = {}  # cause -> the note that says so

    def open_steps(self, components: Sequence[str]) -> None:
        if not self.write:
            return
        try:
            self._steps = StepsCsv.open(self.directory / "steps.csv", components)
        except OSError as exc:
            self._say([self._lose("steps.csv", exc)])

    def write_row(self, window: Window) -> None:
        if self._steps is None:
            return
        try:
            self._steps.write(window)
        except (OSError, ValueError) as exc:  # the rows so far stay, whole; no more are written
            rows = self._steps.rows
            self._steps.close()
            self._steps = None
            self._say([self._lose(f"steps.csv (from row {rows + 1} on)" if rows else "steps.csv", exc)])

    def close_steps(self) -> None:
        if self._steps is not None:
            self._steps.close()
            self._steps = None

    def write_report(self, report: RunReport) -> None:
        """``report.json``, ``emissions.csv`` and ``report.png``; what could not be written is said in
        ``report.notes`` (the report is still returned, never lost to a full disk)."""
        if not self.write:
            return
        names = ("report.json", "emissions.csv", "report.png")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._say([self._lose(name, exc) for name in names], report)
            return
        causes = []
        writers = (report.write_json, report.write_emissions_csv, lambda path: _write_png(report, path))
        for name, write in zip(names, writers, strict=True):
            try:
                write(self.directory / name)
            except Exception as exc:  # a full disk, no matplotlib: that file is lost, not the run
                causes.append(self._lose(name, exc))
        self._say(causes, report)

    def _lose(self, name: str, exc: BaseException) -> tuple:
        """Count ``name`` as lost to ``exc``'s cause; the cause."""
        if isinstance(exc, OSError) and exc.errno is not None:
            reason = exc.strerror or str(exc)
            culprit = os.fspath(exc.filename) if exc.filename is not None else None
            if culprit is not None and not _within(culprit, self.directory):  # another file failed
                reason = f"{reason}: {culprit}"
            cause: tuple = ("os", exc.errno, reason)
        else:
            cause = ("error", type(exc).__name__, str(exc))
        self._lost.setdefault(cause, []).append(name)
        return cause

    def _say(self, causes: list[tuple], report: RunReport | None = None) -> None:
        """One note per cause, naming every file it cost: a new cause is noted (logged once); one
        noted before has its note in ``report.notes`` replaced by the longer one, not repeated."""
        for cause in dict.fromkeys(causes):
            files = self._lost[cause]
            listed = files[0] if len(files) == 1 else f"{', '.join(files[:-1])} and {files[-1]}"
            reason = cause[2] if cause[0] == "os" else f"{cause[1]}: {cause[2]}"
            message = f"could not write {listed} in {self.directory} ({reason})"
            before = self._said.get(cause)
            self._said[cause] = message
            if before is None:
                self._note(message)
            if report is None:
                continue
            if before is not None and before in report.notes:
                report.notes[report.notes.index(before)] = message
            elif message not in report.notes:
                report.notes.append(message)

    def record(self, report: RunReport, *, registry: bool | str | None, params: int | None,
               tokens: float | None, precision: str | None) -> None:
        """Add the run to the registry (``registry=False`` or ``WATTWISE_REGISTRY=off``: not); a
        registry that cannot be written costs a note naming its file, never the run."""
        from .registry import Registry, RegistryError

        opened = None
        try:
            opened = Registry.open(registry)
            if opened is not None:
                where = self.directory if self.write else None
                opened.record(report, params=params, tokens=tokens, output_dir=where, precision=precision)
        except Exception as exc:
            why = str(exc) if isinstance(exc, RegistryError) else f"{type(exc).__name__}: {exc}"
            at = f" {opened.path}" if opened is not None and not isinstance(exc, RegistryError) else ""
            message = f"the run was not recorded in the registry{at} ({why})"
            self._note(message)
            report.notes.append(message)


def _within(path: str, directory: Path) -> bool:
    """Whether ``path`` is ``directory``, in it, or one of the directories above it (being created)."""
    path, directory_text = os.path.abspath(path), os.path.abspath(directory)
    return path == directory_text or path.startswith(directory_text + os.sep) or directory_text.startswith(
        path + os.sep)


def _write_png(report: RunReport, path: Path) -> None:
    from .plot import write_png  # matplotlib, only now

    write_png(report, path)
