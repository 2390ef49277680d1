"""RAPL source on a powercap tree laid out as Linux lays it out.

``/sys/class/powercap`` holds symlinks into ``/sys/devices/virtual/powercap``: the control type
``intel-rapl`` and one entry per zone, sub-zones included (``intel-rapl:0:0`` is both a directory
inside ``intel-rapl:0`` and a top-level symlink). Each zone has ``name``, ``energy_uj``,
``max_energy_range_uj`` and ``enabled``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import PowercapTree

from wattwise.sources import SourceUnavailable
from wattwise.sources.rapl import RaplSource


@pytest.fixture
def intel_laptop(tmp_path) -> PowercapTree:
    """One package with core, uncore and dram sub-zones, and the platform (psys) zone."""
    tree = PowercapTree(tmp_path)
    tree.zone("intel-rapl:0", "package-0", 1_000_000)
    tree.zone("intel-rapl:0:0", "core", 2_000_000)
    tree.zone("intel-rapl:0:1", "uncore", 3_000_000)
    tree.zone("intel-rapl:0:2", "dram", 4_000_000, max_range_uj=65_712_999_613)
    tree.zone("intel-rapl:1", "psys", 5_000_000)
    return tree


@pytest.fixture
def intel_server(tmp_path) -> PowercapTree:
    """Two sockets, each a package with a dram sub-zone."""
    tree = PowercapTree(tmp_path)
    tree.zone("intel-rapl:0", "package-0", 10_000_000)
    tree.zone("intel-rapl:0:0", "dram", 20_000_000)
    tree.zone("intel-rapl:1", "package-1", 30_000_000)
    tree.zone("intel-rapl:1:0", "dram", 40_000_000)
    return tree


@pytest.fixture
def amd(tmp_path) -> PowercapTree:
    """AMD Zen (read by the intel_rapl_msr driver since Linux 5.8): package zones only."""
    tree = PowercapTree(tmp_path)
    tree.zone("intel-rapl:0", "package-0", 123_456)
    tree.zone("intel-rapl:1", "package-1", 654_321)
    return tree


def names(source: RaplSource) -> list[str]:
    return [c.name for c in source.components]


def test_the_fake_tree_has_the_sysfs_layout(intel_laptop):
    root = intel_laptop.root
    assert (root / "intel-rapl").is_symlink() and (root / "intel-rapl" / "intel-rapl:0").is_dir()
    assert (root / "intel-rapl:0:2").is_symlink()
    assert (root / "intel-rapl:0" / "intel-rapl:0:2").is_dir()
    assert (root / "intel-rapl:0:2").resolve() == (root / "intel-rapl:0" / "intel-rapl:0:2").resolve()


def test_intel_server_packages_and_dram(intel_server):
    source = RaplSource.open(intel_server.root)
    assert names(source) == ["cpu:0", "dram:0", "cpu:1", "dram:1"]
    assert [c.kind for c in source.components] == ["cpu", "dram", "cpu", "dram"]
    assert all(c.measured and c.source == "rapl" and c.scope == "node" for c in source.components)
    assert "intel-rapl:1:0" in source.components[3].detail

    assert source.read_j() == (0.0, 0.0, 0.0, 0.0)  # the counters' values at open are not this run's
    intel_server.add("intel-rapl:0", 5_000_000)
    intel_server.add("intel-rapl:0:0", 1_500_000)
    intel_server.add("intel-rapl:1", 2_000_000)
    intel_server.add("intel-rapl:1:0", 250_000)
    assert source.read_j() == pytest.approx((5.0, 1.5, 2.0, 0.25))
    intel_server.add("intel-rapl:0", 1_000_000)
    assert source.read_j() == pytest.approx((6.0, 1.5, 2.0, 0.25))  # cumulative since open


def test_core_uncore_and_psys_are_not_counted(intel_laptop):
    source = RaplSource.open(intel_laptop.root)
    assert names(source) == ["cpu:0", "dram:0"]
    intel_laptop.add("intel-rapl:0", 5_000_000)
    intel_laptop.add("intel-rapl:0:0", 4_000_000)  # core: inside the package's figure
    intel_laptop.add("intel-rapl:0:1", 500_000)  # uncore: inside the package's figure
    intel_laptop.add("intel-rapl:0:2", 1_000_000)
    intel_laptop.add("intel-rapl:1", 20_000_000)  # psys: the whole platform, package included
    assert source.read_j() == pytest.approx((5.0, 1.0))
    assert sum(source.read_j()) == pytest.approx(6.0)


def test_amd_package_zones_only(amd):
    source = RaplSource.open(amd.root)
    assert names(source) == ["cpu:0", "cpu:1"]
    amd.add("intel-rapl:1", 3_000_000)
    assert source.read_j() == pytest.approx((0.0, 3.0))


def test_mmio_interface_duplicate_of_the_package_is_ignored(intel_laptop):
    """Recent laptops expose the package a second time through ``intel-rapl-mmio``."""
    intel_laptop.add_control("intel-rapl-mmio")
    intel_laptop.zone("intel-rapl-mmio:0", "package-0", 9_000_000)
    source = RaplSource.open(intel_laptop.root)
    assert names(source) == ["cpu:0", "dram:0"]
    intel_laptop.add("intel-rapl:0", 2_000_000)
    intel_laptop.add("intel-rapl-mmio:0", 2_000_000)
    assert source.read_j() == pytest.approx((2.0, 0.0))


def test_wraparound_at_max_energy_range(tmp_path):
    tree = PowercapTree(tmp_path)
    tree.zone("intel-rapl:0", "package-0", energy_uj=900_000, max_range_uj=1_000_000)
    source = RaplSource.open(tree.root)
    tree.set("intel-rapl:0", 950_000)
    assert source.read_j() == pytest.approx((0.05,))
    tree.set("intel-rapl:0", 100_000)  # wrapped: 50_000 up to the range, then 100_000 past zero
    assert source.read_j() == pytest.approx((0.05 + 0.15,))
    tree.set("intel-rapl:0", 400_000)  # and on normally after the wrap
    assert source.read_j() == pytest.approx((0.5,))


def test_wraparound_between_open_and_first_read(tmp_path):
    tree = PowercapTree(tmp_path)
    tree.zone("intel-rapl:0", "package-0", energy_uj=65_000_000_000, max_range_uj=65_712_999_613)
    source = RaplSource.open(tree.root)
    tree.set("intel-rapl:0", 287_000_387)
    assert source.read_j() == pytest.approx(((65_712_999_613 - 65_000_000_000 + 287_000_387) / 1e6,))


def test_permission_denied_says_how_to_fix_it(intel_server, monkeypatch):
    real_read_text = Path.read_text

    def guarded(self, *args, **kwargs):
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", guarded)
    with pytest.raises(SourceUnavailable) as raised:
        RaplSource.open(intel_server.root)
    message = str(raised.value)
    assert "permission denied" in message
    assert "energy_uj" in message
    assert "chmod -R a+r /sys/class/powercap/intel-rapl" in message
    assert "udev" in message


def test_no_powercap_directory(tmp_path):
    with pytest.raises(SourceUnavailable, match="does not exist"):
        RaplSource.open(tmp_path / "class" / "powercap")


def test_no_package_or_dram_zone(tmp_path):
    tree = PowercapTree(tmp_path)
    tree.zone("intel-rapl:0", "psys")
    with pytest.raises(SourceUnavailable, match="no package or dram zone"):
        RaplSource.open(tree.root)
