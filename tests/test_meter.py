"""EnergyMeter: one reading of every source; a broken source is dropped once and its energy kept."""

from __future__ import annotations

import pytest
from fakes import FakeClock

from wattwise.meter import EnergyMeter, Reading
from wattwise.sources import Component


class ScriptedSource:
    """Returns the scripted cumulative values in turn; an exception in the script is raised instead."""

    def __init__(self, names: list[str], script: list) -> None:
        self.components = tuple(
            Component(name, kind=name.split(":")[0], measured=True, source="scripted", scope="device") for name in names
        )
        self._script = list(script)
        self.reads = 0
        self.closed = False

    def read_j(self):
        self.reads += 1
        step = self._script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step

    def close(self):
        self.closed = True


def test_components_and_readings_follow_the_sources_order(steady_source):
    clock = FakeClock(50.0)
    gpus = steady_source({"gpu:0": 300.0, "gpu:1": 200.0}, clock)
    cpu = steady_source({"cpu": 50.0}, clock)
    meter = EnergyMeter([gpus, cpu], clock=clock)
    assert [c.name for c in meter.components] == ["gpu:0", "gpu:1", "cpu"]

    clock.now += 2.0
    reading = meter.read()
    assert isinstance(reading, Reading)
    assert reading.timestamp_s == 52.0
    assert reading.energy_j == pytest.approx((600.0, 400.0, 100.0))
    assert reading.total_j == pytest.approx(1100.0)
    assert meter.notes == []


def test_no_sources_reads_nothing():
    meter = EnergyMeter([], clock=FakeClock(50.0))
    assert meter.components == ()
    assert meter.read().energy_j == ()
    assert meter.read().total_j == 0


def test_a_source_raising_is_dropped_with_one_note_and_its_energy_kept():
    broken = ScriptedSource(["gpu:0", "gpu:1"], [(1.0, 2.0), (5.0, 7.0), RuntimeError("GPU fell off the bus")])
    healthy = ScriptedSource(["cpu"], [(10.0,), (20.0,), (30.0,), (40.0,), (50.0,)])
    clock = FakeClock(50.0)
    meter = EnergyMeter([broken, healthy], clock=clock)

    totals = []
    for expected in [(1.0, 2.0, 10.0), (5.0, 7.0, 20.0), (5.0, 7.0, 30.0), (5.0, 7.0, 40.0), (5.0, 7.0, 50.0)]:
        clock.now += 1.0
        reading = meter.read()
        assert reading.energy_j == expected
        totals.append(reading.total_j)

    assert broken.reads == 3  # never asked again after it failed
    assert healthy.reads == 5
    assert len(meter.notes) == 1
    note = meter.notes[0]
    assert "gpu:0, gpu:1" in note and "RuntimeError: GPU fell off the bus" in note and "kept" in note
    assert totals == sorted(totals)  # never backwards


def test_a_source_failing_on_its_first_read_counts_zero():
    broken = ScriptedSource(["dram:0"], [PermissionError("energy_uj")])
    healthy = ScriptedSource(["cpu"], [(1.0,), (2.0,)])
    meter = EnergyMeter([broken, healthy], clock=FakeClock(50.0))
    assert meter.read().energy_j == (0.0, 1.0)
    assert meter.read().energy_j == (0.0, 2.0)
    assert len(meter.notes) == 1 and "PermissionError" in meter.notes[0]


def test_a_source_returning_the_wrong_number_of_values_is_dropped():
    wrong = ScriptedSource(["gpu:0", "gpu:1"], [(1.0, 1.0), (2.0,)])
    meter = EnergyMeter([wrong], clock=FakeClock(50.0))
    assert meter.read().energy_j == (1.0, 1.0)
    assert meter.read().energy_j == (1.0, 1.0)
    assert len(meter.notes) == 1
    assert "returned 1 values for 2 components" in meter.notes[0]


def test_the_component_list_never_changes_when_a_source_is_dropped():
    broken = ScriptedSource(["gpu:0"], [ValueError("bad")])
    meter = EnergyMeter([broken, ScriptedSource(["cpu"], [(1.0,)])], clock=FakeClock(50.0))
    before = meter.components
    assert len(meter.read().energy_j) == 2
    assert meter.components == before


def test_close_closes_every_source_even_after_one_fails():
    class FailingClose(ScriptedSource):
        def close(self):
            raise RuntimeError("already shut down")

    first = FailingClose(["gpu:0"], [(0.0,)])
    dropped = ScriptedSource(["cpu"], [OSError("gone")])
    last = ScriptedSource(["ram"], [(0.0,)])
    meter = EnergyMeter([first, dropped, last], clock=FakeClock(50.0))
    meter.read()
    meter.close()
    assert dropped.closed and last.closed
    assert any("FailingClose" in note and "already shut down" in note for note in meter.notes)
