"""Assembling a run's ``RunReport`` from its ledger, its ranks, its forecasts and the advisor.

Example::

    >>> report = assemble_report(run, partial=False, ranks=[])    # what Run.finish() does

One function, so the report is built the same way at the end of every run, whichever framework
(or ``track()``) drove it.
"""

from __future__ import annotations

import logging
from typing import Protocol

from . import advisor
from .budget import Budget
from .carbon import GridIntensity
from .config import Config
from .ledger import Ledger
from .projection import Projection
from .ranks import LocalRanks
from .report import RunReport, hardware_info


class FinishingRun(Protocol):
    """What a report is assembled from: a ``wattwise.Run`` (``run.py``) as it finishes."""

    run_id: str
    framework: str
    config: Config
    started_at: str
    grid: GridIntensity
    budget: Budget
    notes: list[str]
    ledger: Ledger
    ranks: LocalRanks
    projection: Projection
    _params: int | None

    def note(self, message: str, *, level: int = ...) -> None: ...

    def report_failure(self, what: str, exc: BaseException) -> None: ...


def assemble_report(run: FinishingRun, *, partial: bool, ranks: list[dict]) -> RunReport:
    """This process's figures or, with ``ranks`` gathered at the end, the whole run's."""
    ledger = run.ledger
    energy_j, by_component, phases = run.ranks.totals(ledger, ranks)
    by_phase = {
        name: p for name, p in phases.items() if p.energy_j or p.steps or p.passes or name == ledger.start_phase
    }
    recommendations = recommend(run, energy_j, by_phase, by_component)  # before the notes: its failure is one
    planned = run.projection.planned_steps
    complete = not partial and bool(planned) and ledger.phases["train"].steps >= planned
    return RunReport(
        run_id=run.run_id,
        framework=run.framework,
        project_name=run.config.project_name,
        started_at=run.started_at,
        duration_s=ledger.so_far()[1],
        energy_j=energy_j,
        emissions_kg=run.grid.kg_for_j(energy_j),
        train_steps=ledger.phases["train"].steps,
        planned_steps=planned,
        by_component=by_component,
        by_phase=by_phase,
        carbon=run.grid.to_dict(),
        partial=partial,
        recommendations=recommendations,
        notes=list(run.notes),
        timeline=ledger.timeline.points(),
        hardware=hardware_info(),
        forecasts=run.projection.scored(complete=complete, energy_j=energy_j),
        budget=run.budget.to_dict(),
        ranks=[{**r, "components": {c["name"]: c["energy_j"] for c in r["components"]}} for r in ranks],
    )


def recommend(run: FinishingRun, energy_j: float, by_phase: dict, by_component: dict) -> list:
    """The advisor's recommendations for the run; a failing advisor costs the advice, not the report."""
    try:
        evidence = run.ledger.evidence.evidence(
            energy_j=energy_j, duration_s=run.ledger.so_far()[1], phases=by_phase, components=by_component,
            grid=run.grid,
        )
        evidence.probe = probed(run, by_component)
        if evidence.probe is not None and evidence.setup.probe_setup() is None:  # probed_configuration is silent
            run.note(f"a probe of this model on this hardware ({evidence.probe.path}) was not compared with this run: "
                     "its batch size and precision are not known (tell the run: "
                     "run.evidence.describe(batch_size=..., precision=...))", level=logging.INFO)
        return advisor.advise(evidence)
    except Exception as exc:
        run.report_failure("advisor", exc)
        return []


def probed(run: FinishingRun, by_component: dict) -> advisor.ProbeEvidence | None:
    """The probe passed to the run (``probe=``), else the latest probe of the run's model (its parameter
    count) in its framework on its hardware, kept beside the run registry (``probe_store.py``); None
    when there is none."""
    from .probe_store import evidence_for, evidence_given
    from .sources.model import cpu_model_name

    if run.config.probe is not None:
        evidence, why = evidence_given(run.config.probe, framework=run.framework, params=run._params,
                                       components=by_component.values(), cpu_model=cpu_model_name())
        if why:
            run.note(why)
        return evidence
    if not run._params or run.config.registry is False:
        return None
    return evidence_for(run.config.registry, framework=run.framework, params=run._params,
                        components=by_component.values(), cpu_model=cpu_model_name())
