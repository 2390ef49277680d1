"""SIGTERM and SIGINT while a run is in progress: the run is finished (partial) first, then the
handler that was there before gets the signal, and it is put back once no run is in progress."""

from __future__ import annotations

import json
import os
import signal

import pytest
from fakes import FakeClock

from wattwise import endings
from wattwise.config import Config
from wattwise.meter import EnergyMeter
from wattwise.run import Run


def started_run(tmp_path, steady_source, clock) -> Run:
    run = Run.from_config(Config.from_kwargs(print_summary=False, country_iso_code="FRA"), "loop", clock=clock)
    return run.start(output_dir=tmp_path, meter=EnergyMeter([steady_source({"cpu": 10.0}, clock)], clock=clock))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_finishes_the_run_then_reaches_the_previous_handler(tmp_path, steady_source, signum):
    received = []

    def previous(sig, frame):
        received.append((sig, run.report is not None))  # the run was finished before we got it

    old = signal.signal(signum, previous)
    try:
        clock = FakeClock()
        run = started_run(tmp_path, steady_source, clock)
        assert signal.getsignal(signum) is not previous  # wattwise's, while the run is in progress
        for _ in range(4):
            clock.now += 0.25
            run.step()
        os.kill(os.getpid(), signum)
        assert received == [(signum, True)]
        assert run.report.partial and run.report.energy_j == pytest.approx(10.0)  # 1 s at 10 W
        assert any(signal.Signals(signum).name in note for note in run.report.notes)
        saved = json.loads((run.output_dir / "report.json").read_text())
        assert saved["partial"] is True
        assert signal.getsignal(signum) is previous  # no run in progress: the previous handler is back
        assert endings.in_progress() == []
    finally:
        signal.signal(signum, old)


def test_handlers_are_installed_once_and_removed_with_the_last_run(tmp_path, steady_source):
    before = signal.getsignal(signal.SIGTERM)
    clock = FakeClock()
    first = started_run(tmp_path / "a", steady_source, clock)
    ours = signal.getsignal(signal.SIGTERM)
    second = started_run(tmp_path / "b", steady_source, clock)
    assert signal.getsignal(signal.SIGTERM) is ours and ours is not before
    first.finish()
    assert signal.getsignal(signal.SIGTERM) is ours  # the second is still running
    second.finish()
    assert signal.getsignal(signal.SIGTERM) is before


def test_an_ignored_signal_stays_ignored(tmp_path, steady_source):
    old = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        run = started_run(tmp_path, steady_source, FakeClock())
        os.kill(os.getpid(), signal.SIGTERM)  # the process goes on, as it would have without wattwise
        assert run.report.partial
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, old)


def test_at_exit_an_unfinished_run_ends_at_its_last_reading(tmp_path, steady_source):
    clock = FakeClock()
    run = started_run(tmp_path, steady_source, clock)
    clock.now += 1.0
    run.step()
    run.metrics()  # a reading at 1 s
    clock.now += 50.0  # then the program does other things and exits
    endings._at_exit()
    assert run.report.partial and run.report.duration_s == pytest.approx(1.0)
    assert run.report.energy_j == pytest.approx(10.0)
