"""NVIDIA GPUs through NVML (``import pynvml``, from the nvidia-ml-py package).

Example::

    >>> from wattwise.sources.nvml import NvmlSource, SourceUnavailable
    >>> try:
    ...     gpus = NvmlSource.open()
    ... except SourceUnavailable as why:
    ...     print(why)          # e.g. "no NVIDIA GPU: NVML library not found"

Each GPU is read through its total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``, Volta
and newer, millijoules since the driver loaded). A GPU without that counter is sampled by a
background thread that integrates ``nvmlDeviceGetPowerUsage`` every 100 ms. The devices measured are
the ones this process uses: ``CUDA_VISIBLE_DEVICES`` (indices, ``GPU-`` UUIDs or ``MIG-`` UUIDs)
narrowed by ``LOCAL_RANK`` when a launcher started one process per GPU.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .base import Component, SourceUnavailable

POLL_INTERVAL_S = 0.1

__all__ = ["GpuSample", "NvmlSource", "SourceUnavailable", "parse_visible_devices", "select_for_rank"]


def parse_visible_devices(value: str | None) -> list[str] | None:
    """Entries of ``CUDA_VISIBLE_DEVICES`` in order; None when unset (every GPU is visible).

    Like CUDA, parsing stops at the first invalid entry (so ``"0,1,-1,2"`` means ``["0", "1"]``).
    """
    if value is None:
        return None
    entries: list[str] = []
    for raw in value.split(","):
        entry = raw.strip()
        if not entry:
            break
        if entry.isdigit() or entry.startswith(("GPU-", "MIG-")):
            entries.append(entry)
        else:
            break
    return entries


def select_for_rank(visible: Sequence[str], local_rank: int | None) -> list[str]:
    """The visible devices this process drives.

    One visible device: that one. Several and a local rank (torchrun, accelerate, Lightning DDP set
    ``LOCAL_RANK``): the device at that position, as ``cuda:LOCAL_RANK`` would. Otherwise all of them
    (one process using several GPUs).
    """
    if len(visible) <= 1 or local_rank is None:
        return list(visible)
    if 0 <= local_rank < len(visible):
        return [visible[local_rank]]
    return list(visible)


@dataclass(frozen=True)
class GpuSample:
    """One GPU's state at a window boundary (``NvmlSource.usage``), for the advisor."""

    name: str  # the component, "gpu:0"
    model: str
    utilization_pct: float  # share of the last sample period (1/6 s to 1 s) a kernel was running
    memory_used_bytes: float
    memory_total_bytes: float
    power_limit_w: float | None
    min_power_limit_w: float | None
    compute_capability: tuple[int, int] | None


@dataclass
class _Device:
    index: int
    handle: object
    detail: str
    counter: bool
    baseline_mj: int = 0


class NvmlSource:
    """Cumulative joules of this process's NVIDIA GPUs since ``open()``."""

    def __init__(self, devices: list[_Device], nvml, *, clock: Callable[[], float] = time.monotonic,
                 poll_thread: bool = True) -> None:
        self._nvml = nvml
        self._clock = clock
        self._devices = devices
        self.components = tuple(
            Component(f"gpu:{d.index}", kind="gpu", measured=True, source="nvml", scope="device", detail=d.detail)
            for d in devices
        )
        self._polled = [d for d in devices if not d.counter]
        self._polled_j = [0.0] * len(self._polled)
        self.failed_polls = 0
        self._facts: dict[int, tuple[float | None, float | None, tuple[int, int] | None]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_t = clock()
        self._last_w = [self._power_w(d, 0.0) for d in self._polled]
        if self._polled and poll_thread:
            self._thread = threading.Thread(target=self._poll, name="wattwise-nvml-poll", daemon=True)
            self._thread.start()

    @classmethod
    def open(cls, visible: str | None = None, local_rank: int | None = None, *,
             clock: Callable[[], float] = time.monotonic, poll_thread: bool = True) -> NvmlSource:
        """Start NVML and pick this process's GPUs; raise ``SourceUnavailable`` with the reason otherwise.

        ``visible`` and ``local_rank`` default to ``CUDA_VISIBLE_DEVICES`` and ``LOCAL_RANK``. GPUs
        without an energy counter are sampled by a thread every ``POLL_INTERVAL_S`` on ``clock``;
        ``poll_thread=False`` leaves the sampling to whoever calls ``poll()`` (tests).
        """
        try:
            import pynvml
        except ImportError as exc:  # nvidia-ml-py is a dependency, but be honest if it is missing
            raise SourceUnavailable(f"no NVIDIA GPU source: pynvml is not importable ({exc})") from None
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise SourceUnavailable(f"no NVIDIA GPU source: NVML could not start ({exc})") from None
        try:
            if visible is None:
                visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            if local_rank is None and os.environ.get("LOCAL_RANK", "").isdigit():
                local_rank = int(os.environ["LOCAL_RANK"])
            count = pynvml.nvmlDeviceGetCount()
            entries = parse_visible_devices(visible)
            if entries is None:
                entries = [str(i) for i in range(count)]
            # Like CUDA, an index past the last GPU ends the list (before LOCAL_RANK picks a position).
            for position, entry in enumerate(entries):
                if entry.isdigit() and int(entry) >= count:
                    entries = entries[:position]
                    break
            chosen = select_for_rank(entries, local_rank)
            if not chosen:
                raise SourceUnavailable(
                    f"no NVIDIA GPU source: CUDA_VISIBLE_DEVICES={visible!r} hides every GPU"
                    if count
                    else "no NVIDIA GPU source: NVML sees no GPU"
                )
            devices = _resolve(pynvml, chosen, count)
        except SourceUnavailable:
            pynvml.nvmlShutdown()
            raise
        except pynvml.NVMLError as exc:
            pynvml.nvmlShutdown()
            raise SourceUnavailable(f"no NVIDIA GPU source: NVML failed while listing GPUs ({exc})") from None
        return cls(devices, pynvml, clock=clock, poll_thread=poll_thread)

    def read_j(self) -> tuple[float, ...]:
        polled = iter(self._snapshot_polled())
        values = []
        for device in self._devices:
            if device.counter:
                now_mj = self._nvml.nvmlDeviceGetTotalEnergyConsumption(device.handle)
                values.append((now_mj - device.baseline_mj) / 1000.0)
            else:
                values.append(next(polled))
        return tuple(values)

    def usage(self) -> list[GpuSample]:
        """Utilisation and memory of each GPU now (two NVML calls a GPU), with its power limit and
        compute capability (read once). A GPU that cannot say is left out."""
        samples = []
        for device, component in zip(self._devices, self.components, strict=True):
            try:
                rates = self._nvml.nvmlDeviceGetUtilizationRates(device.handle)
                memory = self._nvml.nvmlDeviceGetMemoryInfo(device.handle)
            except self._nvml.NVMLError:
                continue
            limit_w, min_limit_w, capability = self._static_facts(device)
            samples.append(GpuSample(
                component.name, device.detail.split(",")[0], float(rates.gpu), float(memory.used),
                float(memory.total), limit_w, min_limit_w, capability,
            ))
        return samples

    def _static_facts(self, device: _Device) -> tuple[float | None, float | None, tuple[int, int] | None]:
        if device.index not in self._facts:
            nvml = self._nvml
            limit_w = min_limit_w = capability = None
            with contextlib.suppress(nvml.NVMLError):
                limit_w = nvml.nvmlDeviceGetEnforcedPowerLimit(device.handle) / 1000.0
            with contextlib.suppress(nvml.NVMLError):
                min_limit_w = nvml.nvmlDeviceGetPowerManagementLimitConstraints(device.handle)[0] / 1000.0
            with contextlib.suppress(nvml.NVMLError):
                capability = tuple(nvml.nvmlDeviceGetCudaComputeCapability(device.handle))
            self._facts[device.index] = (limit_w, min_limit_w, capability)
        return self._facts[device.index]

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * POLL_INTERVAL_S + 1.0)
        with contextlib.suppress(Exception):  # shutting down twice or after a driver fault is harmless
            self._nvml.nvmlShutdown()

    def problems(self) -> list[str]:
        """What went wrong while the source ran, for the report."""
        if not self.failed_polls:
            return []
        return [f"{self.failed_polls} NVML power reads failed; each gap was bridged with the last good reading"]

    def _snapshot_polled(self) -> list[float]:
        with self._lock:
            return list(self._polled_j)

    def poll(self) -> None:
        """Sample the power of the GPUs without a counter and integrate it since the last sample
        (trapezoids): what the thread does every ``POLL_INTERVAL_S``."""
        now = self._clock()
        power_w = [self._power_w(d, before) for d, before in zip(self._polled, self._last_w, strict=True)]
        with self._lock:
            for i, (before, after) in enumerate(zip(self._last_w, power_w, strict=True)):
                self._polled_j[i] += 0.5 * (before + after) * max(now - self._last_t, 0.0)
        self._last_t, self._last_w = now, power_w

    def _poll(self) -> None:
        while not self._stop.wait(POLL_INTERVAL_S):
            self.poll()

    def _power_w(self, device: _Device, last_w: float) -> float:
        """The device's power now; a failed read repeats the last good one (and is counted)."""
        try:
            return self._nvml.nvmlDeviceGetPowerUsage(device.handle) / 1000.0
        except Exception:  # any failure: the thread must go on, the gap is bridged and counted
            self.failed_polls += 1
            return last_w


def _resolve(nvml, entries: list[str], count: int) -> list[_Device]:
    """NVML handles for visible-device entries, each physical GPU once (MIG instances share one)."""
    by_index: dict[int, _Device] = {}
    for entry in entries:
        mig = False
        if entry.isdigit():
            if int(entry) >= count:
                continue  # CUDA ignores indices past the last GPU
            handle = nvml.nvmlDeviceGetHandleByIndex(int(entry))
        elif entry.startswith("MIG-"):
            mig = True
            handle = nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(
                nvml.nvmlDeviceGetHandleByUUID(entry)
            )
        else:
            handle = _handle_by_uuid_prefix(nvml, entry, count)
        index = nvml.nvmlDeviceGetIndex(handle)
        if index in by_index:
            continue
        name = _text(nvml.nvmlDeviceGetName(handle))
        counter = _has_energy_counter(nvml, handle)
        how = "total-energy counter" if counter else f"power sampled every {POLL_INTERVAL_S:g} s (no energy counter)"
        detail = f"{name}, {how}"
        if mig:
            detail += "; MIG: the counter covers the whole GPU, shared with its other instances"
        device = _Device(index=index, handle=handle, detail=detail, counter=counter)
        if counter:
            device.baseline_mj = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        by_index[index] = device
    return list(by_index.values())


def _handle_by_uuid_prefix(nvml, entry: str, count: int):
    """CUDA accepts any unique prefix of a GPU UUID; NVML only the whole UUID."""
    matches = []
    for i in range(count):
        handle = nvml.nvmlDeviceGetHandleByIndex(i)
        if _text(nvml.nvmlDeviceGetUUID(handle)).startswith(entry):
            matches.append(handle)
    if len(matches) != 1:
        raise SourceUnavailable(
            f"no NVIDIA GPU source: CUDA_VISIBLE_DEVICES entry {entry!r} matches {len(matches)} GPUs"
        )
    return matches[0]


def _has_energy_counter(nvml, handle) -> bool:
    try:
        nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except nvml.NVMLError:
        return False
    return True


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
