"""The forecaster: steady projection, warm-up exclusion, evaluation accounting, honest intervals."""

from __future__ import annotations

import random

import pytest

from wattwise.forecast import Forecaster


def test_a_steady_run_is_projected_exactly_with_a_narrow_interval():
    f = Forecaster(planned_steps=1000)
    for _ in range(40):
        f.add_window(steps=5, energy_j=50.0, duration_s=0.5)
    forecast = f.forecast()
    assert forecast.energy_j == pytest.approx(10_000.0)
    assert forecast.duration_s == pytest.approx(100.0)
    assert forecast.energy_high_j - forecast.energy_low_j == pytest.approx(0.0, abs=1e-6)


def test_too_few_windows_give_no_forecast():
    f = Forecaster(planned_steps=100)
    f.add_window(steps=5, energy_j=50.0, duration_s=0.5)
    assert f.forecast() is None


def test_warm_up_windows_are_excluded_from_the_rate():
    f = Forecaster(planned_steps=2000)
    f.add_window(steps=5, energy_j=500.0, duration_s=5.0)  # compilation: 10x the steady cost
    f.add_window(steps=5, energy_j=200.0, duration_s=2.0)
    for _ in range(38):
        f.add_window(steps=5, energy_j=50.0, duration_s=0.5)
    forecast = f.forecast()
    assert forecast.warmup_steps == 10
    # measured so far (700 + 1900 J) plus 1800 steady steps of 10 J
    assert forecast.energy_j == pytest.approx(2600.0 + 1800 * 10.0)
    naive = (2600.0 / 200) * 2000  # carbontracker-style: mean so far x planned
    assert abs(naive - 20_600.0) / 20_600.0 > 0.2


def test_evaluation_passes_are_projected_at_their_cadence():
    f = Forecaster(planned_steps=1000)
    for i in range(40):
        f.add_window(steps=5, energy_j=50.0, duration_s=0.5)
        if (i + 1) % 10 == 0:  # an evaluation every 50 steps
            f.add_eval_pass(energy_j=300.0, duration_s=3.0)
    forecast = f.forecast()
    assert forecast.eval_passes_expected == 16  # passes at steps 250, 300, ..., 1000
    assert forecast.energy_j == pytest.approx(2000.0 + 1200.0 + 800 * 10.0 + 16 * 300.0)


def test_the_interval_widens_with_noise_and_holds_the_truth():
    rng = random.Random(0)
    covered = 0
    widths = []

    def per_window() -> float:  # 5 noisy steps of 10 J on average
        return max(0.0, rng.gauss(50.0, 15.0))

    for _ in range(40):
        f = Forecaster(planned_steps=2000)
        total = 0.0
        for _ in range(40):
            e = per_window()
            total += e
            f.add_window(steps=5, energy_j=e, duration_s=0.5)
        forecast = f.forecast()
        for _ in range(360):
            total += per_window()
        covered += forecast.energy_low_j <= total <= forecast.energy_high_j
        widths.append(forecast.energy_high_j - forecast.energy_low_j)
    assert covered / 40 >= 0.8
    quiet = Forecaster(planned_steps=2000)
    for _ in range(40):
        quiet.add_window(steps=5, energy_j=50.0 + rng.gauss(0, 1.0), duration_s=0.5)
    quiet_width = quiet.forecast().energy_high_j - quiet.forecast().energy_low_j
    assert quiet_width < min(widths)


def test_memory_is_bounded():
    f = Forecaster(planned_steps=10**7)
    for _ in range(10_000):
        f.add_window(steps=5, energy_j=50.0, duration_s=0.5)
    assert len(f._windows) <= 1024
    assert f.forecast().energy_j == pytest.approx(10**8)


def test_the_start_up_window_never_counts_even_with_few_windows():
    f = Forecaster(planned_steps=2000)
    f.add_window(steps=5, energy_j=5000.0, duration_s=50.0)  # compilation: 100x the steady cost
    for _ in range(3):
        f.add_window(steps=5, energy_j=50.0, duration_s=0.5)
    assert f.forecast() is None  # three steady windows are too few
    f.add_window(steps=5, energy_j=50.0, duration_s=0.5)
    forecast = f.forecast()
    assert forecast.warmup_steps == 5
    assert forecast.energy_j == pytest.approx(5200.0 + 1975 * 10.0)  # measured, then 10 J a step
