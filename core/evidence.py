"""Gathers the advisor's evidence during a run, at window boundaries only.

Example::

    >>> collector = EvidenceCollector(meter, first_reading)       # the ledger makes one when a run starts
    >>> collector.describe(framework="transformers", precision="fp32", batch_size=8)   # integration
    >>> collector.window(reading, "train")                        # the ledger, at each window
    >>> collector.record_metric("eval_loss", 2.3, step=100)       # integration, at evaluation end
    >>> evidence = collector.evidence(energy_j=..., duration_s=..., phases=..., components=..., grid=...)

GPU utilisation and memory are read from the meter's sources (NVML) at the end of a training window,
at most every ``USAGE_EVERY_S``: a few NVML calls a second, never one per step. Statistics are
running sums and peaks, so memory does not grow with the run; the metric history keeps one point
per evaluation (at most ``MAX_METRIC_POINTS``).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from typing import Any

from .advisor import Evidence, GpuUsage, MetricPoint, TrainingSetup
from .carbon import GridIntensity
from .meter import EnergyMeter, Reading

USAGE_EVERY_S = 1.0
MAX_METRIC_POINTS = 10_000


class EvidenceCollector:
    """Running statistics of the evidence; ``evidence()`` turns them into an ``Evidence``."""

    def __init__(self, meter: EnergyMeter, first: Reading) -> None:
        self._meter = meter
        self._start_j = first.total_j
        self._energy_j = 0.0
        self._next_usage_s = first.timestamp_s
        self.setup = TrainingSetup(torch_threads=_torch_threads(), physical_cores=_physical_cores())
        self._gpus: dict[str, GpuUsage] = {}
        self.metric_name: str | None = None
        self.greater_is_better = False
        self.history: list[MetricPoint] = []

    def describe(self, **facts: Any) -> None:
        """Record set-up facts (``TrainingSetup`` field names); None values are ignored."""
        names = {f.name for f in dataclasses.fields(TrainingSetup)}
        unknown = sorted(set(facts) - names)
        if unknown:
            raise ValueError(f"unknown set-up fact(s) {', '.join(unknown)}; accepted: {', '.join(sorted(names))}")
        known = {k: v for k, v in facts.items() if v is not None}
        self.setup = dataclasses.replace(self.setup, **known)

    def window(self, reading: Reading, phase: str) -> None:
        """A window just closed in ``phase``: note the energy so far, and sample the GPUs in training."""
        self._energy_j = reading.total_j - self._start_j
        if phase != "train" or reading.timestamp_s < self._next_usage_s:
            return
        self._next_usage_s = reading.timestamp_s + USAGE_EVERY_S
        for sample in self._meter.usage():
            self._add_sample(sample)

    def record_metric(self, name: str, value: float, *, step: int, greater_is_better: bool = False) -> None:
        """An evaluation ended with ``name`` = ``value``; the energy spent so far is noted with it."""
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"value must be a number, got {value!r}") from None
        if not math.isfinite(value) or len(self.history) >= MAX_METRIC_POINTS:
            return
        if self.metric_name not in (None, name):
            self.history.clear()  # a different metric: its history starts over
        self.metric_name, self.greater_is_better = name, greater_is_better
        self.history.append(MetricPoint(step=step, value=value, energy_j=self._energy_j))

    def evidence(
        self, *, energy_j: float, duration_s: float, phases: dict, components: dict, grid: GridIntensity
    ) -> Evidence:
        return Evidence(
            energy_j=energy_j, duration_s=duration_s, phases=phases, components=components, grid=grid,
            setup=self.setup, gpus=list(self._gpus.values()), metric_name=self.metric_name,
            greater_is_better=self.greater_is_better, metric_history=list(self.history),
        )

    def _add_sample(self, sample: Any) -> None:
        usage = self._gpus.get(sample.name)
        if usage is None:
            self._gpus[sample.name] = GpuUsage(
                name=sample.name, model=sample.model, samples=1, utilization_pct=sample.utilization_pct,
                memory_used_bytes=sample.memory_used_bytes, memory_total_bytes=sample.memory_total_bytes,
                power_limit_w=sample.power_limit_w, min_power_limit_w=sample.min_power_limit_w,
                compute_capability=sample.compute_capability,
            )
            return
        n = usage.samples + 1
        usage.utilization_pct += (sample.utilization_pct - usage.utilization_pct) / n  # running mean
        usage.memory_used_bytes = max(usage.memory_used_bytes, sample.memory_used_bytes)
        usage.samples = n


def _torch_threads() -> int | None:
    """torch's intra-op threads when torch is already imported (it is never imported here), over
    every process the launcher started on this node (``LOCAL_WORLD_SIZE``: torchrun, accelerate),
    since they share its cores."""
    torch = sys.modules.get("torch")
    try:
        if torch is None:
            return None
        local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE") or 1)
        return int(torch.get_num_threads()) * max(local_ranks, 1)
    except Exception:
        return None


def _physical_cores() -> int | None:
    """Physical cores this process may use: the machine's, bounded by its CPU affinity."""
    import psutil

    cores = psutil.cpu_count(logical=False)
    if hasattr(os, "sched_getaffinity"):
        allowed = len(os.sched_getaffinity(0))
        cores = min(cores, allowed) if cores else allowed
    return cores or None
