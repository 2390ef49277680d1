"""Pre-run estimate: the formula's arithmetic, the hardware table, model counting, carbon, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from wattwise.carbon import resolve_intensity
from wattwise.cli import main
from wattwise.estimate import HARDWARE, Estimate, count_params, estimate

N, D = 124_000_000, 1_000_000_000


def test_training_formula_by_hand():
    e = estimate(params=N, tokens=D, epochs=2, hardware="a100-80gb", precision="bf16", utilization=0.4,
                 carbon_intensity_g_per_kwh=100.0)
    assert isinstance(e, Estimate)
    # 6 x 124e6 x 1e9 x 2 = 1.488e18 FLOPs; / (312e12 x 0.4) = 11923.08 s; x 400 W = 4.769e6 J
    assert e.flops == pytest.approx(1.488e18)
    assert e.duration_s == pytest.approx(11923.0769, rel=1e-6)
    assert e.energy_j == pytest.approx(4_769_230.77, rel=1e-6)
    # 4.769e6 J = 1.3248 kWh x 100 g/kWh = 0.13248 kg
    assert e.emissions_kg == pytest.approx(0.132479, rel=1e-4)
    assert e.hardware == "a100-80gb" and e.power_w == 400.0 and e.peak_flops == 312e12


def test_inference_is_a_third_of_training():
    train = estimate(params=N, tokens=D, hardware="h100-sxm")
    infer = estimate(params=N, tokens=D, hardware="h100-sxm", mode="inference")
    assert infer.flops == pytest.approx(train.flops / 3)
    assert infer.energy_j == pytest.approx(train.energy_j / 3)
    assert infer.duration_s == pytest.approx(train.duration_s / 3)


def test_precision_changes_the_peak():
    fp32 = estimate(params=N, tokens=D, hardware="a100-40gb", precision="fp32")
    tf32 = estimate(params=N, tokens=D, hardware="a100-40gb", precision="tf32")
    bf16 = estimate(params=N, tokens=D, hardware="a100-40gb", precision="bf16")
    assert (fp32.peak_flops, tf32.peak_flops, bf16.peak_flops) == (19.5e12, 156e12, 312e12)
    assert fp32.duration_s == pytest.approx(bf16.duration_s * 312 / 19.5)
    # T4 has no TF32: it runs at the fp32 rate, and says so; no BF16 at all
    t4 = estimate(params=N, tokens=D, hardware="t4", precision="tf32")
    assert t4.peak_flops == 8.1e12
    assert any("no TF32" in a for a in t4.assumptions)
    with pytest.raises(ValueError, match="precision"):
        estimate(params=N, tokens=D, hardware="t4", precision="bf16")


def test_table_is_dense_and_complete():
    names = {"a100-40gb", "a100-80gb", "h100-sxm", "h100-pcie", "l4", "t4", "v100", "rtx-4090", "a10g", "cpu"}
    assert names <= set(HARDWARE)
    assert HARDWARE["h100-sxm"].peak_tflops["bf16"] == 989.5  # 1979 with sparsity, halved
    assert HARDWARE["h100-sxm"].tdp_w == 700.0
    for hw in HARDWARE.values():
        assert hw.tdp_w > 0 and hw.source and hw.peak_tflops["fp32"] > 0


def test_interval_contains_the_central_value_and_widens_with_the_range():
    e = estimate(params=N, tokens=D, hardware="l4", precision="bf16")
    assert e.utilization == 0.35 and e.utilization_range == pytest.approx((0.175, 0.525))
    assert e.energy_low_j < e.energy_j < e.energy_high_j
    assert e.duration_low_s < e.duration_s < e.duration_high_s
    assert e.emissions_low_kg < e.emissions_kg < e.emissions_high_kg
    assert e.energy_high_j == pytest.approx(2 * e.energy_j)  # utilization / 2
    assert e.energy_low_j == pytest.approx(e.energy_j / 1.5)  # utilization x 1.5
    narrow = estimate(params=N, tokens=D, hardware="l4", utilization_range=(0.3, 0.4))
    wide = estimate(params=N, tokens=D, hardware="l4", utilization_range=(0.1, 0.8))
    assert narrow.energy_j == wide.energy_j == e.energy_j
    assert wide.energy_high_j - wide.energy_low_j > narrow.energy_high_j - narrow.energy_low_j
    assert any("interval" in a for a in e.assumptions)


def test_devices_share_the_time_not_the_energy():
    one = estimate(params=N, tokens=D, hardware="h100-pcie")
    eight = estimate(params=N, tokens=D, hardware="h100-pcie", devices=8)
    assert eight.duration_s == pytest.approx(one.duration_s / 8)
    assert eight.energy_j == pytest.approx(one.energy_j)


def test_cpu_entry_scales_with_cores():
    e = estimate(params=1_000_000, tokens=1e6, hardware="cpu", cpu_cores=4, precision="fp32")
    # 6e12 FLOPs / (4 x 80e9 x 0.2) = 93.75 s; x 4 x 8 W = 3000 J
    assert e.duration_s == pytest.approx(93.75)
    assert e.energy_j == pytest.approx(3000.0)
    assert e.utilization == 0.2


def test_unknown_hardware_by_power_and_peak():
    e = estimate(params=N, tokens=D, power_w=250.0, peak_tflops=100.0, utilization=0.5)
    assert e.duration_s == pytest.approx(6 * N * D / (100e12 * 0.5))
    assert e.energy_j == pytest.approx(250.0 * e.duration_s)
    override = estimate(params=N, tokens=D, hardware="a100-80gb", power_w=300.0)
    assert override.power_w == 300.0


def test_samples_with_flops_per_sample():
    e = estimate(samples=50_000, flops_per_sample=4e9, epochs=10, hardware="t4", precision="fp16")
    # 3 x 4e9 x 5e4 x 10 = 6e15 FLOPs / (65e12 x 0.35)
    assert e.flops == pytest.approx(6e15)
    assert e.duration_s == pytest.approx(6e15 / (65e12 * 0.35))
    infer = estimate(samples=50_000, flops_per_sample=4e9, epochs=10, hardware="t4", precision="fp16",
                     mode="inference")
    assert infer.flops == pytest.approx(2e15)


def test_torch_model_is_counted():
    torch = pytest.importorskip("torch")
    model = torch.nn.Linear(10, 5)  # 10 x 5 + 5 = 55
    assert count_params(model) == 55
    assert estimate(model=model, tokens=1000, hardware="t4", precision="fp16").params == 55
    assert estimate(model=model, tokens=1000, hardware="t4", precision="fp16").flops == 6 * 55 * 1000


def test_keras_model_is_counted():
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input(shape=(8,)), keras.layers.Dense(4), keras.layers.Dense(2)])
    # (8 x 4 + 4) + (4 x 2 + 2) = 46
    assert count_params(model) == 46
    assert estimate(model=model, tokens=10, hardware="cpu", cpu_cores=1).params == 46


def test_carbon_via_resolve_intensity():
    e = estimate(params=N, tokens=D, hardware="a100-80gb", country_iso_code="FRA", pue=1.2)
    grid = resolve_intensity(country_iso_code="FRA", pue=1.2)
    assert e.emissions_kg == pytest.approx(grid.kg_for_j(e.energy_j))
    assert e.carbon_intensity_g_per_kwh == grid.g_per_kwh and e.location == grid.location
    cloud = estimate(params=N, tokens=D, hardware="a100-80gb", cloud_provider="gcp", cloud_region="europe-west1")
    assert cloud.emissions_kg == pytest.approx(
        resolve_intensity(cloud_provider="gcp", cloud_region="europe-west1").kg_for_j(cloud.energy_j)
    )
    nowhere = estimate(params=N, tokens=D, hardware="a100-80gb")
    assert any("world average" in a for a in nowhere.assumptions)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"hardware": "b200"}, "hardware"),
        ({"hardware": None}, "hardware"),
        ({"hardware": "a100-80gb", "precision": "fp8"}, "precision"),
        ({"hardware": "a100-80gb", "mode": "finetune"}, "mode"),
        ({"hardware": "a100-80gb", "params": -1}, "params"),
        ({"hardware": "a100-80gb", "params": 1.5}, "params"),
        ({"hardware": "a100-80gb", "tokens": 0}, "tokens"),
        ({"hardware": "a100-80gb", "epochs": float("nan")}, "epochs"),
        ({"hardware": "a100-80gb", "utilization": 1.5}, "utilization"),
        ({"hardware": "a100-80gb", "utilization": 0}, "utilization"),
        ({"hardware": "a100-80gb", "utilization_range": (0.5, 0.6)}, "utilization_range"),
        ({"hardware": "a100-80gb", "pue": 0.9}, "pue"),
        ({"hardware": "a100-80gb", "devices": 0}, "devices"),
        ({"hardware": "a100-80gb", "power_w": -5}, "power_w"),
        ({"hardware": "a100-80gb", "country_iso_code": "XXX"}, "country_iso_code"),
        ({"hardware": "a100-80gb", "cloud_provider": "gcp", "cloud_region": "mars-1"}, "cloud_region"),
        ({"hardware": "a100-80gb", "tokens": None}, "tokens"),
        ({"hardware": "a100-80gb", "tokens": None, "samples": 10}, "flops_per_sample"),
        ({"hardware": "a100-80gb", "model": object(), "params": None}, "model"),
    ],
)
def test_bad_inputs_name_the_argument(kwargs, name):
    args = {"params": N, "tokens": D, **kwargs}
    with pytest.raises(ValueError, match=name):
        estimate(**args)


def test_unknown_hardware_lists_the_accepted_names():
    with pytest.raises(ValueError, match="hardware 'b200'") as info:
        estimate(params=N, tokens=D, hardware="b200")
    assert all(name in str(info.value) for name in HARDWARE)


def test_cli_prints_a_readable_estimate(capsys):
    argv = ["estimate", "--params", "124e6", "--tokens", "1e9", "--epochs", "1", "--hardware", "a100-80gb",
            "--precision", "bf16", "--country", "FRA"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    expected = estimate(params=N, tokens=D, hardware="a100-80gb", precision="bf16", country_iso_code="FRA")
    assert out.strip() == expected.summary()
    for text in ("energy", "757 Wh", "range", "time", "CO2e", "France", "FLOPs = 6 x params x tokens", "assumptions"):
        assert text in out


def test_cli_json_and_errors(capsys):
    assert main(["estimate", "--params", "1e6", "--tokens", "1e6", "--hardware", "t4", "--precision", "fp16",
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["flops"] == pytest.approx(6e12) and data["hardware"] == "t4"
    with pytest.raises(SystemExit) as exit_info:
        main(["estimate", "--params", "1e6", "--tokens", "1e6", "--hardware", "b200"])
    assert exit_info.value.code == 2
    assert "hardware 'b200' is unknown" in capsys.readouterr().err


def _run(code_or_args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, *code_or_args], capture_output=True, text=True, env=env, timeout=120)


def test_cli_as_a_module():
    proc = _run(["-m", "wattwise.cli", "estimate", "--params", "124e6", "--tokens", "1e9", "--hardware",
                 "a100-80gb", "--precision", "bf16", "--country", "FRA"])
    assert proc.returncode == 0, proc.stderr
    assert "757 Wh" in proc.stdout and "France" in proc.stdout


def test_import_does_not_import_a_framework():
    proc = _run(["-c", "import sys, wattwise.estimate, wattwise.cli; "
                       "print(sorted(m for m in ('torch', 'keras', 'tensorflow', 'codecarbon') if m in sys.modules))"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
