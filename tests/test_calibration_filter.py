"""Calibration that cannot be wrecked (issue 13): runs far from the estimate's scale, too short,
interrupted or stopped by a budget are left out, and the estimate says which and why."""

from __future__ import annotations

import dataclasses

import pytest
from test_registry import gpu_report

from wattwise import estimate
from wattwise.registry import Registry, format_runs

A100 = "NVIDIA A100-SXM4-80GB"


def record(registry, *, params, train_s=90.0, stopped=False, partial=False, tokens=1e8):
    report = gpu_report(gpu_name=A100, train_s=train_s, partial=partial)
    if stopped:
        report = dataclasses.replace(report, budget={"stopped_at_step": 40})
    return Registry(registry).record(report, params=params, tokens=tokens)


def test_tiny_short_and_unfinished_runs_do_not_calibrate_a_large_model(private_registry):
    for _ in range(9):  # nine 30-step runs of an 11k-parameter model: nothing to say about a 124M one
        record(private_registry, params=11_000, train_s=3.0, tokens=30 * 64)
    record(private_registry, params=120_000_000, train_s=5.0)  # the right scale, but too short to tell
    record(private_registry, params=124_000_000, stopped=True)
    record(private_registry, params=124_000_000, partial=True)
    plain = estimate(params=124e6, tokens=1e8, hardware="a100-80gb", calibrate=False)
    e = estimate(params=124e6, tokens=1e8, hardware="a100-80gb")
    assert e.calibration_runs == 0 and e.energy_j == plain.energy_j
    assert "9 model over 30x from 1.24e+08 params" in e.calibration
    assert "1 trained under 20 s" in e.calibration
    assert "2 interrupted or stopped by a budget" in e.calibration


def test_runs_at_the_estimates_scale_calibrate_it_and_the_others_are_named(private_registry):
    record(private_registry, params=100_000_000)
    record(private_registry, params=200_000_000)
    record(private_registry, params=11_000, train_s=3.0)
    e = estimate(params=124e6, tokens=1e8, hardware="a100-80gb")
    assert e.calibration_runs == 2
    assert e.calibration.startswith("yes, from 2 past runs") and "left out: 1 model over 30x" in e.calibration


def test_a_run_stopped_by_its_budget_is_flagged_in_the_registry(tmp_path, steady_source, private_registry):
    from fakes import FakeClock

    from wattwise.config import Config
    from wattwise.meter import EnergyMeter
    from wattwise.run import Run

    clock = FakeClock()
    run = Run.from_config(Config.from_kwargs(print_summary=False, write_files=False, carbon_intensity_g_per_kwh=1.0,
                                             budget_kwh=1e-5, on_budget="stop"), "loop", clock=clock)
    run.start(output_dir=tmp_path, planned_steps=1000, meter=EnergyMeter([steady_source({"cpu": 10.0}, clock)], clock=clock))
    while not run.should_stop:
        clock.now += 0.1
        run.step()
    report = run.finish()
    assert report.budget["stopped_at_step"] is not None and not report.partial
    [row] = Registry(private_registry).runs()
    assert row.stopped_by_budget and row.status == "stopped"
    assert Registry(private_registry).runs(complete_only=True) == []
    assert "stopped" in format_runs([row])


@pytest.mark.parametrize("params", [3_000_000, 4_000_000_000])
def test_the_scale_window_is_a_factor_of_thirty_either_way(private_registry, params):
    record(private_registry, params=params)
    e = estimate(params=124e6, tokens=1e8, hardware="a100-80gb")
    assert e.calibration_runs == (1 if 124e6 / 30 <= params <= 124e6 * 30 else 0)
