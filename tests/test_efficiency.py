"""The seed study's efficiency metrics (Mavromatis et al. 2024) in every report, summary, comparison
and log: energy per sample, samples per joule, tokens per joule, energy per optimizer step."""

from __future__ import annotations

import json

import pytest
from fakes import FakeClock

from wattwise import SAMPLE_J, TOKENS_PER_J
from wattwise.config import Config
from wattwise.meter import EnergyMeter
from wattwise.render import compare_table, plain_summary, plain_table
from wattwise.report import RunReport
from wattwise.run import Run


def measured_run(tmp_path, steady_source, *, batch=8, tokens=64.0):
    clock = FakeClock()
    run = Run.from_config(Config.from_kwargs(print_summary=False, country_iso_code="FRA", window_s=0.5), "loop",
                          clock=clock)
    run.start(output_dir=tmp_path, planned_steps=100, meter=EnergyMeter([steady_source({"cpu": 10.0}, clock)], clock=clock))
    logged = []
    for step in range(1, 101):
        clock.now += 0.1  # 1 J a step at 10 W
        run.step(samples=batch, tokens=tokens)
        if step % 20 == 0:
            logged.append(run.metrics())
    with run.phase("eval"):
        for _ in range(5):
            clock.now += 0.1
            run.step(samples=4)
    return run, logged, run.pass_metrics("eval")


def test_logged_keys_give_joules_per_sample_and_tokens_per_joule(tmp_path, steady_source):
    run, logged, pass_metrics = measured_run(tmp_path, steady_source)
    for metrics in logged[1:]:
        assert metrics[SAMPLE_J] == pytest.approx(1.0 / 8)  # 1 J a step, 8 samples a step
        assert metrics[TOKENS_PER_J] == pytest.approx(64.0)
    assert pass_metrics["energy/eval_sample_j"] == pytest.approx(1.0 / 4)
    run.finish()


def test_the_report_json_summary_and_comparison_carry_them(tmp_path, steady_source):
    run, _, _ = measured_run(tmp_path / "a", steady_source)
    a = run.finish()
    train = a.by_phase["train"]
    assert train.samples == 800 and train.tokens == pytest.approx(6400.0)
    assert train.j_per_sample == pytest.approx(train.energy_j / 800)
    assert a.efficiency()["train"]["samples_per_j"] == pytest.approx(800 / train.energy_j)
    assert a.efficiency()["eval"]["j_per_sample"] == pytest.approx(a.by_phase["eval"].energy_j / 20)
    saved = json.loads((run.output_dir / "report.json").read_text())
    assert saved["efficiency"]["train"]["tokens_per_j"] == pytest.approx(6400.0 / train.energy_j)
    assert RunReport.from_dict(saved).by_phase["train"].tokens == pytest.approx(6400.0)
    summary = plain_summary(a)
    assert "per sample" in summary and "samples/J" in summary and "tokens/J" in summary
    run_b, _, _ = measured_run(tmp_path / "b", steady_source, batch=16)
    b = run_b.finish()
    table = plain_table(compare_table(a, b))
    assert "train per sample" in table and "train samples per J" in table and "-50.0%" in table
