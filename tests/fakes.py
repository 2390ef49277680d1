"""Test doubles for what cannot exist on a CPU-only CI machine, built faithfully.

- ``make_fake_nvml``: a ``pynvml`` made with ``unittest.mock.create_autospec`` from the real module
  (nvidia-ml-py), keeping its real exception classes and error codes;
- ``PowercapTree``: a ``/sys/class/powercap`` tree with the real sysfs layout (zones are
  directories under ``devices/virtual/powercap`` with top-level symlinks, sub-zones nested);
- ``FakeClock`` and ``SteadySource``: time that moves when a test says so, and a source of our own
  interface drawing constant power, for exact arithmetic;
- ``on_clock`` and ``steady_sources``: an integration's ``EnergyCallback`` whose runs read a
  ``FakeClock`` (and sources that draw constant power on it), so that windows close at step counts
  the test chooses, never at the machine's speed: a test advances the clock from a framework
  callback (or a trainer's step) as each batch runs.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from unittest.mock import create_autospec

import pynvml

from wattwise.sources import Component

MAX_RANGE_UJ = 262_143_328_850  # a typical package range


PROBE_WATTS = 100.0  # the power of the ``steady`` fixture (conftest.py)


class FakeClock:
    """Time that moves only when the test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class SteadySource:
    """Constant power per component on a clock (tests of the arithmetic)."""

    def __init__(self, watts: dict[str, float], clock=time.monotonic) -> None:
        self.watts = watts
        self._clock = clock
        self._t0 = clock()
        self.components = tuple(
            Component(name, kind=name.split(":")[0], measured=True, source="steady", scope="device")
            for name in watts
        )

    def read_j(self):
        elapsed = self._clock() - self._t0
        return tuple(w * elapsed for w in self.watts.values())

    def close(self):
        pass


def on_clock(callback, clock: FakeClock, framework: str):
    """``callback`` (any integration's ``EnergyCallback``, just constructed) with its runs on ``clock``;
    ``callback.clock`` is that clock, for the test to advance. Returns the callback."""
    from wattwise.runs import RunSeries

    callback.runs = RunSeries(callback, framework=framework, clock=clock)
    callback.clock = clock
    return callback


def steady_sources(watts: dict[str, float], clock: FakeClock):
    """A stand-in for ``wattwise.sources.open_sources`` (monkeypatch it): every run draws ``watts`` on
    ``clock``, so a run's energy is exactly power x the time the test moved the clock by."""
    from wattwise.sources import OpenedSources

    def open_sources(names, **kwargs):
        return OpenedSources([SteadySource(watts, clock)])

    return open_sources


# ---- a fake RAPL tree ----------------------------------------------------------------------------


class PowercapTree:
    """A fake sysfs: ``root`` is the ``/sys/class/powercap`` to pass to ``RaplSource.open``."""

    def __init__(self, base: Path, control: str = "intel-rapl") -> None:
        self.devices = base / "devices" / "virtual" / "powercap"
        self.root = base / "class" / "powercap"
        self.root.mkdir(parents=True, exist_ok=True)
        self.add_control(control)

    def add_control(self, control: str) -> None:
        directory = self.devices / control
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "enabled").write_text("1\n")
        link = self.root / control
        if not link.exists():
            link.symlink_to(os.path.relpath(directory, self.root))

    def zone(self, zone: str, label: str, energy_uj: int = 0, max_range_uj: int = MAX_RANGE_UJ) -> Path:
        control = zone.split(":")[0]
        parts = zone.split(":")
        directory = self.devices / control
        for depth in range(2, len(parts) + 1):  # intel-rapl:0:1 lives inside intel-rapl:0
            directory = directory / ":".join(parts[:depth])
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "name").write_text(label + "\n")
        (directory / "energy_uj").write_text(f"{energy_uj}\n")
        (directory / "max_energy_range_uj").write_text(f"{max_range_uj}\n")
        (directory / "enabled").write_text("1\n")
        (self.root / zone).symlink_to(os.path.relpath(directory, self.root))
        return directory

    def set(self, zone: str, energy_uj: int) -> None:
        (self.root / zone / "energy_uj").write_text(f"{energy_uj}\n")

    def add(self, zone: str, delta_uj: int) -> None:
        now = int((self.root / zone / "energy_uj").read_text())
        self.set(zone, now + delta_uj)


def advance_rapl(root: Path, zone: str, joules: float) -> None:
    """Advance ``zone``'s counter under a powercap ``root`` (``PowercapTree.root``, from any process)
    by ``joules``, atomically: a reader in another process never sees a half-written file."""
    path = (Path(root) / zone / "energy_uj").resolve()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{int(path.read_text()) + round(joules * 1e6)}\n")
    os.replace(tmp, path)


# ---- a fake NVML driver --------------------------------------------------------------------------


@dataclass
class FakeGpu:
    """One physical GPU as the fake driver sees it. ``energy_mj=None``: no total-energy counter."""

    uuid: str
    energy_mj: int | None = 5_000_000
    power_mw: int = 300_000
    name: str = "NVIDIA H100 80GB HBM3"
    migs: tuple[str, ...] = ()
    utilization_pct: int = 90  # nvmlDeviceGetUtilizationRates().gpu
    memory_used_bytes: int = 20 * 2**30
    memory_total_bytes: int = 80 * 2**30
    power_limit_mw: int = 700_000  # enforced limit
    min_power_limit_mw: int = 200_000
    compute_capability: tuple[int, int] = (9, 0)


@dataclass(eq=False)
class FakeHandle:
    gpu: FakeGpu
    index: int
    mig_uuid: str | None = None
    parent: FakeHandle | None = field(default=None, repr=False)


def nvml_error(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)  # returns the matching subclass, as the real bindings do


def make_fake_nvml(gpus: list[FakeGpu]):
    fake = create_autospec(pynvml, spec_set=True)
    for name in dir(pynvml):  # keep the real exception classes and error codes
        if name.startswith(("NVMLError", "NVML_ERROR_")):
            setattr(fake, name, getattr(pynvml, name))

    handles = [FakeHandle(gpu, i) for i, gpu in enumerate(gpus)]
    mig_handles = {
        mig: FakeHandle(h.gpu, h.index, mig_uuid=mig, parent=h) for h in handles for mig in h.gpu.migs
    }

    def physical(handle: FakeHandle) -> FakeHandle:
        if handle.mig_uuid is not None:  # NVML answers these per physical GPU only
            raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return handle

    def by_index(index):
        if not 0 <= index < len(handles):
            raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return handles[index]

    def by_uuid(uuid):
        for handle in handles:
            if handle.gpu.uuid == uuid:
                return handle
        if uuid in mig_handles:
            return mig_handles[uuid]
        raise nvml_error(pynvml.NVML_ERROR_NOT_FOUND)

    def parent_of(mig_handle):
        if mig_handle.parent is None:
            raise nvml_error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return mig_handle.parent

    def energy(handle):
        gpu = physical(handle).gpu
        if gpu.energy_mj is None:
            raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return gpu.energy_mj

    fake.nvmlInit.return_value = None
    fake.nvmlShutdown.return_value = None
    fake.nvmlDeviceGetCount.return_value = len(gpus)
    fake.nvmlDeviceGetHandleByIndex.side_effect = by_index
    fake.nvmlDeviceGetHandleByUUID.side_effect = by_uuid
    fake.nvmlDeviceGetDeviceHandleFromMigDeviceHandle.side_effect = parent_of
    fake.nvmlDeviceGetIndex.side_effect = lambda h: physical(h).index
    fake.nvmlDeviceGetName.side_effect = lambda h: physical(h).gpu.name
    fake.nvmlDeviceGetUUID.side_effect = lambda h: physical(h).gpu.uuid
    fake.nvmlDeviceGetTotalEnergyConsumption.side_effect = energy
    fake.nvmlDeviceGetPowerUsage.side_effect = lambda h: physical(h).gpu.power_mw

    def utilization(handle):
        rates = pynvml.c_nvmlUtilization_t()  # the real struct the bindings return
        rates.gpu, rates.memory = physical(handle).gpu.utilization_pct, 0
        return rates

    def memory(handle):
        gpu = physical(handle).gpu
        info = pynvml.c_nvmlMemory_t()
        info.total, info.used = gpu.memory_total_bytes, gpu.memory_used_bytes
        info.free = gpu.memory_total_bytes - gpu.memory_used_bytes
        return info

    fake.nvmlDeviceGetUtilizationRates.side_effect = utilization
    fake.nvmlDeviceGetMemoryInfo.side_effect = memory
    fake.nvmlDeviceGetEnforcedPowerLimit.side_effect = lambda h: physical(h).gpu.power_limit_mw
    fake.nvmlDeviceGetPowerManagementLimitConstraints.side_effect = lambda h: [
        physical(h).gpu.min_power_limit_mw, physical(h).gpu.power_limit_mw
    ]
    fake.nvmlDeviceGetCudaComputeCapability.side_effect = lambda h: physical(h).gpu.compute_capability
    return fake


def uuid(n: int) -> str:
    return f"GPU-{n:04x}aaaa-1111-2222-3333-44445555{n:04x}"
