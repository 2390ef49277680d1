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

psutil may be refused a process's figures (``AccessDenied``, in hardened containers). A child's
refusal is skipped silently (its CPU seconds reach its parent's ``children_*`` once it exits);
this process's own is not: its CPU seconds then come from ``os.times()`` and its resident memory
from its peak (``getrusage``, an upper bound), both kernel calls that need no permission, the
component's ``detail`` says so and ``problems()`` gives a note. If even those fail, the estimate
stops counting this process there, and says so.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import importlib.resources
import os
import platform
import re
import sys
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


class _OwnFigure:
    """Where this process's own figure comes from: psutil until it refuses, then ``fallback`` (a
    kernel call that needs no permission: ``instead`` says what it gives), then nothing; said once."""

    def __init__(self, what: str, fallback: str, instead: str, clock: Callable[[], float]) -> None:
        self.what, self.fallback, self.instead = what, fallback, instead
        self._clock = clock
        self._opened_at = clock()
        self.refused: str | None = None  # why psutil gave no figure, and when
        self.stopped: str | None = None  # why the fallback gave none either, and when

    def refuse(self, exc: BaseException) -> None:
        self.refused = f"{_why(exc)}, {self._clock() - self._opened_at:.0f} s in"

    def stop(self, exc: BaseException | None) -> None:
        self.stopped = f"{_why(exc) if exc is not None else 'no answer'}, {self._clock() - self._opened_at:.0f} s in"

    def label(self, component: Component, detail: str) -> Component:
        """``component`` with ``detail`` saying where this process's figure came from."""
        if self.stopped is not None:
            detail += (f"; stopped counting this process: psutil was refused its {self.what} ({self.refused}) "
                       f"and {self.fallback} failed too ({self.stopped})")
        elif self.refused is not None:
            detail += f"; since psutil was refused this process's {self.what} ({self.refused}), {self.instead}"
        return dataclasses.replace(component, detail=detail)

    def problems(self, stopped_means: str) -> list[str]:
        if self.stopped is not None:
            return [f"psutil was refused this process's {self.what} ({self.refused}) and {self.fallback} failed "
                    f"too ({self.stopped}): {stopped_means}"]
        if self.refused is not None:
            return [f"psutil was refused this process's {self.what} ({self.refused}): from then on {self.instead} "
                    "(a kernel call that needs no permission; the component's detail says so)"]
        return []


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _kernel_cpu_seconds() -> float:
    """This process's CPU seconds and its waited-for children's, from ``times(2)`` (OSError if it fails)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _peak_rss_bytes() -> int:
    """This process's peak resident memory from ``getrusage(2)`` (not on Windows: ImportError)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, kilobytes elsewhere


class CpuTimeSource:
    """Estimated CPU energy of this process tree: CPU seconds x watts per busy thread."""

    def __init__(self, watts_per_thread: float, detail: str) -> None:
        self.watts_per_thread = watts_per_thread
        self.components = (Component("cpu", kind="cpu", measured=False, source="cpu-time x TDP", scope="process", detail=detail),)
        self._detail = detail
        self._tree = _ProcessTree()
        self._last_s = 0.0
        self._own = _OwnFigure("CPU times", "os.times()", "its CPU seconds are read with os.times()",
                               time.monotonic)
        self._own_last: tuple[float, float | None] | None = None  # its psutil seconds at the last read, os.times()'
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

    def problems(self) -> list[str]:
        """This process's CPU times refused by psutil (and how the estimate went on), once."""
        stopped = f"the CPU estimate stopped there, at {(self._last_s - self._start_s) * self.watts_per_thread:.1f} J"
        return self._own.problems(stopped)

    def _cpu_seconds(self) -> float:
        """CPU seconds of the process tree: each live process's own and its reaped children's.

        A child that has exited and been waited for (a DataLoader worker at the end of an epoch,
        however short-lived) is in its parent's ``children_user``/``children_system``; a child that
        exits between two reads moves from one term to the other, so the total is kept monotonic.
        """
        if self._own.stopped is not None:
            return self._last_s
        root, *children = self._tree.processes()
        total_s = self._own_seconds(root)
        for proc in children:
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue  # exited since the list was made (its parent's children_* now hold it), or not ours
            total_s += times.user + times.system + times.children_user + times.children_system
        if self._own.stopped is None:
            self._last_s = max(self._last_s, total_s)
        return self._last_s

    def _own_seconds(self, root: psutil.Process) -> float:
        """This process's CPU seconds (its threads and its reaped children): psutil's; once psutil refuses
        them, its last figure plus what ``os.times()`` (the same kernel counts) has added since."""
        try:
            kernel_s, kernel_error = _kernel_cpu_seconds(), None
        except OSError as exc:
            kernel_s, kernel_error = None, exc
        if self._own.refused is None:
            try:
                times = root.cpu_times()
            except (psutil.Error, OSError) as exc:  # AccessDenied: this process is not to be skipped
                self._own.refuse(exc)
            else:
                own_s = times.user + times.system + times.children_user + times.children_system
                self._own_last = (own_s, kernel_s)
                return own_s
        if self._own_last is None:  # refused from the start: counted from now
            self._own_last = (0.0, kernel_s)
        own_s, kernel_then_s = self._own_last
        if kernel_s is None or kernel_then_s is None:
            self._own.stop(kernel_error)
        else:
            own_s += max(0.0, kernel_s - kernel_then_s)
        self.components = (self._own.label(self.components[0], self._detail),)
        return own_s


class RamShareSource:
    """Estimated RAM energy of this run: machine RAM power x (run's resident memory / machine memory)."""

    def __init__(self, machine_power_w: float, detail: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.machine_power_w = machine_power_w
        self.components = (Component("ram", kind="ram", measured=False, source="ram model", scope="process", detail=detail),)
        self._clock = clock
        self._detail = detail
        self._tree = _ProcessTree(clock)
        self._total_bytes = psutil.virtual_memory().total
        self._own = _OwnFigure("memory", "getrusage()", "its peak resident memory (getrusage(), an upper bound) "
                               "stands in for its resident memory", clock)
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
        # trapezoid between the shares seen at the two reads; nothing over a clock that went back (the
        # meter, reading the same clock, says so), never a negative time
        if now >= self._last_t:
            self._energy_j += self.machine_power_w * 0.5 * (self._last_share + share) * (now - self._last_t)
        self._last_t, self._last_share = now, share
        return (self._energy_j,)

    def close(self) -> None:
        """Nothing to release."""

    def problems(self) -> list[str]:
        """This process's memory refused by psutil (and how the estimate went on), once."""
        return self._own.problems("from then on the RAM estimate counts only its child processes' memory")

    def _share(self) -> float:
        root, *children = self._tree.processes()
        rss = self._own_bytes(root)
        for proc in children:
            try:
                rss += proc.memory_info().rss
            except psutil.Error:
                continue  # exited since the list was made, or not ours to read
        return min(1.0, rss / self._total_bytes)

    def _own_bytes(self, root: psutil.Process) -> int:
        """This process's resident memory: psutil's; once refused, its peak (an upper bound); else 0."""
        if self._own.refused is None:
            try:
                return root.memory_info().rss
            except (psutil.Error, OSError) as exc:  # AccessDenied: this process is not to be skipped
                self._own.refuse(exc)
        if self._own.stopped is None:
            try:
                return _peak_rss_bytes()
            except Exception as exc:  # no resource module (Windows), or the call failed
                self._own.stop(exc)
            finally:
                self.components = (self._own.label(self.components[0], self._detail),)
        return 0
