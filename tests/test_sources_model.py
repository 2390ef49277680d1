"""Estimates: CPU seconds x watts per busy thread (codecarbon's TDP table), and the run's share of RAM power."""

from __future__ import annotations

import csv
import importlib.resources
import io
import subprocess
import sys
import time
from collections import namedtuple
from types import SimpleNamespace

import psutil
import pytest
from fakes import FakeClock

from wattwise.sources import SourceUnavailable, model
from wattwise.sources.model import (
    CHILDREN_REFRESH_S,
    DEFAULT_W_PER_THREAD,
    CpuTimeSource,
    RamShareSource,
    lookup_tdp_w,
    normalize_cpu_name,
)

CpuTimes = namedtuple("CpuTimes", "user system children_user children_system")
MemInfo = namedtuple("MemInfo", "rss vms")


class FakeProcess:
    """What the sources ask of a psutil.Process; ``alive=False`` makes it raise like an exited one."""

    def __init__(self, pid: int, cpu_s: float = 0.0, rss: int = 0) -> None:
        self.pid = pid
        self.cpu_s = cpu_s
        self.reaped_children_s = 0.0  # what the OS adds to children_user/children_system on wait()
        self.rss = rss
        self.alive = True

    def cpu_times(self):
        if not self.alive:
            raise psutil.NoSuchProcess(self.pid)
        reaped = self.reaped_children_s
        return CpuTimes(self.cpu_s * 0.75, self.cpu_s * 0.25, reaped * 0.5, reaped * 0.5)

    def memory_info(self):
        if not self.alive:
            raise psutil.NoSuchProcess(self.pid)
        return MemInfo(self.rss, self.rss * 2)


@pytest.fixture
def fake_tree(monkeypatch):
    """Replace the process tree (this process and its children) by a list the test controls."""
    processes: list[FakeProcess] = []
    monkeypatch.setattr(model._ProcessTree, "processes", lambda self: list(processes))
    return processes


@pytest.fixture
def machine(monkeypatch):
    """Set the CPU model, socket count and logical CPU count that ``CpuTimeSource.open`` sees."""

    def set_machine(cpu_name: str, sockets: int, threads: int) -> None:
        monkeypatch.setattr(model, "cpu_model_name", lambda: cpu_name)
        monkeypatch.setattr(model, "socket_count", lambda: sockets)
        monkeypatch.setattr(model.psutil, "cpu_count", lambda logical=True: threads)

    return set_machine


def codecarbon_tdp_rows() -> list[tuple[str, str]]:
    data = importlib.resources.files("codecarbon") / "data" / "hardware" / "cpu_power.csv"
    with data.open(encoding="utf-8-sig") as f:
        return [(row["Name"], row["TDP"]) for row in csv.DictReader(f)]


# ---- CPU names and codecarbon's TDP table ------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("Intel(R) Xeon(R) Platinum 8380 CPU @ 2.30GHz", "Intel Xeon Platinum 8380"),
        ("Intel(R) Xeon(R) CPU E5-2686 v4 @ 2.30GHz", "Intel Xeon E5-2686 v4"),
        ("Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz", "Intel Core i7-8700"),
        ("13th Gen Intel(R) Core(TM) i9-13900K", "Intel Core i9-13900K"),
        ("11th Gen Intel(R) Core(TM) i7-1185G7 @ 3.00GHz", "Intel Core i7-1185G7"),
        ("AMD EPYC 7763 64-Core Processor", "AMD EPYC 7763"),
        ("AMD Ryzen 9 5950X 16-Core Processor", "AMD Ryzen 9 5950X"),
        ("AMD EPYC", "AMD EPYC"),
        ("6th Gen A10-8700P APU", "6th Gen A10-8700P APU"),  # a name in the table itself, left as is
    ],
)
def test_normalize_cpu_name(raw, normalized):
    assert normalize_cpu_name(raw) == normalized


@pytest.mark.parametrize(
    ("cpuinfo_name", "table_name"),
    [
        ("Intel(R) Xeon(R) Platinum 8380 CPU @ 2.30GHz", "Intel Xeon Platinum 8380"),
        ("AMD EPYC 7763 64-Core Processor", "AMD EPYC 7763"),
        ("13th Gen Intel(R) Core(TM) i9-13900K", "Intel Core i9-13900K"),
        ("Intel(R) Xeon(R) CPU E5-2686 v4 @ 2.30GHz", "Intel Xeon E5-2686 v4"),
    ],
)
def test_tdp_comes_from_codecarbons_table(cpuinfo_name, table_name):
    tdp = dict(codecarbon_tdp_rows())[table_name]
    assert lookup_tdp_w(cpuinfo_name) == float(tdp)


def test_every_unambiguous_table_row_is_found_by_its_own_name():
    by_key: dict[str, set[float]] = {}
    rows = []
    for name, tdp in codecarbon_tdp_rows():
        try:
            value = float(tdp)
        except ValueError:
            continue
        rows.append((name, value))
        by_key.setdefault(normalize_cpu_name(name).lower(), set()).add(value)
    checked = 0
    for name, value in rows:
        if len(by_key[normalize_cpu_name(name).lower()]) == 1:
            assert lookup_tdp_w(name) == value, name
            checked += 1
    assert checked > 1000  # the table has thousands of rows


def test_unknown_cpu_has_no_tdp():
    assert lookup_tdp_w("AMD EPYC") is None
    assert lookup_tdp_w("Imaginary Chip 9000") is None


def test_cpuinfo_parsing(monkeypatch):
    cpuinfo = (
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz\nphysical id\t: 0\n\n"
        "processor\t: 1\nmodel name\t: Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz\nphysical id\t: 1\n\n"
        "processor\t: 2\nmodel name\t: Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz\nphysical id\t: 1\n"
    )
    monkeypatch.setattr(model, "open", lambda path, *a, **k: io.StringIO(cpuinfo), raising=False)
    assert model.cpu_model_name() == "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz"
    assert model.socket_count() == 2


# ---- CpuTimeSource ------------------------------------------------------------------------------------


def test_cpu_power_argument_sets_the_tdp(machine):
    machine("Intel(R) Xeon(R) Platinum 8380 CPU @ 2.30GHz", sockets=2, threads=16)
    source = CpuTimeSource.open(cpu_power_w=65.0)
    assert source.watts_per_thread == pytest.approx(65.0 * 2 / 16)  # the argument beats the table
    component = source.components[0]
    assert (component.name, component.kind, component.measured, component.scope) == ("cpu", "cpu", False, "process")
    assert "TDP 65 W from cpu_power_w" in component.detail


def test_known_cpu_uses_the_table(machine):
    machine("Intel(R) Xeon(R) Platinum 8380 CPU @ 2.30GHz", sockets=2, threads=160)
    source = CpuTimeSource.open()
    assert source.watts_per_thread == pytest.approx(270.0 * 2 / 160)
    assert "codecarbon's TDP table" in source.components[0].detail


def test_unknown_cpu_uses_codecarbons_default_and_says_so(machine):
    machine("AMD EPYC", sockets=1, threads=8)
    source = CpuTimeSource.open()
    assert source.watts_per_thread == DEFAULT_W_PER_THREAD == 4.0
    detail = source.components[0].detail
    assert "not in codecarbon's TDP table" in detail and "cpu_power_w=" in detail


def test_cpu_energy_is_cpu_seconds_times_watts(fake_tree):
    root, worker = FakeProcess(1, cpu_s=12.0), FakeProcess(2, cpu_s=2.0)
    fake_tree[:] = [root, worker]
    source = CpuTimeSource(watts_per_thread=5.0, detail="test")
    assert source.read_j() == (0.0,)  # CPU time before open is not this run's

    root.cpu_s += 3.0
    worker.cpu_s += 1.0
    assert source.read_j() == pytest.approx((20.0,))

    worker.cpu_s += 0.5
    worker.alive = False  # exited and waited for: its seconds move to the parent's children_*
    root.reaped_children_s += worker.cpu_s
    root.cpu_s += 1.0
    assert source.read_j() == pytest.approx((27.5,))

    late = FakeProcess(3, cpu_s=0.4)  # started after open: all of its time is this run's
    fake_tree.append(late)
    assert source.read_j() == pytest.approx((29.5,))

    root.reaped_children_s += 2.0  # a short-lived child never seen in the list
    assert source.read_j() == pytest.approx((39.5,))


def test_cpu_seconds_never_go_backwards(fake_tree):
    root, worker = FakeProcess(1, cpu_s=1.0), FakeProcess(2, cpu_s=5.0)
    fake_tree[:] = [root, worker]
    source = CpuTimeSource(watts_per_thread=1.0, detail="test")
    worker.cpu_s += 2.0
    assert source.read_j() == pytest.approx((2.0,))
    worker.alive = False  # exited, its parent has not waited for it yet: its seconds are nowhere
    assert source.read_j() == pytest.approx((2.0,))
    root.reaped_children_s += worker.cpu_s
    assert source.read_j() == pytest.approx((2.0,))


def test_cpu_time_of_a_real_child_process_counts():
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        parent = psutil.Process()
        parent_before = sum(parent.cpu_times()[:2])
        source = CpuTimeSource(watts_per_thread=10.0, detail="test")  # sees the child at open
        deadline = time.monotonic() + 30.0
        energy_j = 0.0
        while energy_j < 3.0 and time.monotonic() < deadline:  # 0.3 CPU seconds x 10 W
            time.sleep(0.05)
            energy_j = source.read_j()[0]
        parent_s = sum(parent.cpu_times()[:2]) - parent_before
        assert energy_j / 10.0 - parent_s >= 0.2  # most of it is the child's
    finally:
        child.kill()
        child.wait()
    assert source.read_j()[0] >= energy_j  # the exited child's seconds are kept


def test_children_list_is_refreshed_on_its_interval():
    clock = FakeClock(100.0)
    tree = model._ProcessTree(clock)
    assert [p.pid for p in tree.processes()] == [tree.root.pid] + [c.pid for c in tree.root.children(recursive=True)]
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert child.pid not in [p.pid for p in tree.processes()]  # cached list
        clock.now += CHILDREN_REFRESH_S
        assert child.pid in [p.pid for p in tree.processes()]
    finally:
        child.kill()
        child.wait()


# ---- RamShareSource -----------------------------------------------------------------------------------


def test_ram_energy_is_power_times_share_integrated(fake_tree, monkeypatch):
    monkeypatch.setattr(model.psutil, "virtual_memory", lambda: SimpleNamespace(total=1_000))
    root, worker = FakeProcess(1, rss=60), FakeProcess(2, rss=40)
    fake_tree[:] = [root, worker]
    clock = FakeClock(100.0)
    source = RamShareSource(machine_power_w=20.0, detail="test", clock=clock)
    assert source.read_j() == (0.0,)

    clock.now += 10.0
    root.rss = 260  # share 0.1 -> 0.3: trapezoid 20 W x 0.2 x 10 s
    assert source.read_j() == pytest.approx((40.0,))

    clock.now += 5.0
    worker.alive = False  # an exited process holds no memory: share 0.26
    assert source.read_j() == pytest.approx((40.0 + 20.0 * 0.5 * (0.3 + 0.26) * 5.0,))

    clock.now += 1.0
    root.rss = 5_000  # never more than the whole machine
    assert source.read_j() == pytest.approx((40.0 + 28.0 + 20.0 * 0.5 * (0.26 + 1.0) * 1.0,))


def test_ram_share_of_this_process_is_real(monkeypatch):
    clock = FakeClock(100.0)
    source = RamShareSource(machine_power_w=20.0, detail="test", clock=clock)
    clock.now += 100.0
    energy_j = source.read_j()[0]
    rss = psutil.Process().memory_info().rss
    total = psutil.virtual_memory().total
    assert energy_j == pytest.approx(20.0 * 100.0 * rss / total, rel=0.5)
    assert 0 < energy_j < 20.0 * 100.0


def test_ram_power_argument(monkeypatch):
    source = RamShareSource.open(ram_power_w=7.5)
    assert source.machine_power_w == 7.5
    component = source.components[0]
    assert (component.name, component.kind, component.measured, component.scope) == ("ram", "ram", False, "process")
    assert "7.5 W (ram_power_w)" in component.detail


def test_ram_power_defaults_to_codecarbons_model():
    from codecarbon.external.ram import RAM

    source = RamShareSource.open()
    assert source.machine_power_w == pytest.approx(RAM(tracking_mode="machine").total_power().W)
    assert "codecarbon's DIMM model" in source.components[0].detail


def test_ram_model_failure_is_unavailable(monkeypatch):
    from codecarbon.external.ram import RAM

    def broken(self):
        raise RuntimeError("no DIMM information")

    monkeypatch.setattr(RAM, "total_power", broken)
    with pytest.raises(SourceUnavailable, match="no DIMM information"):
        RamShareSource.open()
