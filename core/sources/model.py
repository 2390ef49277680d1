"""Estimates where no counter exists: this run's CPU time x per-thread TDP, and its share of RAM power.

Example::

    >>> from wattwise.sources.model import CpuTimeSource, RamShareSource
    >>> cpu = CpuTimeSource.open(cpu_power_w=65.0)     # TDP of the CPU package, in watts
    >>> ram = RamShareSource.open()                    # codecarbon's RAM model, this run's share
    >>> cpu.components[0].measured
    False

CPU: the process's CPU seconds (its threads and its child processes, such as DataLoader workers,
live or exited)
times the power of one busy hardware thread, ``TDP x sockets / logical CPUs``. The TDP comes from
``cpu_power_w``, else codecarbon's table (``cpu_power.csv``) for the detected model, else
codecarbon's default of 4 W per thread.

RAM: codecarbon's model gives the machine's RAM power (by DIMM count, or ``ram_power_w``); the run
is charged the fraction of it that its resident memory occupies, integrated over time. A
whole-machine constant would charge the run for memory it does not use.
"""

from __future__ import annotations

import csv
import functools
import importlib.resources
import os
import platform
import re
import time
from collections.abc import Callable

import psutil

from .base import Component, SourceUnavailable

DEFAULT_W_PER_THREAD = 4.0  # codecarbon's DEFAULT_POWER_PER_CORE, used when the CPU is not in its table
CHILDREN_REFRESH_S = 10.0


def cpu_model_name() -> str:
    """The CPU's marketing name, read without subprocesses (``/proc/cpuinfo`` on Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def socket_count() -> int:
    try:
        with open("/proc/cpuinfo") as f:
            ids = {line.split(":", 1)[1].strip() for line in f if line.startswith("physical id")}
        return max(1, len(ids))
    except OSError:
        return 1


def normalize_cpu_name(name: str) -> str:
    """``'Intel(R) Xeon(R) Platinum 8380 CPU @ 2.30GHz'`` -> ``'Intel Xeon Platinum 8380'``.

    Intel's ``'13th Gen Intel(R) Core(TM) i9-13900K'`` loses its generation prefix, which the table omits.
    """
    name = re.sub(r"\((R|TM|tm|r)\)", "", name)
    name = re.sub(r"^\s*\d+(st|nd|rd|th) Gen (?=Intel)", "", name)
    name = re.sub(r"@.*$", "", name)
    name = re.sub(r"\b\d+-Core Processor\b|\bProcessor\b|\bCPU\b", "", name)
    return " ".join(name.split())


@functools.cache
def _tdp_table() -> dict[str, float]:
    data = importlib.resources.files("codecarbon") / "data" / "hardware" / "cpu_power.csv"
    table: dict[str, float] = {}
    with data.open(encoding="utf-8-sig") as f:
        for row in csv.DictReader(f):
            try:
                table[normalize_cpu_name(row["Name"]).lower()] = float(row["TDP"])
            except (TypeError, ValueError):
                continue  # the table has a few malformed rows (e.g. "27.29.5")
    return table


def lookup_tdp_w(model: str) -> float | None:
    """TDP in watts from codecarbon's table, by exact normalized name; None when unknown."""
    return _tdp_table().get(normalize_cpu_name(model).lower())


class _ProcessTree:
    """This process and its children, the children list refreshed at most every 10 s."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.root = psutil.Process(os.getpid())
        self._clock = clock
        self._children: list[psutil.Process] = []
        self._refreshed_at = float("-inf")

    def processes(self) -> list[psutil.Process]:
        now = self._clock()
        if now - self._refreshed_at >= CHILDREN_REFRESH_S:
            try:
                self._children = self.root.children(recursive=True)
            except psutil.Error:
                self._children = []
            self._refreshed_at = now
        return [self.root, *self._children]


class CpuTimeSource:
    """Estimated CPU energy of this process tree: CPU seconds x watts per busy thread."""

    def __init__(self, watts_per_thread: float, detail: str) -> None:
        self.watts_per_thread = watts_per_thread
        self.components = (Component("cpu", kind="cpu", measured=False, source="cpu-time x TDP", scope="process", detail=detail),)
        self._tree = _ProcessTree()
        self._last_s = 0.0
        self._start_s = self._cpu_seconds()

    @classmethod
    def open(cls, cpu_power_w: float | None = None) -> CpuTimeSource:
        threads = psutil.cpu_count(logical=True) or 1
        sockets = socket_count()
        model = cpu_model_name()
        if cpu_power_w is not None:
            tdp_w, origin = cpu_power_w, "cpu_power_w"
        elif (table_w := lookup_tdp_w(model)) is not None:
            tdp_w, origin = table_w, "codecarbon's TDP table"
        else:
            tdp_w = None
            origin = "not in codecarbon's TDP table; its default of 4 W per thread (pass cpu_power_w= to set the TDP)"
        if tdp_w is None:
            per_thread = DEFAULT_W_PER_THREAD
            detail = f"{model}: {origin}"
        else:
            per_thread = tdp_w * sockets / threads
            detail = f"{model}: TDP {tdp_w:g} W from {origin}, {per_thread:.2f} W per busy thread ({threads} threads)"
        return cls(per_thread, detail)

    def read_j(self) -> tuple[float, ...]:
        return ((self._cpu_seconds() - self._start_s) * self.watts_per_thread,)

    def close(self) -> None:
        """Nothing to release."""

    def _cpu_seconds(self) -> float:
        """CPU seconds of the process tree: each live process's own and its reaped children's.

        A child that has exited and been waited for (a DataLoader worker at the end of an epoch,
        however short-lived) is in its parent's ``children_user``/``children_system``; a child that
        exits between two reads moves from one term to the other, so the total is kept monotonic.
        """
        total_s = 0.0
        for proc in self._tree.processes():
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue  # exited since the list was made: its parent's children_* now hold it
            total_s += times.user + times.system + times.children_user + times.children_system
        self._last_s = max(self._last_s, total_s)
        return self._last_s


class RamShareSource:
    """Estimated RAM energy of this run: machine RAM power x (run's resident memory / machine memory)."""

    def __init__(self, machine_power_w: float, detail: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.machine_power_w = machine_power_w
        self.components = (Component("ram", kind="ram", measured=False, source="ram model", scope="process", detail=detail),)
        self._clock = clock
        self._tree = _ProcessTree(clock)
        self._total_bytes = psutil.virtual_memory().total
        self._energy_j = 0.0
        self._last_t = clock()
        self._last_share = self._share()

    @classmethod
    def open(cls, ram_power_w: float | None = None) -> RamShareSource:
        total_gb = psutil.virtual_memory().total / 1e9
        if ram_power_w is not None:
            power_w, origin = ram_power_w, "ram_power_w"
        else:
            try:
                from codecarbon.external.ram import RAM

                power_w, origin = RAM(tracking_mode="machine").total_power().W, "codecarbon's DIMM model"
            except Exception as exc:  # codecarbon is a dependency; still, say why and carry on
                raise SourceUnavailable(f"no RAM estimate: codecarbon's RAM model failed ({exc})") from None
        detail = (
            f"machine RAM {total_gb:.1f} GB drawing {power_w:.1f} W ({origin}); "
            "charged by this run's share of resident memory"
        )
        return cls(power_w, detail)

    def read_j(self) -> tuple[float, ...]:
        now = self._clock()
        share = self._share()
        # trapezoid between the shares seen at the two reads
        self._energy_j += self.machine_power_w * 0.5 * (self._last_share + share) * (now - self._last_t)
        self._last_t, self._last_share = now, share
        return (self._energy_j,)

    def close(self) -> None:
        """Nothing to release."""

    def _share(self) -> float:
        rss = 0
        for proc in self._tree.processes():
            try:
                rss += proc.memory_info().rss
            except psutil.Error:
                continue
        return min(1.0, rss / self._total_bytes)
