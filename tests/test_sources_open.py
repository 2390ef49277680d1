"""open_sources: which sources run, a counter replacing the estimate it would duplicate, one note per failure."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fakes import FakeGpu, PowercapTree, make_fake_nvml, uuid

from wattwise.sources import SourceUnavailable, open_sources
from wattwise.sources.model import CpuTimeSource, RamShareSource
from wattwise.sources.rapl import RaplSource

ALL = ("nvml", "rapl", "cpu", "ram")


def component_names(opened) -> list[str]:
    return [c.name for s in opened.sources for c in s.components]


def close(opened) -> None:
    for source in opened.sources:
        source.close()


@pytest.fixture(autouse=True)
def no_gpu_env(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)


@pytest.fixture
def rapl_pkg_and_dram(tmp_path) -> PowercapTree:
    tree = PowercapTree(tmp_path)
    tree.zone("intel-rapl:0", "package-0", 1_000)
    tree.zone("intel-rapl:0:0", "core", 1_000)
    tree.zone("intel-rapl:0:1", "dram", 1_000)
    return tree


@pytest.fixture
def rapl_pkg_only(tmp_path) -> PowercapTree:
    tree = PowercapTree(tmp_path)
    tree.zone("intel-rapl:0", "package-0", 1_000)
    return tree


@pytest.fixture
def no_rapl(tmp_path):
    return tmp_path / "nowhere" / "powercap"


@pytest.fixture
def two_gpus(monkeypatch):
    fake = make_fake_nvml([FakeGpu(uuid(0)), FakeGpu(uuid(1))])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return fake


def test_rapl_package_and_dram_replace_both_estimates(rapl_pkg_and_dram, two_gpus):
    opened = open_sources(ALL, rapl_root=str(rapl_pkg_and_dram.root))
    assert component_names(opened) == ["gpu:0", "gpu:1", "cpu:0", "dram:0"]
    assert all(c.measured for s in opened.sources for c in s.components)
    assert opened.notes == []
    close(opened)


def test_rapl_without_dram_keeps_the_ram_estimate(rapl_pkg_only):
    opened = open_sources(("rapl", "cpu", "ram"), rapl_root=rapl_pkg_only.root)
    assert component_names(opened) == ["cpu:0", "ram"]
    assert [type(s) for s in opened.sources] == [RaplSource, RamShareSource]


def test_no_rapl_means_estimates_and_a_note(no_rapl, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    opened = open_sources(ALL, rapl_root=no_rapl, cpu_power_w=65.0, ram_power_w=5.0)
    assert component_names(opened) == ["cpu", "ram"]
    assert not any(c.measured for s in opened.sources for c in s.components)
    cpu, ram = opened.sources
    assert "TDP 65 W from cpu_power_w" in cpu.components[0].detail  # the arguments reach the estimates
    assert ram.machine_power_w == 5.0
    assert len(opened.notes) == 2
    assert any("pynvml is not importable" in note for note in opened.notes)
    assert any(f"no RAPL source: {no_rapl} does not exist" in note for note in opened.notes)


def test_only_the_named_sources_start(rapl_pkg_and_dram, two_gpus):
    opened = open_sources(("cpu",), rapl_root=rapl_pkg_and_dram.root)
    assert component_names(opened) == ["cpu"]
    two_gpus.nvmlInit.assert_not_called()
    assert open_sources((), rapl_root=rapl_pkg_and_dram.root).sources == []


def test_rapl_estimate_replacement_needs_rapl_to_be_asked_for(rapl_pkg_and_dram):
    opened = open_sources(("cpu", "ram"), rapl_root=rapl_pkg_and_dram.root)
    assert component_names(opened) == ["cpu", "ram"]


def test_a_gpu_counter_does_not_replace_cpu_or_ram(no_rapl, two_gpus):
    opened = open_sources(ALL, rapl_root=no_rapl)
    assert component_names(opened) == ["gpu:0", "gpu:1", "cpu", "ram"]
    close(opened)


# ---- one process per node reads RAPL ------------------------------------------------------------


def test_non_leader_neither_reads_rapl_nor_estimates_what_it_covers(rapl_pkg_and_dram):
    opened = open_sources(("rapl", "cpu", "ram"), node_leader=False, rapl_root=rapl_pkg_and_dram.root)
    assert opened.sources == []  # the leader's RAPL covers this process's CPU and DRAM
    assert opened.notes == []


def test_non_leader_estimates_what_rapl_does_not_cover(rapl_pkg_only):
    opened = open_sources(("rapl", "cpu", "ram"), node_leader=False, rapl_root=rapl_pkg_only.root)
    assert component_names(opened) == ["ram"]


def test_non_leader_without_rapl_estimates_both(no_rapl):
    opened = open_sources(("rapl", "cpu", "ram"), node_leader=False, rapl_root=no_rapl)
    assert component_names(opened) == ["cpu", "ram"]
    assert opened.notes == []  # the leader says why RAPL is missing, once per node


def test_non_leader_still_measures_its_own_gpus(rapl_pkg_and_dram, two_gpus):
    opened = open_sources(ALL, node_leader=False, rapl_root=rapl_pkg_and_dram.root)
    assert component_names(opened) == ["gpu:0", "gpu:1"]
    close(opened)


def test_non_leader_survives_rapl_crashing(monkeypatch, rapl_pkg_and_dram):
    def crash(root):
        raise OSError("I/O error reading energy_uj")

    monkeypatch.setattr(RaplSource, "open", crash)
    opened = open_sources(("rapl", "cpu", "ram"), node_leader=False, rapl_root=rapl_pkg_and_dram.root)
    assert component_names(opened) == ["cpu", "ram"]


# ---- a source that fails to start ---------------------------------------------------------------


def test_a_source_that_raises_while_starting_is_skipped_with_a_note(monkeypatch, no_rapl):
    def crash(cpu_power_w=None):
        raise ZeroDivisionError("division by zero in the TDP lookup")

    monkeypatch.setattr(CpuTimeSource, "open", crash)
    opened = open_sources(("rapl", "cpu", "ram"), rapl_root=no_rapl)
    assert component_names(opened) == ["ram"]
    crash_notes = [note for note in opened.notes if "ZeroDivisionError" in note]
    assert len(crash_notes) == 1
    assert crash_notes[0].startswith("cpu ")  # names the source
    assert "division by zero in the TDP lookup" in crash_notes[0]


def test_a_crashing_gpu_source_leaves_the_others(monkeypatch, no_rapl, two_gpus):
    two_gpus.nvmlDeviceGetCount.side_effect = RuntimeError("driver hiccup")
    opened = open_sources(ALL, rapl_root=no_rapl)
    assert component_names(opened) == ["cpu", "ram"]
    assert any(note.startswith("nvml ") and "driver hiccup" in note for note in opened.notes)


def test_unavailable_reason_is_the_note(monkeypatch, no_rapl):
    def unavailable(ram_power_w=None):
        raise SourceUnavailable("no RAM estimate: because the test says so")

    monkeypatch.setattr(RamShareSource, "open", unavailable)
    opened = open_sources(("ram",), rapl_root=no_rapl)
    assert opened.sources == []
    assert opened.notes == ["no RAM estimate: because the test says so"]


def test_rapl_permission_denied_falls_back_to_estimates_with_the_fix(monkeypatch, rapl_pkg_and_dram):
    real_read_text = Path.read_text

    def guarded(self, *args, **kwargs):
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", guarded)
    opened = open_sources(("rapl", "cpu", "ram"), rapl_root=rapl_pkg_and_dram.root)
    assert component_names(opened) == ["cpu", "ram"]
    assert len(opened.notes) == 1 and "chmod" in opened.notes[0]
