"""The run registry: where it lives, what a run leaves in it, concurrent writers, calibration, the CLI."""

from __future__ import annotations

import json
import math
import multiprocessing
import sqlite3
import uuid
from pathlib import Path

import pytest
from fakes import FakeClock

from wattwise.cli import main
from wattwise.config import Config
from wattwise.estimate import HARDWARE, estimate, fit_efficiency
from wattwise.meter import EnergyMeter
from wattwise.registry import Registry, default_path, record_from_report, resolve_path
from wattwise.report import ComponentEnergy, PhaseEnergy, RunReport
from wattwise.run import Run

A100 = "NVIDIA A100-SXM4-80GB"


def gpu_report(*, params_energy=None, gpu_name=A100, gpus=1, energy_j=1000.0, gpu_j=800.0, duration_s=100.0,
               train_s=90.0, partial=False, samples=0, started_at="2026-11-20T10:00:00+00:00") -> RunReport:
    """A finished run as a session reports it, on ``gpus`` GPUs named ``gpu_name``."""
    components = {
        f"gpu:{i}": ComponentEnergy(f"gpu:{i}", "gpu", gpu_j / gpus, True, "nvml", "device", f"{gpu_name}, 80 GB")
        for i in range(gpus)
    }
    components["cpu"] = ComponentEnergy("cpu", "cpu", energy_j - gpu_j, False, "cpu-time", "process")
    return RunReport(
        run_id=str(uuid.uuid4()), framework="test", project_name="p", started_at=started_at,
        duration_s=duration_s, energy_j=energy_j, emissions_kg=energy_j * 1e-7, train_steps=100, planned_steps=100,
        by_component=components,
        by_phase={"train": PhaseEnergy("train", energy_j=0.9 * energy_j, duration_s=train_s, steps=100,
                                       samples=samples)},
        carbon={}, partial=partial, hardware={"cpu_model": "Some CPU", "cpu_count": 8},
    )


# ---- where it lives --------------------------------------------------------------------------------


def test_default_path_follows_xdg_and_the_environment_moves_or_disables_it(monkeypatch, tmp_path):
    monkeypatch.delenv("WATTWISE_REGISTRY")
    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert default_path() == tmp_path / "home" / ".local" / "share" / "wattwise" / "runs.sqlite"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert resolve_path() == tmp_path / "data" / "wattwise" / "runs.sqlite"
    monkeypatch.setenv("WATTWISE_REGISTRY", str(tmp_path / "elsewhere.sqlite"))
    assert resolve_path() == tmp_path / "elsewhere.sqlite"
    for off in ("0", "false", "OFF", "no"):
        monkeypatch.setenv("WATTWISE_REGISTRY", off)
        assert resolve_path() is None and Registry.open() is None
    assert resolve_path(False) is None
    assert resolve_path(True) == tmp_path / "data" / "wattwise" / "runs.sqlite"  # an explicit setting wins
    with pytest.raises(ValueError, match="registry"):
        resolve_path(3.5)


def test_config_reads_the_registry_setting(monkeypatch):
    monkeypatch.setenv("WATTWISE_REGISTRY", "off")
    assert Config.from_kwargs().registry is False
    monkeypatch.setenv("WATTWISE_REGISTRY", "/tmp/x.sqlite")
    assert Config.from_kwargs().registry == "/tmp/x.sqlite"
    assert Config.from_kwargs(registry=False).registry is False  # the argument wins
    with pytest.raises(ValueError, match="registry"):
        Config.from_kwargs(registry=42)


# ---- what a session leaves in it -------------------------------------------------------------------


def run_session(tmp_path, steady_source, *, model=None, partial=False, **options) -> Run:
    clock = FakeClock()
    options.setdefault("carbon_intensity_g_per_kwh", 100.0)
    session = Run.from_config(Config.from_kwargs(print_summary=False, write_files=False, **options), framework="loop",
                      clock=clock)
    session.start(output_dir=tmp_path, planned_steps=50, meter=EnergyMeter([steady_source({"cpu": 10.0}, clock)],
                                                                            clock=clock))
    session.set_work(model=model)
    for _ in range(50):
        clock.now += 0.1
        session.step()
    session.add_samples("train", 50 * 32)
    session.finish(partial=partial)
    return session


def test_a_finished_run_is_recorded_with_what_calibration_needs(tmp_path, steady_source, private_registry):
    torch = pytest.importorskip("torch")
    session = run_session(tmp_path, steady_source, model=torch.nn.Linear(10, 5))
    [record] = Registry(private_registry).runs()
    report = session.report
    assert record.run_id == report.run_id and record.framework == "loop" and not record.partial
    assert record.energy_j == pytest.approx(report.energy_j) == pytest.approx(50.0)  # 10 W x 5 s
    assert record.duration_s == pytest.approx(5.0) and record.train_steps == 50
    assert record.params == 55 and record.samples == 1600 and record.tokens is None
    assert record.hardware_kind == "cpu" and record.hardware == report.hardware["cpu_model"]
    assert record.device_energy_j == pytest.approx(50.0)
    assert record.by_phase["train"]["energy_j"] == pytest.approx(report.by_phase["train"].energy_j)
    assert record.emissions_kg == pytest.approx(report.emissions_kg)
    assert record.output_dir is None  # no files written (write_files=False): nowhere to point
    assert record.started_at == report.started_at


def test_a_partial_run_is_recorded_flagged(tmp_path, steady_source, private_registry):
    run_session(tmp_path, steady_source, partial=True)
    [record] = Registry(private_registry).runs()
    assert record.partial
    assert Registry(private_registry).runs(complete_only=True) == []


def test_registry_off_records_nothing(tmp_path, steady_source, private_registry, monkeypatch):
    run_session(tmp_path, steady_source, registry=False)
    assert not private_registry.exists()
    monkeypatch.setenv("WATTWISE_REGISTRY", "off")
    run_session(tmp_path, steady_source)
    assert not private_registry.exists()
    moved = tmp_path / "sub" / "moved.sqlite"
    run_session(tmp_path, steady_source, registry=str(moved))
    assert len(Registry(moved).runs()) == 1


def test_a_registry_that_cannot_be_written_never_breaks_the_run(tmp_path, steady_source):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    session = run_session(tmp_path, steady_source, registry=str(blocker / "runs.sqlite"))
    assert session.report is not None and session.report.energy_j == pytest.approx(50.0)
    assert any("not recorded in the registry" in note for note in session.report.notes)


# ---- concurrent writers ----------------------------------------------------------------------------


def _write_many(path: str, worker: int, count: int) -> list[str]:
    registry = Registry(path)
    ids = []
    for i in range(count):
        report = gpu_report(started_at=f"2026-11-20T10:{worker:02d}:{i:02d}+00:00")
        registry.record(report, params=1000 + worker, tokens=10.0 * (i + 1))
        ids.append(report.run_id)
    return ids


def test_several_processes_write_at_once_and_no_row_is_lost(tmp_path):
    path = tmp_path / "shared.sqlite"
    workers, each = 6, 25
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        written = pool.starmap(_write_many, [(str(path), w, each) for w in range(workers)])
    ids = {run_id for batch in written for run_id in batch}
    assert len(ids) == workers * each
    records = Registry(path).runs()
    assert {r.run_id for r in records} == ids
    assert sorted({r.params for r in records}) == [1000 + w for w in range(workers)]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# ---- calibration -----------------------------------------------------------------------------------


def test_estimate_is_fitted_to_past_runs_on_the_same_gpu(private_registry):
    registry = Registry(private_registry)
    runs = [  # (params, tokens, train seconds, total seconds, GPU joules, GPUs)
        (100e6, 1e9, 2000.0, 2100.0, 6.3e5, 1),
        (350e6, 2e9, 9000.0, 9500.0, 3.0e6, 2),
        (50e6, 4e9, 3000.0, 3100.0, 9.0e5, 1),
    ]
    for params, tokens, train_s, total_s, gpu_j, gpus in runs:
        registry.record(gpu_report(gpus=gpus, energy_j=gpu_j * 1.2, gpu_j=gpu_j, duration_s=total_s, train_s=train_s),
                        params=int(params), tokens=tokens)
    registry.record(gpu_report(gpu_name="NVIDIA H100 80GB HBM3"), params=10**8, tokens=1e9)  # other hardware
    registry.record(gpu_report(partial=True), params=10**8, tokens=1e9)  # partial: never calibrates
    registry.record(gpu_report())  # no params nor work: cannot calibrate

    peak = 312e12  # A100 bf16, dense
    flops = [6 * p * t for p, t, *_ in runs]
    capacity = [g * peak * s for _, _, s, _, _, g in runs]
    utilization = sum(flops) / sum(capacity)  # (6e17 + 4.2e18 + 1.2e18) / (312e12 x 23000 GPU-seconds)
    power_w = sum(j for *_, j, _ in runs) / sum(g * t for *_, t, _, g in runs)
    assert utilization == pytest.approx(0.836120, rel=1e-5)
    assert power_w == pytest.approx(187.190083, rel=1e-6)  # 4.53e6 J / (2100 + 2 x 9500 + 3100) GPU-seconds

    e = estimate(params=124_000_000, tokens=1e9, hardware="a100-80gb", precision="bf16",
                 carbon_intensity_g_per_kwh=100.0)
    assert e.calibration_runs == 3
    assert e.utilization == pytest.approx(utilization, rel=1e-9)
    assert e.power_w == pytest.approx(power_w, rel=1e-9)
    expected_s = 6 * 124e6 * 1e9 / (peak * utilization)
    assert e.duration_s == pytest.approx(expected_s, rel=1e-9)
    assert e.energy_j == pytest.approx(power_w * expected_s, rel=1e-9)
    # 90% prediction range of one more run's utilization, in log space, from the three runs
    logs = [math.log(f / c) for f, c in zip(flops, capacity, strict=True)]
    mean = sum(logs) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / 2)
    spread = 2.920 * sd * math.sqrt(1 + 1 / 3)  # t(0.95, 2 dof) = 2.920
    low, high = e.utilization_range
    assert low == pytest.approx(min(utilization, math.exp(mean - spread)), rel=0.02)
    assert high == pytest.approx(max(utilization, math.exp(mean + spread)), rel=0.02)
    assert "3 past runs" in e.summary() and "calibrated: yes" in e.summary()

    plain = estimate(params=124_000_000, tokens=1e9, hardware="a100-80gb", precision="bf16", calibrate=False)
    assert plain.calibration_runs == 0 and plain.utilization == 0.35 and plain.power_w == 400.0
    given = estimate(params=124_000_000, tokens=1e9, hardware="a100-80gb", utilization=0.5)
    assert given.calibration_runs == 0 and given.utilization == 0.5


def test_each_past_run_is_fitted_at_its_own_precision(private_registry):
    """An fp32 run and a bf16 run of the same efficiency give one utilization: each run's capacity
    uses the device's peak at the precision it trained in; a run with no precision is taken at the
    precision asked for, and the estimate says so."""
    registry = Registry(private_registry)
    fp32_peak, bf16_peak = HARDWARE["a100-80gb"].peak_tflops["fp32"] * 1e12, HARDWARE["a100-80gb"].peak_tflops["bf16"] * 1e12
    flops = 6 * 100e6 * 1e9
    for precision, peak in (("fp32", fp32_peak), ("bf16", bf16_peak)):  # both at utilization 0.4 of their peak
        train_s = flops / (0.4 * peak)
        registry.record(gpu_report(duration_s=train_s * 1.1, train_s=train_s), params=100_000_000, tokens=1e9,
                        precision=precision)
    e = estimate(params=124_000_000, tokens=1e9, hardware="a100-80gb", precision="bf16", carbon_intensity_g_per_kwh=1)
    assert e.calibration_runs == 2 and e.utilization == pytest.approx(0.4, rel=1e-9)
    assert not any("did not record their precision" in a for a in e.assumptions)

    registry.record(gpu_report(duration_s=100.0, train_s=90.0), params=100_000_000, tokens=1e9)  # precision unknown
    e = estimate(params=124_000_000, tokens=1e9, hardware="a100-80gb", precision="fp16", carbon_intensity_g_per_kwh=1)
    capacity = 2 * flops / 0.4 + HARDWARE["a100-80gb"].peak_tflops["fp16"] * 1e12 * 90.0
    assert e.utilization == pytest.approx(3 * flops / capacity, rel=1e-9)
    assert any("1 of those runs did not record their precision: taken as fp16" in a for a in e.assumptions)


def test_a_version_1_file_gains_the_precision_column_and_keeps_its_runs(private_registry):
    from wattwise.registry import _COLUMNS

    old_columns = ", ".join(f"{name} {kind}" for name, kind in _COLUMNS if name != "precision")
    with sqlite3.connect(private_registry) as conn:  # as the first version of the registry wrote it
        conn.execute(f"CREATE TABLE runs ({old_columns})")
        conn.execute("PRAGMA user_version = 1")
    registry = Registry(private_registry)
    old = record_from_report(gpu_report(), params=10**8, tokens=1e9)
    names = [name for name, _ in _COLUMNS if name != "precision"]
    values = [json.dumps(old.by_phase) if n == "by_phase" else int(old.partial) if n == "partial" else getattr(old, n)
              for n in names]
    with sqlite3.connect(private_registry) as conn:
        conn.execute(f"INSERT INTO runs ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})", values)
    registry.record(gpu_report(), params=10**8, tokens=1e9, precision="bf16")
    assert sorted((r.run_id == old.run_id, r.precision) for r in registry.runs()) == [(False, "bf16"), (True, None)]


def test_a_session_records_the_precision_its_integration_described(tmp_path, steady_source, private_registry):
    session = Run.from_config(Config.from_kwargs(country_iso_code="FRA", print_summary=False, write_files=False), "loop")
    session.start(output_dir=tmp_path, planned_steps=2, meter=EnergyMeter([steady_source({"gpu:0": 10.0})]))
    session.evidence.describe(precision="bf16")
    session.step()
    session.finish()
    assert [r.precision for r in Registry(private_registry).runs()] == ["bf16"]


def test_without_matching_runs_the_estimate_is_the_uncalibrated_one(private_registry):
    Registry(private_registry).record(gpu_report(gpu_name="NVIDIA H100 80GB HBM3"), params=10**8, tokens=1e9)
    e = estimate(params=10**8, tokens=1e9, hardware="a100-80gb")
    plain = estimate(params=10**8, tokens=1e9, hardware="a100-80gb", calibrate=False)
    assert e.calibration_runs == 0 and e.energy_j == plain.energy_j and e.duration_s == plain.duration_s
    assert "no complete run on a100-80gb" in e.calibration
    h100 = estimate(params=10**8, tokens=1e9, hardware="h100-sxm")
    assert h100.calibration_runs == 1 and h100.utilization_range == pytest.approx(
        (h100.utilization * 0.5, h100.utilization * 1.5))  # one run: no spread to learn, the default range


def test_fit_with_samples_counts_a_sample_as_a_token():

    run = record_from_report(gpu_report(samples=5000, gpus=1, train_s=10.0, duration_s=20.0, gpu_j=1000.0),
                             params=2_000_000)
    fit = fit_efficiency([run], per_device_peak_flops=1e12)
    assert fit.utilization == pytest.approx(6 * 2e6 * 5000 / (1e12 * 10.0))  # 0.006
    assert fit.power_w == pytest.approx(1000.0 / 20.0) and fit.utilization_range is None
    with pytest.raises(ValueError, match="runs"):
        fit_efficiency([record_from_report(gpu_report())], per_device_peak_flops=1e12)


def test_every_gpu_row_matches_its_nvml_name():
    names = {
        "a100-40gb": "NVIDIA A100-SXM4-40GB", "a100-80gb": "NVIDIA A100 80GB PCIe", "h100-sxm": "NVIDIA H100 80GB HBM3",
        "h100-pcie": "NVIDIA H100 PCIe", "l4": "NVIDIA L4", "t4": "Tesla T4", "v100": "Tesla V100-SXM2-16GB",
        "rtx-4090": "NVIDIA GeForce RTX 4090", "a10g": "NVIDIA A10G",
    }
    from wattwise.estimate import _device_matches

    for row, device in names.items():
        matching = [name for name, hw in HARDWARE.items() if _device_matches(hw, device)]
        assert matching == [row], (device, matching)


# ---- the command -----------------------------------------------------------------------------------


def test_wattwise_runs_lists_newest_first_with_units(private_registry, capsys):
    registry = Registry(private_registry)
    first = registry.record(gpu_report(started_at="2026-11-20T10:00:00+00:00", energy_j=3.6e6), params=124_000_000,
                            tokens=1e9, precision="bf16")
    second = registry.record(gpu_report(started_at="2026-11-21T10:00:00+00:00", partial=True))
    assert main(["runs"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == str(private_registry)
    header = out[1]
    for column in ("started (UTC)", "hardware", "energy kWh", "time s", "CO2e g", "status"):
        assert column in header
    assert second.run_id[:8] in out[2] and "partial" in out[2]  # newest first
    assert first.run_id[:8] in out[3] and "complete" in out[3] and A100 in out[3]
    at = header.index("energy kWh")
    assert out[3][at : at + 10].strip() == "1"  # 3.6e6 J
    assert "1.24e+08" in out[3] and "1e+09 tokens" in out[3]
    at = header.index("precision")
    assert out[3][at : at + 9].strip() == "bf16" and out[2][at : at + 9].strip() == "-"
    assert main(["runs", "--limit", "1"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert main(["estimate", "--params", "1e8", "--tokens", "1e9", "--hardware", "a100-80gb"]) == 0
    assert "calibrated: yes, from 1 past run on a100-80gb" in capsys.readouterr().out
    assert main(["estimate", "--params", "1e8", "--tokens", "1e9", "--hardware", "a100-80gb", "--no-calibrate"]) == 0
    assert "calibrated: no (calibrate=False)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["runs", "--limit", "0"])
    assert exit_info.value.code == 2 and "limit" in capsys.readouterr().err


def test_wattwise_runs_with_the_registry_off(monkeypatch, capsys):
    monkeypatch.setenv("WATTWISE_REGISTRY", "off")
    assert main(["runs"]) == 0
    assert "off" in capsys.readouterr().out


def test_top_level_estimate_is_the_function():
    import wattwise
    import wattwise.estimate  # noqa: F401  (the submodule, imported too, must not shadow the function)
    from wattwise import estimate as top

    assert top is estimate and callable(wattwise.estimate)
    assert Path(wattwise.__file__).name == "__init__.py"


def test_a_real_keras_fit_records_its_parameters_and_samples(private_registry):
    keras = pytest.importorskip("keras")
    import numpy as np

    from wattwise.integrations.keras import EnergyCallback

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    callback = EnergyCallback(print_summary=False, write_files=False, country_iso_code="FRA")
    model.fit(np.zeros((64, 8), "float32"), np.zeros((64, 2), "float32"), batch_size=16, epochs=2, verbose=0,
              callbacks=[callback])
    [record] = Registry(private_registry).runs()
    assert record.run_id == callback.report.run_id and record.framework == "keras"
    assert record.params == model.count_params() == (8 * 16 + 16) + (16 * 2 + 2)
    assert record.samples == 128 and record.train_steps == 8 and not record.partial
