"""Evidence gathered during a run: NVML sampled at window boundaries (never per step), set-up facts,
the metric history, and the advice reaching the report through a real Run."""

from __future__ import annotations

import sys

import pytest
from fakes import FakeClock, FakeGpu, make_fake_nvml, uuid

import wattwise.advisor
from wattwise.config import Config
from wattwise.meter import EnergyMeter
from wattwise.run import Run
from wattwise.sources.nvml import NvmlSource


@pytest.fixture
def fake_gpu(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    gpu = FakeGpu(uuid(0), utilization_pct=90, memory_used_bytes=20 * 2**30, memory_total_bytes=80 * 2**30)
    fake = make_fake_nvml([gpu])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return gpu, fake


def gpu_session(tmp_path, clock, **options) -> Run:
    options.setdefault("carbon_intensity_g_per_kwh", 3.0)
    session = Run.from_config(Config.from_kwargs(print_summary=False, write_files=False, **options), "test", clock=clock)
    session.start(output_dir=tmp_path, meter=EnergyMeter([NvmlSource.open()], clock=clock))
    return session


def train(session, clock, gpu, steps: int, *, step_s=0.01, power_w=300.0) -> None:
    for _ in range(steps):
        clock.now += step_s
        gpu.energy_mj += int(power_w * step_s * 1000)
        session.step()


def test_gpus_are_sampled_at_window_boundaries_at_most_once_a_second(tmp_path, fake_gpu):
    gpu, fake = fake_gpu
    clock = FakeClock()
    session = gpu_session(tmp_path, clock, window_s=0.5)
    train(session, clock, gpu, 500)  # 5 s at 90%
    gpu.utilization_pct, gpu.memory_used_bytes = 30, 40 * 2**30
    train(session, clock, gpu, 500)  # 5 s at 30%
    calls = fake.nvmlDeviceGetUtilizationRates.call_count
    assert 9 <= calls <= 11  # 10 s of training: about one sample a second, for 1000 steps and 20 windows
    assert fake.nvmlDeviceGetEnforcedPowerLimit.call_count == 1  # static facts are read once
    (usage,) = session.evidence.evidence(energy_j=1.0, duration_s=1.0, phases={}, components={},
                                         grid=session.grid).gpus
    assert usage.samples == calls
    assert usage.utilization_pct == pytest.approx(60.0, abs=4.0)  # half the samples at 90, half at 30
    assert usage.memory_used_bytes == 40 * 2**30  # the peak
    assert (usage.power_limit_w, usage.min_power_limit_w, usage.compute_capability) == (700.0, 200.0, (9, 0))


def test_evaluation_windows_are_not_sampled(tmp_path, fake_gpu):
    gpu, fake = fake_gpu
    clock = FakeClock()
    session = gpu_session(tmp_path, clock, window_s=0.5)
    session.begin("eval")
    train(session, clock, gpu, 300)
    session.end("eval")
    assert fake.nvmlDeviceGetUtilizationRates.call_count == 0


def test_advice_reaches_the_report_through_the_session(tmp_path, fake_gpu):
    gpu, _ = fake_gpu
    clock = FakeClock()
    session = gpu_session(tmp_path, clock)
    session.evidence.describe(framework="transformers", device="cuda", precision="fp32")
    train(session, clock, gpu, 300)
    report = session.finish()
    (rec,) = report.recommendations
    assert rec.rule == "mixed_precision" and rec.change_for("transformers") == "TrainingArguments(bf16=True)"
    assert rec.saving_j == pytest.approx(report.by_phase["train"].energy_j * 0.9 * (1 - 1 / 1.5))


def test_metric_points_carry_the_energy_spent_so_far(tmp_path, fake_gpu):
    gpu, _ = fake_gpu
    clock = FakeClock()
    session = gpu_session(tmp_path, clock, window_s=0.5)
    for value in (2.0, 1.5):
        train(session, clock, gpu, 100)
        session.begin("eval")
        train(session, clock, gpu, 10)
        session.end("eval")
        session.evidence.record_metric("eval_loss", value, step=100)
    first, second = session.evidence.history
    assert first.energy_j == pytest.approx(300.0 * 1.1)  # 110 steps of 10 ms at 300 W
    assert second.energy_j == pytest.approx(300.0 * 2.2)
    with pytest.raises(ValueError, match="value"):
        session.evidence.record_metric("eval_loss", "n/a", step=1)
    session.evidence.record_metric("eval_accuracy", 0.5, step=3, greater_is_better=True)
    assert [p.value for p in session.evidence.history] == [0.5]  # another metric starts a new history


def test_unknown_setup_facts_are_refused(tmp_path, steady_source):
    clock = FakeClock()
    session = Run.from_config(Config.from_kwargs(print_summary=False, write_files=False), "test", clock=clock)
    session.start(output_dir=tmp_path, meter=EnergyMeter([steady_source({"cpu": 1.0}, clock)], clock=clock))
    with pytest.raises(ValueError, match="batchsize"):
        session.evidence.describe(batchsize=8)
    session.evidence.describe(batch_size=8, precision=None)  # None: not known, nothing changes
    assert session.evidence.setup.batch_size == 8 and session.evidence.setup.precision is None


def test_a_failing_advisor_costs_the_advice_not_the_report(tmp_path, steady_source, monkeypatch):
    def broken(evidence):
        raise RuntimeError("rule blew up")

    monkeypatch.setattr(wattwise.advisor, "advise", broken)
    clock = FakeClock()
    session = Run.from_config(Config.from_kwargs(print_summary=False, write_files=False), "test", clock=clock)
    session.start(output_dir=tmp_path, meter=EnergyMeter([steady_source({"cpu": 10.0}, clock)], clock=clock))
    clock.now += 1.0
    session.step()
    report = session.finish()
    assert report.recommendations == []
    assert any("advisor failed" in note for note in report.notes)
    assert report.energy_j == pytest.approx(10.0)


def test_threads_count_every_process_the_launcher_started_on_the_node(monkeypatch):
    """Two torchrun ranks with one thread each on two cores use both: no 'use all cores' advice."""
    import torch

    from wattwise.evidence import _torch_threads

    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert _torch_threads() == 2 * torch.get_num_threads()
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert _torch_threads() == torch.get_num_threads()
