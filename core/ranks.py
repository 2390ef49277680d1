"""Whose figures a run reports: this process's own (``LocalRanks``), or every rank's summed
(``AcrossRanks``, under torch.distributed).

Example::

    >>> ranks = AcrossRanks.connect(node, run_id) or LocalRanks()   # a collective when across ranks
    >>> ranks.counts(ledger)             # the run's energy and steps: this process's, or the last sync's sums
    >>> ranks.reduce(ledger)             # across ranks a collective (every rank, the same point); else nothing

Across ranks, ``reduce`` at a point every rank reaches sums the ranks' energy with one collective;
the metrics, budget and milestones are then the run's totals, the same on every rank, so every
rank takes the same decisions (docs/distributed.md). When a collective fails, ``RanksFailed`` is
raised and the run carries on with ``LocalRanks``: honest figures for this rank rather than a hang.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .distributed import Reducer, merge_rank_components, node_leaders
from .forecast import MILESTONE_FRACTIONS, Forecast
from .ledger import PHASES, Counts, Ledger
from .records import ComponentEnergy, PhaseEnergy

_FIGURES = ("total_j", *(f"{p}_j" for p in PHASES), *(f"{p}_samples" for p in PHASES),
            *(f"{p}_tokens" for p in PHASES), "last_pass_j")


class RanksFailed(RuntimeError):
    """A collective failed: the run goes on with this rank's own figures."""


@dataclass(frozen=True)
class Synced:
    """The run's figures summed over ranks at a sync, and this rank's own total then."""

    timestamp_s: float
    train_steps: int
    local_total_j: float
    total_j: float
    phase_j: dict[str, float]
    phase_samples: dict[str, int]
    phase_tokens: dict[str, float]
    last_pass_j: float
    passes_ended: int  # this rank's count of ended passes then: the sum is of the pass that ended last


class LocalRanks:
    """One process: its own figures, nothing to sum. Every method is what one process does."""

    across = False
    rank = 0

    def counts(self, ledger: Ledger) -> Counts:
        return ledger.counts()

    def scale(self, forecast: Forecast | None) -> Forecast | None:
        return forecast

    def next_sync_step(self, ledger: Ledger, planned_steps: int | None) -> int | None:
        return None

    def reduce(self, ledger: Ledger) -> bool:
        return False

    def last_pass_j(self, ledger: Ledger) -> float:
        return ledger.last_pass_j

    def gather(self, ledger: Ledger, node: str, node_leader: bool) -> list[dict]:
        return []

    def totals(self, ledger: Ledger, ranks: list[dict]) -> tuple[float, dict[str, ComponentEnergy], dict[str, PhaseEnergy]]:
        """The report's energy, components and phases."""
        return ledger.so_far()[0], ledger.components(), ledger.phases


class AcrossRanks(LocalRanks):
    """Every rank of a torch.distributed run: sums at the syncs, each rank's components at the end."""

    across = True

    def __init__(self, reducer: Reducer) -> None:
        self._reducer = reducer
        self.rank = reducer.rank
        self.synced: Synced | None = None

    @classmethod
    def connect(cls, node: str, run_id: str) -> tuple[AcrossRanks | None, bool | None, str]:
        """When torch.distributed runs several ranks: the ranks, whether this rank leads its node,
        and the run id every rank shares (rank 0's). A collective: every rank calls it. Else
        ``(None, None, run_id)``."""
        reducer = Reducer.from_environment()
        if reducer is None:
            return None, None, run_id
        peers = reducer.gather((node, run_id))
        leader = node_leaders([n for n, _ in peers])[reducer.rank]
        return cls(reducer), leader, peers[0][1]

    def counts(self, ledger: Ledger) -> Counts:
        synced = self.synced
        if synced is None:
            return Counts(ledger.first.timestamp_s, 0.0, 0, 0.0)
        return Counts(synced.timestamp_s, synced.total_j, synced.train_steps, synced.phase_j["train"],
                      synced.phase_samples["train"], synced.phase_tokens["train"])

    def scale(self, forecast: Forecast | None) -> Forecast | None:
        """This rank's forecast scaled to the run by the ratio of the total to this rank's energy at
        the last sync (ranks run the same steps; None before the first sync)."""
        synced = self.synced
        if forecast is None or synced is None or synced.local_total_j <= 0:
            return None
        ratio = synced.total_j / synced.local_total_j
        return dataclasses.replace(
            forecast,
            energy_j=forecast.energy_j * ratio,
            energy_low_j=forecast.energy_low_j * ratio,
            energy_high_j=forecast.energy_high_j * ratio,
            tail_j=forecast.tail_j * ratio,
        )

    def next_sync_step(self, ledger: Ledger, planned_steps: int | None) -> int | None:
        """The next training step at which the run syncs by itself: each forecast milestone (a step
        count, so the same on every rank), for forecasts of the totals."""
        if not planned_steps:
            return None
        done = ledger.train_steps_done
        for fraction in MILESTONE_FRACTIONS:
            step = max(1, math.ceil(fraction * planned_steps))
            if step > done:
                return step
        return None

    def reduce(self, ledger: Ledger) -> bool:
        """Sum this rank's figures with every other rank's (a collective)."""
        try:
            local = _local_figures(ledger)
        except Exception:  # still take part, or the other ranks would wait for ever
            local = [math.nan] * len(_FIGURES)
        try:
            summed = self._reducer.sum(local)
        except Exception as exc:
            raise RanksFailed(f"summing across ranks failed ({type(exc).__name__}: {exc})") from exc
        if not all(math.isfinite(v) for v in summed):
            raise RanksFailed("a rank could not give its figures to the sum")
        sums = dict(zip(_FIGURES, summed, strict=True))
        self.synced = Synced(
            timestamp_s=ledger.last.timestamp_s,
            train_steps=ledger.phases["train"].steps,
            local_total_j=local[0],
            total_j=sums["total_j"],
            phase_j={name: sums[f"{name}_j"] for name in PHASES},
            phase_samples={name: round(sums[f"{name}_samples"]) for name in PHASES},
            phase_tokens={name: sums[f"{name}_tokens"] for name in PHASES},
            last_pass_j=sums["last_pass_j"],
            passes_ended=ledger.passes_ended,
        )
        return True

    def last_pass_j(self, ledger: Ledger) -> float:
        """The last pass's joules over all ranks once a sync has followed its end."""
        if self.synced is None or self.synced.passes_ended != ledger.passes_ended:
            return ledger.last_pass_j
        return self.synced.last_pass_j

    def gather(self, ledger: Ledger, node: str, node_leader: bool) -> list[dict]:
        """Every rank's own components, for the report (a collective, at the end)."""
        mine = {
            "rank": self.rank,
            "node": node,
            "node_leader": node_leader,
            "energy_j": ledger.so_far()[0],
            "components": [dataclasses.asdict(c) for c in ledger.components().values()],
        }
        try:
            return self._reducer.gather(mine)
        except Exception as exc:
            raise RanksFailed(f"gathering the ranks' components failed ({type(exc).__name__}: {exc})") from exc

    def totals(self, ledger: Ledger, ranks: list[dict]) -> tuple[float, dict[str, ComponentEnergy], dict[str, PhaseEnergy]]:
        if not ranks or self.synced is None:
            return super().totals(ledger, ranks)
        phases = {
            name: dataclasses.replace(p, energy_j=self.synced.phase_j[name], samples=self.synced.phase_samples[name],
                                      tokens=self.synced.phase_tokens[name])
            for name, p in ledger.phases.items()
        }
        return self.synced.total_j, merge_rank_components(ranks), phases


def _local_figures(ledger: Ledger) -> list[float]:
    figures = {"total_j": ledger.so_far()[0], "last_pass_j": ledger.last_pass_j}
    for name, record in ledger.phases.items():
        figures[f"{name}_j"] = record.energy_j
        figures[f"{name}_samples"] = float(record.samples)
        figures[f"{name}_tokens"] = float(record.tokens)
    return [figures[key] for key in _FIGURES]
