"""The cross-rank part of a ``Run``: when the ranks sync, what a sync does, and falling back to one
process when the collectives fail.

Example::

    >>> run.sync()        # every rank at the same point: close the window and sum the figures over ranks

``Syncing`` is mixed into ``Run`` (``run.py``); on one process (``LocalRanks``) a sync only closes
the window. Across ranks the budget and the forecast milestones are checked at the syncs, on the
sums, so every rank takes the same decisions.
"""

from __future__ import annotations

from .ranks import LocalRanks, RanksFailed


class Syncing:
    """When and how a ``Run`` (its ``ledger``, ``ranks``, ``budget``, ``projection``) sums over ranks."""

    def sync(self) -> None:
        """Close the window now and, across ranks, sum the run's figures over every rank (a collective:
        every rank calls it at the same point). On one process it only reads the counters."""
        if not self.active:
            return
        try:
            self.ledger.close_window()
        finally:  # every rank must reach the collective, whatever happened above
            if self.ranks.across:
                self._reduce()

    def _next_sync_step(self) -> int | None:
        if self.ledger is None or not self.ranks.across:
            return None
        milestone = self.ranks.next_sync_step(self.ledger, self.planned_steps)
        if self._sync_every:
            every = (self.ledger.train_steps_done // self._sync_every + 1) * self._sync_every
            milestone = every if milestone is None else min(milestone, every)
        return milestone

    def _reduce(self) -> None:
        """Sum across ranks, then check the budget and the milestones on the sums: the same values,
        so the same decisions, on every rank."""
        try:
            self.ranks.reduce(self.ledger)
        except RanksFailed as exc:
            self._fall_back(str(exc))
            return
        counts = self.ranks.counts(self.ledger)
        if warning := self.budget.check_measured(counts.total_j, counts.train_steps):
            self.note(warning)
        self.projection.update_milestones(self.ledger.global_step, self.forecast)
        self._sync_step = self._next_sync_step()

    def _gather(self) -> list[dict]:
        if not self.ranks.across:
            return []
        try:
            return self.ranks.gather(self.ledger, self.node, self.node_leader)
        except RanksFailed as exc:
            self._fall_back(str(exc))
            return []

    def _fall_back(self, why: str) -> None:
        """Carry on as one process: honest figures for this rank rather than a hang or a guess."""
        rank = self.ranks.rank
        self.ranks = LocalRanks()
        self._sync_step = None
        self.note(f"{why}: from here on, figures are rank {rank}'s own, not the whole run's")
