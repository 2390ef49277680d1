"""Sums across the ranks of a torch.distributed run, and who measures what on each node.

Example::

    >>> from wattwise.distributed import Reducer, node_identity, node_leaders
    >>> reducer = Reducer.from_environment()       # None unless torch.distributed is initialised, world > 1
    >>> if reducer is not None:
    ...     nodes = reducer.gather(node_identity())                # collective: every rank calls it
    ...     leader = node_leaders(nodes)[reducer.rank]
    ...     totals = reducer.sum([energy_j, train_j])          # collective: the same on every rank

The run's own process group carries everything (no side channel): one ``all_reduce`` of a few
float64s at a log step, and one ``all_gather_object`` at the start (node identities) and at the end
(each rank's components, for the report). Each is a collective, so every rank must call it at the
same point; a run (ranks.py) only does so at points the integrations say are aligned (log steps, the
forecast milestones, evaluation ends, the end of training).

A node is identified by ``WATTWISE_NODE_ID`` when set, else by the host name plus the launcher's
node rank when the launcher gives one (``GROUP_RANK`` from torchrun, ``NODE_RANK`` from Lightning,
``SLURM_NODEID``), never by rank numbers alone. The lowest global rank of each node is its leader:
the one process that reads the node-wide counters (RAPL) for all the processes on it.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from .report import ComponentEnergy

__all__ = ["Reducer", "node_identity", "launcher_node_rank", "node_leaders", "merge_rank_components"]

NODE_RANK_VARIABLES = ("GROUP_RANK", "NODE_RANK", "SLURM_NODEID")


def launcher_node_rank(env: Mapping[str, str] = os.environ) -> str | None:
    """The node rank the launcher put in the environment, if any."""
    for name in NODE_RANK_VARIABLES:
        value = env.get(name, "").strip()
        if value:
            return value
    return None


def node_identity(env: Mapping[str, str] = os.environ) -> str:
    """This process's node: ``WATTWISE_NODE_ID``, else ``<hostname>`` (``#<node rank>`` appended
    when the launcher gives one, so two launcher nodes sharing a host name stay two nodes)."""
    explicit = env.get("WATTWISE_NODE_ID", "").strip()
    if explicit:
        return explicit
    host = socket.gethostname()
    rank = launcher_node_rank(env)
    return host if rank is None else f"{host}#{rank}"


def node_leaders(nodes: Sequence[str]) -> list[bool]:
    """For each rank (``nodes[rank]`` is its node), whether it is its node's leader: the lowest rank there.

    >>> node_leaders(["a", "a", "b", "b"])
    [True, False, True, False]
    """
    return [nodes.index(node) == rank for rank, node in enumerate(nodes)]


class Reducer:
    """Collectives over the default process group, on tensors of the group's backend's device."""

    def __init__(self, torch: Any, dist: Any) -> None:
        self._torch = torch
        self._dist = dist
        self.rank: int = dist.get_rank()
        self.world_size: int = dist.get_world_size()
        backend = str(dist.get_backend())
        on_cuda = "nccl" in backend and "gloo" not in backend  # NCCL reduces CUDA tensors only
        self._device = torch.device("cuda", torch.cuda.current_device()) if on_cuda else torch.device("cpu")

    @classmethod
    def from_environment(cls) -> Reducer | None:
        """A reducer when torch is imported and torch.distributed is initialised with more than one
        rank; None otherwise (then everything is measured as one process). Never imports torch."""
        torch = sys.modules.get("torch")
        dist = getattr(torch, "distributed", None) if torch is not None else None
        if dist is None or not dist.is_available() or not dist.is_initialized():
            return None
        if dist.get_world_size() < 2:
            return None
        return cls(torch, dist)

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over every rank (collective)."""
        tensor = self._torch.tensor(list(values), dtype=self._torch.float64, device=self._device)
        self._dist.all_reduce(tensor, op=self._dist.ReduceOp.SUM)
        return [float(v) for v in tensor.tolist()]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (collective; pickled, so keep it small)."""
        gathered: list[Any] = [None] * self.world_size
        self._dist.all_gather_object(gathered, obj)
        return gathered


def merge_rank_components(ranks: list[dict]) -> dict[str, ComponentEnergy]:
    """One entry per component of every rank. A name used by one rank only keeps it (``gpu:0``,
    ``gpu:1`` on one node); a name several ranks use is qualified by node when it is a node-wide
    counter (``cpu:0 (node b)``) and by rank otherwise (``cpu (rank 1)``), so nothing is merged
    that was measured twice and nothing is lost."""
    owners: dict[str, int] = {}
    for rank in ranks:
        for c in rank["components"]:
            owners[c["name"]] = owners.get(c["name"], 0) + 1
    merged: dict[str, ComponentEnergy] = {}
    for rank in ranks:
        for c in rank["components"]:
            name = c["name"]
            if owners[name] > 1:
                name = f"{name} (node {rank['node']})" if c["scope"] == "node" else f"{name} (rank {rank['rank']})"
            where = f"rank {rank['rank']} on {rank['node']}"
            detail = f"{c['detail']}; {where}" if c.get("detail") else where
            merged[name] = ComponentEnergy(
                name=name, kind=c["kind"], energy_j=c["energy_j"], measured=c["measured"],
                source=c["source"], scope=c["scope"], detail=detail,
            )
    return merged
