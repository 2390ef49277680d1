"""The runs of one ``EnergyCallback``: one per framework call, each with its own directory and report.

Example::

    >>> series = RunSeries(callback, framework="lightning")     # checks the options now
    >>> run = series.open("fit", output_dir=trainer.log_dir)    # a fresh Run, started
    >>> ...                                                      # run.step(), run.metrics() ...
    >>> series.close()                                           # finished: series.report, series.reports

Every framework call (HF ``train``/``evaluate``/``predict``; Lightning ``fit``/``validate``/
``test``/``predict``; Keras ``fit``/``evaluate``/``predict``) is one run. A call opened while the
previous one is still in progress means that one was abandoned (it raised and nothing said so): it
is finished as partial at its last reading, so nothing after it is charged to it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from .options import Options
from .report import RunReport
from .run import Run


class RunSeries:
    """The current run of a callback and every run it has finished."""

    def __init__(self, options: Options, *, framework: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = options.config
        self.planned_steps = options.planned_steps
        self.framework = framework
        self._clock = clock
        self.run = self._new_run()  # checks the location now, before any trainer exists
        self._runs: list[tuple[str, Run]] = []  # (call, run), in order

    @property
    def report(self) -> RunReport | None:
        """The report of the latest call once it has ended (partial if it was interrupted)."""
        return self.run.report

    @property
    def reports(self) -> list[RunReport]:
        """Every finished call's report, in order (a run finished by a signal or at exit included)."""
        return [run.report for _, run in self._runs if run.report is not None]

    def latest(self, call: str) -> Run | None:
        """The latest run of ``call`` that has finished, or None."""
        return next((run for name, run in reversed(self._runs) if name == call and run.report is not None), None)

    @property
    def active(self) -> bool:
        return self.run.active

    def open(self, call: str, *, output_dir: str | os.PathLike, phase: str = "train", is_main_process: bool = True,
             node_leader: bool | None = None, across_ranks: bool = False) -> Run:
        """Start a run of ``call`` in ``phase``, its files under ``output_dir=`` if given, else ``output_dir``."""
        if self.active:
            self.close(partial=True, at_last_reading=True)
        if self.run.started:
            self.run = self._new_run()
        self._runs.append((call, self.run))
        return self.run.start(output_dir=output_dir, call=call, is_main_process=is_main_process,
                              node_leader=node_leader, phase=phase, across_ranks=across_ranks)

    def close(self, *, partial: bool = False, at_last_reading: bool = False) -> RunReport | None:
        """Finish the current run (once)."""
        if not self.active:
            return self.run.report
        if at_last_reading:
            self.run.note("the call ended without saying so (it raised): the run ends at its last reading")
        return self.run.finish(partial=partial, at_last_reading=at_last_reading)

    def _new_run(self) -> Run:
        return Run.from_config(self.config, framework=self.framework, planned_steps=self.planned_steps, clock=self._clock)
