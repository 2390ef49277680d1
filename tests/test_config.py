"""Config.from_kwargs: one set of names, WATTWISE_<NAME> variables, errors that name the argument."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import pytest

from wattwise.config import SOURCE_NAMES, Config


def test_defaults(monkeypatch):
    monkeypatch.delenv("WATTWISE_REGISTRY")  # conftest points every test at a private registry
    config = Config.from_kwargs()
    assert config == Config()
    assert config.sources == SOURCE_NAMES == ("nvml", "rapl", "cpu", "ram")
    assert (config.pue, config.window_s, config.sync_cuda, config.print_summary, config.write_files) == (
        1.0, 0.5, False, True, True,
    )
    assert config.country_iso_code is None and config.carbon_intensity_g_per_kwh is None


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config.from_kwargs().pue = 2.0


def test_unknown_argument_is_named_with_the_accepted_ones():
    with pytest.raises(ValueError) as raised:
        Config.from_kwargs(contry_iso_code="FRA")
    message = str(raised.value)
    assert "contry_iso_code" in message and "accepted" in message and "country_iso_code" in message


# ---- values ------------------------------------------------------------------------------------------


def test_country_code_is_normalised():
    assert Config.from_kwargs(country_iso_code=" fra ").country_iso_code == "FRA"


@pytest.mark.parametrize("code", ["FR", "FRAN", "F1A", "", 250])
def test_bad_country_code_names_the_argument(code):
    with pytest.raises(ValueError, match="^country_iso_code must be"):
        Config.from_kwargs(country_iso_code=code)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("pue", 1, 1.0),
        ("pue", 1.58, 1.58),
        ("carbon_intensity_g_per_kwh", 0, 0.0),
        ("cpu_power_w", 65, 65.0),
        ("ram_power_w", 0.0, 0.0),
        ("window_s", 2, 2.0),
    ],
)
def test_numbers_accepted_as_floats(name, value, expected):
    result = getattr(Config.from_kwargs(**{name: value}), name)
    assert result == expected and type(result) is float


@pytest.mark.parametrize(
    ("name", "value", "bound"),
    [
        ("pue", 0.9, ">= 1"),
        ("carbon_intensity_g_per_kwh", -1.0, ">= 0"),
        ("cpu_power_w", 0.0, "> 0"),
        ("ram_power_w", -5.0, ">= 0"),
        ("window_s", 0, "> 0"),
        ("pue", float("inf"), ">= 1"),
        ("window_s", float("nan"), "> 0"),
    ],
)
def test_numbers_out_of_range_name_the_argument_and_the_bound(name, value, bound):
    with pytest.raises(ValueError) as raised:
        Config.from_kwargs(**{name: value})
    message = str(raised.value)
    assert message.startswith(f"{name} must be a finite number {bound}")


@pytest.mark.parametrize("value", ["1.2", True, [1.2]])
def test_non_numbers_are_refused(value):
    with pytest.raises(ValueError, match="^pue must be a number"):
        Config.from_kwargs(pue=value)


@pytest.mark.parametrize("name", ["sync_cuda", "print_summary", "write_files"])
def test_flags_must_be_booleans(name):
    assert getattr(Config.from_kwargs(**{name: True}), name) is True
    assert getattr(Config.from_kwargs(**{name: False}), name) is False
    with pytest.raises(ValueError, match=f"^{name} must be True or False"):
        Config.from_kwargs(**{name: "yes"})


def test_sources():
    assert Config.from_kwargs(sources=["cpu", "nvml"]).sources == ("cpu", "nvml")
    assert Config.from_kwargs(sources="rapl").sources == ("rapl",)
    with pytest.raises(ValueError) as raised:
        Config.from_kwargs(sources=("nvml", "tpu"))
    message = str(raised.value)
    assert message.startswith("sources has unknown name(s) ['tpu']") and "nvml, rapl, cpu, ram" in message


def test_strings_and_paths():
    config = Config.from_kwargs(output_dir=Path("/tmp/run"), project_name="bert")
    assert config.output_dir == "/tmp/run" and config.project_name == "bert"
    with pytest.raises(ValueError, match="^output_dir must be a string"):
        Config.from_kwargs(output_dir=3)


def test_cloud_provider_and_region_go_together():
    config = Config.from_kwargs(cloud_provider=" GCP ", cloud_region="europe-west1")
    assert (config.cloud_provider, config.cloud_region) == ("gcp", "europe-west1")
    for kwargs in ({"cloud_provider": "gcp"}, {"cloud_region": "europe-west1"}):
        with pytest.raises(ValueError, match="cloud_provider and cloud_region must be given together"):
            Config.from_kwargs(**kwargs)


def test_region_needs_a_country():
    assert Config.from_kwargs(country_iso_code="usa", region="california").region == "california"
    with pytest.raises(ValueError, match="^region needs country_iso_code"):
        Config.from_kwargs(region="california")


# ---- WATTWISE_<NAME> environment variables ---------------------------------------------------------------

# One valid environment value per argument, and the value the config should hold.
PROBE_JSON = Path(tempfile.mkdtemp(prefix="wattwise-test-probe-")) / "probe.json"  # WATTWISE_PROBE names a file
PROBE_JSON.write_text('{"framework": "loop", "candidates": []}')
ENV_VALUES = {
    "country_iso_code": ("deu", "DEU"),
    "region": ("bavaria", "bavaria"),
    "cloud_provider": ("gcp", "gcp"),
    "cloud_region": ("europe-west1", "europe-west1"),
    "carbon_intensity_g_per_kwh": ("123.5", 123.5),
    "pue": ("1.25", 1.25),
    "output_dir": ("/tmp/out", "/tmp/out"),
    "cpu_power_w": ("95", 95.0),
    "ram_power_w": ("3.5", 3.5),
    "sources": ("nvml, cpu", ("nvml", "cpu")),
    "sync_cuda": ("true", True),
    "window_s": ("2", 2.0),
    "print_summary": ("0", False),
    "write_files": ("off", False),
    "project_name": ("my-run", "my-run"),
    "budget_kwh": ("0.5", 0.5),
    "budget_kg_co2e": ("2", 2.0),
    "on_budget": ("stop", "stop"),
    "registry": ("/tmp/runs.sqlite", "/tmp/runs.sqlite"),
    "probe": (str(PROBE_JSON), str(PROBE_JSON)),
}
PAIRED = {  # arguments that are only valid with another one
    "region": {"country_iso_code": "DEU"},
    "cloud_provider": {"cloud_region": "europe-west1"},
    "cloud_region": {"cloud_provider": "gcp"},
}


def test_every_argument_has_an_environment_value_here():
    fields = {f.name for f in dataclasses.fields(Config)}
    assert set(ENV_VALUES) == fields


@pytest.mark.parametrize("name", sorted(ENV_VALUES))
def test_every_argument_is_readable_from_the_environment(name, monkeypatch):
    raw, expected = ENV_VALUES[name]
    monkeypatch.setenv(f"WATTWISE_{name.upper()}", raw)
    assert getattr(Config.from_kwargs(**PAIRED.get(name, {})), name) == expected


def test_explicit_arguments_win_over_the_environment(monkeypatch):
    monkeypatch.setenv("WATTWISE_COUNTRY_ISO_CODE", "DEU")
    monkeypatch.setenv("WATTWISE_PUE", "1.5")
    monkeypatch.setenv("WATTWISE_SYNC_CUDA", "yes")
    config = Config.from_kwargs(country_iso_code="FRA", pue=1.1, sync_cuda=False)
    assert (config.country_iso_code, config.pue, config.sync_cuda) == ("FRA", 1.1, False)


def test_none_and_empty_mean_not_given(monkeypatch):
    monkeypatch.setenv("WATTWISE_COUNTRY_ISO_CODE", "DEU")
    assert Config.from_kwargs(country_iso_code=None).country_iso_code == "DEU"
    monkeypatch.setenv("WATTWISE_PUE", "")
    assert Config.from_kwargs().pue == 1.0


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("TRUE", True), ("Yes", True), (" on ", True),
                                               ("0", False), ("false", False), ("NO", False), ("off", False)])
def test_boolean_environment_values(raw, expected, monkeypatch):
    monkeypatch.setenv("WATTWISE_SYNC_CUDA", raw)
    assert Config.from_kwargs().sync_cuda is expected


def test_bad_boolean_environment_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("WATTWISE_PRINT_SUMMARY", "maybe")
    with pytest.raises(ValueError, match="^WATTWISE_PRINT_SUMMARY='maybe': expected true/false"):
        Config.from_kwargs()


def test_bad_number_environment_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("WATTWISE_PUE", "one point two")
    with pytest.raises(ValueError, match="^WATTWISE_PUE='one point two': expected a number"):
        Config.from_kwargs()


def test_environment_values_are_validated_like_arguments(monkeypatch):
    monkeypatch.setenv("WATTWISE_PUE", "0.5")
    with pytest.raises(ValueError, match="^pue must be a finite number >= 1"):
        Config.from_kwargs()
    monkeypatch.setenv("WATTWISE_PUE", "1.2")
    monkeypatch.setenv("WATTWISE_SOURCES", "nvml,tpu")
    with pytest.raises(ValueError, match=r"^sources has unknown name\(s\) \['tpu'\]"):
        Config.from_kwargs()


def test_environment_and_arguments_combine(monkeypatch):
    monkeypatch.setenv("WATTWISE_CLOUD_PROVIDER", "gcp")
    config = Config.from_kwargs(cloud_region="us-central1")
    assert (config.cloud_provider, config.cloud_region) == ("gcp", "us-central1")


def test_numpy_numbers_are_accepted():
    import numpy as np

    config = Config.from_kwargs(pue=np.float32(1.5), budget_kwh=np.int64(2))
    assert config.pue == 1.5 and isinstance(config.pue, float)
    assert config.budget_kwh == 2.0 and isinstance(config.budget_kwh, float)
