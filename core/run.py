"""``Run``: one tracked run's whole lifecycle, for any training loop; every ``EnergyCallback`` drives one.

Example::

    import wattwise

    with wattwise.track(country_iso_code="FRA", planned_steps=len(loader) * epochs, output_dir="out") as run:
        for step, batch in enumerate(loader):
            ...                                      # forward, backward, optimizer step
            run.step(samples=len(batch))             # cheap: counts; reads counters ~every window_s
            if step % 20 == 0:
                accelerator.log(run.metrics(), step=step)   # or wandb.log, SummaryWriter, print
        with run.phase("eval"):
            for batch in eval_loader:
                ...
                run.step(samples=len(batch))
    run.report                                       # RunReport; files under out/wattwise/

``run.metrics()`` returns the keys every callback logs: ``energy/step_j`` (joules per training step
since the previous call), ``energy/power_w`` (mean power since then), ``energy/total_kwh`` and
``carbon/total_kg`` (since the start), ``energy/sample_j`` and ``energy/tokens_per_j`` when
``step()`` is given samples and tokens, and once the forecaster has enough windows
``energy/forecast_kwh``, ``energy/forecast_low_kwh``, ``energy/forecast_high_kwh`` and
``carbon/forecast_kg`` (the whole planned run, with its 90% interval). ``run.pass_metrics("eval")``
gives ``energy/eval_j`` (``test_j``, ``predict_j``) of the pass just ended, and
``energy/eval_sample_j`` when its samples were counted.

An exception leaving the ``with`` block finishes the run at once as partial (files written,
registry row marked partial) and propagates unchanged; so do SIGTERM and SIGINT (``endings.py``).
Under ``torchrun`` (with or without ``accelerate``) every rank calls ``step()`` the same number of
times: the ranks sync every ``SYNC_EVERY_STEPS`` training steps, at the forecast milestones, at
the end of each phase and at the end, and the metrics and the report are the totals over all ranks.

How a run is measured (windows, phases) is ``ledger.py``; summed across ranks, ``ranks.py`` and
``syncing.py``;
forecast, ``projection.py``; reported, ``assemble.py``; written, ``files.py``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from . import endings
from .assemble import assemble_report
from .budget import Budget
from .carbon import resolve_intensity
from .config import Config
from .distributed import node_identity
from .evidence import EvidenceCollector
from .figures import (  # noqa: F401  (the log keys: wattwise.run's names)
    CARBON_KG,
    EVAL_J,
    PASS_KEYS,
    POWER_W,
    PREDICT_J,
    STEP_J,
    TEST_J,
    TOTAL_KWH,
    UNMEASURED_EVAL_NOTE,
    Figures,
)
from .files import RunFiles, claim_directory
from .ledger import PHASES, Counts, Ledger
from .meter import EnergyMeter
from .notes import Notes
from .options import Options
from .projection import Projection
from .ranks import AcrossRanks, LocalRanks
from .report import RunReport
from .syncing import Syncing

logger = logging.getLogger("wattwise")

SYNC_EVERY_STEPS = 64  # track() across ranks: a sum of a few floats every so many training steps


class Run(Syncing, Figures, Notes, Options):
    """One tracked run. ``wattwise.track(...)`` makes one; see the module docstring for the keys."""

    def _configured(self) -> None:
        self._setup("loop", time.monotonic)

    @classmethod
    def from_config(cls, config: Config, framework: str = "loop", *, planned_steps: int | None = None,
                    clock: Callable[[], float] = time.monotonic) -> Run:
        """A run of ``framework`` with a checked ``config`` (what integrations use)."""
        run = cls.__new__(cls)
        run.config, run.planned_steps = config, planned_steps
        run._setup(framework, clock)
        return run

    def _setup(self, framework: str, clock: Callable[[], float]) -> None:
        config = self.config
        self.framework = framework
        self.grid = resolve_intensity(  # checks the location now, before training
            country_iso_code=config.country_iso_code, region=config.region, cloud_provider=config.cloud_provider,
            cloud_region=config.cloud_region, carbon_intensity_g_per_kwh=config.carbon_intensity_g_per_kwh,
            pue=config.pue,
        )
        self.budget = Budget(config.budget_kwh, config.budget_kg_co2e, config.on_budget, self.grid,
                             on_stop=self._budget_spent)
        # plain attributes, read at every step: True once on_budget="stop" and the budget is spent
        # (integrations then stop training); True between start() and finish()
        self.should_stop = False
        self.active = False
        self._clock = clock
        self.notes: list[str] = []
        self._noted: set[str] = set()
        self.report: RunReport | None = None
        self.run_id = str(uuid.uuid4())
        self.started_at = ""
        self.node, self.node_leader, self.is_main_process = "", True, True
        self.output_dir = Path(config.output_dir or ".") / "wattwise"
        self.ranks: LocalRanks = LocalRanks()
        self.projection = Projection(self.planned_steps)
        self.ledger: Ledger | None = None
        self.files = RunFiles(self.output_dir, write=False, note=self.note)
        self._marks: dict[str, Counts] = {}  # per interval name: the run's counts when it was last logged
        self._sync_step: int | None = None
        self._sync_every: int | None = None
        self._synchronize: Callable[[], None] | None = None
        self._params: int | None = None  # set_work(): for the run registry
        self._tokens: float | None = None
        self.started = self.finished = False

    # ---- lifecycle -----------------------------------------------------------------------------

    def start(self, *, output_dir: str | os.PathLike | None = None, call: str = "track",
              planned_steps: int | None = None, is_main_process: bool | None = None, node_leader: bool | None = None,
              phase: str = "train", meter: EnergyMeter | None = None, across_ranks: bool = False,
              sync_every_steps: int | None = None) -> Run:
        """Open the sources and take the first reading, in ``phase``. The files go under
        ``<output_dir>/wattwise`` (``output_dir=`` of the options first, else this ``output_dir``, else
        the current directory), or ``<output_dir>/<call>/wattwise`` when a run of this process has it.

        ``across_ranks=True``: every rank calls ``start``, ``sync``, every training ``step()`` and
        ``finish`` at the same points; when torch.distributed runs several ranks the figures are the
        totals over all ranks, and each node's lowest rank alone reads node-wide counters.
        ``is_main_process`` (default: rank 0) alone writes files and prints. ``meter`` replaces the
        sources (tests). Returns the run.
        """
        if self.started:
            return self
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        self.node = node_identity()
        ranks, leader, self.run_id = AcrossRanks.connect(self.node, self.run_id) if across_ranks else (None, None, self.run_id)
        self.ranks = ranks or LocalRanks()
        if leader is not None:
            node_leader = leader
        if node_leader is None:
            node_leader = os.environ.get("LOCAL_RANK", "0") in ("", "0")
        if is_main_process is None:
            is_main_process = self.ranks.rank == 0
        self.node_leader, self.is_main_process = node_leader, is_main_process
        self._synchronize = cuda_synchronizer() if self.config.sync_cuda else None
        meter = meter if meter is not None else self._open_meter()
        if not meter.components and not node_leader:
            self.note("this process reads no counter itself: its node's leader reads the node-wide ones", level=logging.INFO)
        elif not meter.components:
            self.note("no energy source could start: energy figures will be zero")
        if self.grid.is_default:
            self.note(
                f"no location given: using the world average carbon intensity ({self.grid.g_per_kwh:g} g/kWh); "
                "pass country_iso_code= (or cloud_provider=/cloud_region=, or set WATTWISE_COUNTRY_ISO_CODE)"
            )
        self.started_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.output_dir = claim_directory(self.config.output_dir or output_dir or ".", call)
        if planned_steps is not None:
            self.plan(planned_steps)
        self.files = RunFiles(self.output_dir, write=is_main_process and self.config.write_files, note=self.note)
        self.ledger = Ledger(meter, window_s=self.config.window_s, phase=phase, clock=self._clock, before_read=self._before_read,
                             on_window=self._on_window, on_row=self.files.write_row)
        self._sync_every = sync_every_steps if self.ranks.across else None
        self._sync_step = self._next_sync_step()
        self.files.open_steps([c.name for c in meter.components])
        self.started = self.active = True
        _watch(self)
        return self

    def __enter__(self) -> Run:
        if self.finished:
            raise RuntimeError("this run has finished: start another with wattwise.track(...)")
        return self.start(across_ranks=True, sync_every_steps=SYNC_EVERY_STEPS)

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish(partial=exc_type is not None)  # the exception, if any, propagates unchanged

    def plan(self, planned_steps: int | None, *, eval_every_steps: int | None = None) -> None:
        """Set the planned training steps once known and, when the framework says it, the
        evaluation cadence in steps (else it is inferred from the passes)."""
        self.planned_steps = planned_steps
        self.projection.plan(planned_steps, eval_every_steps)
        self._sync_step = self._next_sync_step()

    def finish(self, *, partial: bool = False, at_last_reading: bool = False) -> RunReport | None:
        """Close the last window, build the report, write the files and print the summary, once.
        ``at_last_reading``: end the run at the last reading (it was abandoned some time ago)."""
        if not self.started or self.finished:
            return self.report
        self.finished, self.active = True, False
        endings.forget(self)
        ledger, gathered = self.ledger, []
        try:
            ledger.close_window(reading=ledger.last if at_last_reading else None)
        finally:
            if self.ranks.across and partial:  # other ranks may be gone: no collective now
                self._fall_back("the run was interrupted, so ranks could not be summed")
            elif self.ranks.across:
                self._reduce()
                gathered = self._gather()
        ledger.meter.close()
        for message in ledger.meter.notes:
            self.note(message)
        self.report = assemble_report(self, partial=partial, ranks=gathered)
        ledger.flush()
        self.files.close_steps()
        if self.is_main_process:
            self.files.record(self.report, registry=self.config.registry, params=self._params, tokens=self._tokens,
                              precision=ledger.evidence.setup.precision)
            self.files.write_report(self.report)
            if self.config.print_summary:
                from .render import print_summary

                print_summary(self.report, file=sys.stderr if partial else sys.stdout)
        return self.report

    def finish_interrupted(self, why: str, *, at_last_reading: bool) -> RunReport | None:
        """The process is ending (a signal, interpreter exit): finish as partial, saying why."""
        if self.started and not self.finished:
            self.note(why)
        return self.finish(partial=True, at_last_reading=at_last_reading)

    # ---- the hot path --------------------------------------------------------------------------

    def step(self, samples: int | None = None, tokens: float | None = None, *, steps: int = 1) -> bool:
        """``steps`` steps (optimizer steps in training, batches in a pass) have ended, with their
        ``samples`` and, when known, ``tokens``. Returns True when the counters were just read."""
        ledger = self.ledger
        if ledger is None or self.finished:
            return False
        due = ledger.step(tokens, steps, samples or 0)
        if self._sync_step is not None and ledger.phase == "train" and ledger.train_steps_done >= self._sync_step:
            self.sync()  # across ranks only: a step count every rank reaches
            return True
        if due:
            ledger.close_window()
        return due

    def add_samples(self, phase: str, samples: int) -> None:
        """Samples of ``phase`` counted apart from its steps (a whole epoch's, say)."""
        if self.active and samples:
            self.ledger.add_samples(phase, samples)

    # ---- phases --------------------------------------------------------------------------------

    @property
    def current_phase(self) -> str | None:
        return self.ledger.phase if self.ledger is not None else None

    @contextlib.contextmanager
    def phase(self, name: str, *, record_pass: bool = True) -> Iterator[Run]:
        """``with run.phase("eval"):`` one pass of ``eval``, ``test`` or ``predict``; its joules are
        then ``run.last_pass_j`` (across ranks: every rank's, summed)."""
        if name == "train" or name not in PHASES:
            raise ValueError(f"name must be one of {PHASES[1:]}, got {name!r}")
        self.begin(name)
        try:
            yield self
        finally:
            try:
                self.end(name, record_pass=record_pass)
            finally:  # every rank ends its pass here: the pass's joules over all ranks
                self.sync()

    def begin(self, phase: str) -> None:
        """Enter ``phase`` (``eval``, ``test``, ``predict``); what came before is closed as the old phase."""
        if self.active:
            self.ledger.begin(phase)

    def end(self, phase: str, *, record_pass: bool = True) -> float:
        """Leave ``phase`` (back to ``train``); return the joules of the pass that just ended.
        ``record_pass=False`` keeps a pass that is not a regular evaluation (a sanity check) out of the forecast."""
        if not self.active or not self.ledger.end(phase):
            return 0.0
        if phase == "eval" and record_pass:
            self.projection.add_eval_pass(self.ledger.last_pass_j, self.ledger.last_pass_s)
        return self.ledger.last_pass_j

    # ---- what the advisor and the registry read ------------------------------------------------

    @property
    def evidence(self) -> EvidenceCollector | None:
        """Set-up facts (``evidence.describe(...)``) and evaluation metrics for the advisor."""
        return self.ledger.evidence if self.ledger is not None else None

    def record_metric(self, name: str, value: float, *, step: int, greater_is_better: bool | None = None) -> None:
        """An evaluation ended with ``name`` = ``value`` (higher is better unless the name ends in ``loss``)."""
        if self.active:
            greater = greater_is_better if greater_is_better is not None else not name.endswith("loss")
            self.ledger.evidence.record_metric(name, value, step=step, greater_is_better=greater)

    def set_work(self, *, model: object = None, tokens: float | None = None) -> None:
        """What the run registry needs to calibrate ``wattwise.estimate``: the model (its parameters
        are counted now) and, when the framework counts them, the training tokens. Never raises."""
        try:
            if model is not None:
                from .estimate import count_params

                self._params = count_params(model)
            if tokens:
                self._tokens = float(tokens)
        except Exception as exc:  # an unbuilt Keras model, say: the run is recorded without it
            self.note(f"the model's parameters could not be counted for the run registry ({exc})", level=logging.INFO)

    # ---- internals -----------------------------------------------------------------------------

    def _open_meter(self) -> EnergyMeter:
        from .sources import open_sources

        opened = open_sources(self.config.sources, node_leader=self.node_leader,
                              cpu_power_w=self.config.cpu_power_w, ram_power_w=self.config.ram_power_w)
        for why in opened.notes:
            self.note(why, level=logging.INFO)
        return EnergyMeter(opened.sources, clock=self._clock)

    def _before_read(self) -> None:
        if self._synchronize is not None:
            try:
                self._synchronize()
            except Exception as exc:
                self.report_failure("synchronize", exc)

    def _budget_spent(self) -> None:
        self.should_stop = True

    def _on_window(self, phase: str, steps: int, energy_j: float, duration_s: float, work: float | None) -> None:
        """A window closed: the forecast learns from training windows; on one process the budget
        and the milestones are checked here (across ranks, at the syncs, on the totals)."""
        ledger = self.ledger
        if phase == "train":
            self.projection.add_window(steps, energy_j, duration_s, work)
        if self.ranks.across:
            return
        if phase == "train":
            self.projection.update_milestones(ledger.global_step, self.forecast)
        if warning := self.budget.check_measured(ledger.so_far()[0], ledger.phases["train"].steps):
            self.note(warning)


def _watch(run: Run) -> None:
    """Watch ``run`` (``endings.py``), and tell it and every other run in progress in this process
    (two trainers in two threads, two callbacks in one trainer) that their figures overlap: the
    CPU and RAM estimates cover the whole process, the counters the whole device or node. The new
    run warns; the others keep it as a note (info) for their reports."""
    endings.watch(run)
    mine = {c.name: c.scope for c in run.ledger.meter.components}
    for other in endings.in_progress():
        if other is run or not isinstance(other, Run) or not other.active:
            continue
        shared = [name for name in (c.name for c in other.ledger.meter.components) if name in mine]
        if not shared:
            continue
        process = [name for name in shared if mine[name] == "process"]
        counters = [name for name in shared if mine[name] != "process"]
        parts = [f"{', '.join(process)} (estimates for the whole process: the CPU time and memory of all its "
                 "threads)"] if process else []
        parts += [f"{', '.join(counters)} (counters for the whole device or node)"] if counters else []
        overlap = f"both measure {' and '.join(parts)}, so their figures overlap and must not be added"
        run.note(f"another wattwise run ({other.run_id[:8]}) is in progress in this process: {overlap}")
        other.note(f"another wattwise run ({run.run_id[:8]}) started in this process while this one was in "
                   f"progress: {overlap}", level=logging.INFO)


def cuda_synchronizer() -> Callable[[], None] | None:
    """``torch.cuda.synchronize`` when torch is already imported and CUDA is initialised, else None."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return torch.cuda.synchronize


track = Run
