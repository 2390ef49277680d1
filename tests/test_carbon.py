"""Grid intensity and kWh -> kg CO2e, checked against codecarbon's own offline conversion."""

from __future__ import annotations

import logging

import pytest
from codecarbon.core.emissions import Emissions
from codecarbon.core.units import Energy
from codecarbon.external.geography import CloudMetadata, GeoMetadata
from codecarbon.input import DataSource

from wattwise.carbon import J_PER_KWH, GridIntensity, resolve_intensity


def codecarbon_kg_per_kwh(country_iso_code: str, region: str | None = None) -> float:
    """What codecarbon's offline tracker charges for 1 kWh in that place."""
    geo = GeoMetadata(country_iso_code=country_iso_code, region=region)
    return Emissions(DataSource()).get_private_infra_emissions(Energy.from_energy(kWh=1), geo)


def codecarbon_cloud_kg_per_kwh(provider: str, region: str) -> float:
    cloud = CloudMetadata(provider=provider, region=region)
    return Emissions(DataSource()).get_cloud_emissions(Energy.from_energy(kWh=1), cloud)


# ---- countries and regions ---------------------------------------------------------------------------


def test_france_matches_codecarbon():
    grid = resolve_intensity(country_iso_code="FRA")
    expected_kg = codecarbon_kg_per_kwh("FRA")
    assert grid.kg_for_kwh(1.0) == pytest.approx(expected_kg, rel=1e-9)
    assert 0.01 < expected_kg < 0.2  # a low-carbon grid: the check is not comparing zeros
    assert (grid.country_iso_code, grid.country_name, grid.location) == ("FRA", "France", "France")
    assert not grid.is_default


@pytest.mark.parametrize("code", ["DEU", "USA", "IND", "CHN", "BRA", "POL", "NOR"])
def test_countries_match_codecarbon(code):
    assert resolve_intensity(country_iso_code=code).g_per_kwh == pytest.approx(
        codecarbon_kg_per_kwh(code) * 1000, rel=1e-9
    )


@pytest.mark.parametrize(
    ("code", "region"),
    [("USA", "california"), ("USA", "texas"), ("CAN", "ontario"), ("CHN", "beijing"), ("SWE", "SE3"), ("NOR", "NO1")],
)
def test_regions_match_codecarbon_and_differ_from_the_country(code, region):
    grid = resolve_intensity(country_iso_code=code, region=region)
    expected_g = codecarbon_kg_per_kwh(code, region) * 1000
    assert grid.g_per_kwh == pytest.approx(expected_g, rel=1e-9)
    assert grid.g_per_kwh != pytest.approx(resolve_intensity(country_iso_code=code).g_per_kwh, rel=1e-3)
    assert grid.region == region and region in grid.location


def test_region_is_case_insensitive_like_codecarbon():
    assert resolve_intensity(country_iso_code="USA", region="California").g_per_kwh == pytest.approx(
        resolve_intensity(country_iso_code="USA", region="california").g_per_kwh
    )


@pytest.mark.parametrize(
    ("code", "region"),
    [("USA", "atlantis"), ("CAN", "gondor"), ("CHN", "shangri-la"), ("SWE", "SE9"), ("FRA", "bretagne")],
)
def test_unknown_region_raises_instead_of_falling_back_to_the_country(code, region):
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    codecarbon_logger = logging.getLogger("codecarbon")  # does not propagate: listen to it directly
    codecarbon_logger.addHandler(handler)
    try:
        with pytest.raises(ValueError) as raised:
            resolve_intensity(country_iso_code=code, region=region)
    finally:
        codecarbon_logger.removeHandler(handler)
    message = str(raised.value)
    assert message.startswith(f"region {region!r}") and code in message
    assert records == []  # no codecarbon error and traceback printed meanwhile


def test_region_without_country_raises():
    with pytest.raises(ValueError, match="region needs country_iso_code"):
        resolve_intensity(region="california")


def test_unknown_country_raises_naming_the_argument():
    with pytest.raises(ValueError) as raised:
        resolve_intensity(country_iso_code="XYZ")
    message = str(raised.value)
    assert message.startswith("country_iso_code 'XYZ'") and "accepted" in message and "ISO3" in message


# ---- cloud regions -----------------------------------------------------------------------------------


def test_cloud_region_matches_codecarbon():
    grid = resolve_intensity(cloud_provider="gcp", cloud_region="europe-west1")
    assert grid.g_per_kwh == pytest.approx(codecarbon_cloud_kg_per_kwh("gcp", "europe-west1") * 1000, rel=1e-9)
    assert grid.g_per_kwh == 122.0  # the row in data/cloud/impact.csv
    assert (grid.cloud_provider, grid.cloud_region, grid.country_iso_code) == ("gcp", "europe-west1", "BEL")
    assert "gcp europe-west1" in grid.location and "Belgium" in grid.location


def test_a_country_and_a_cloud_region_together_are_refused():
    # which one would win is a guess (issue 14): one location, or a ValueError naming both
    with pytest.raises(ValueError, match="country_iso_code .* cloud_provider/cloud_region"):
        resolve_intensity(country_iso_code="FRA", cloud_provider="gcp", cloud_region="europe-west1")
    assert resolve_intensity(cloud_provider="gcp", cloud_region="europe-west1").g_per_kwh == 122.0


def test_unknown_cloud_provider_raises_naming_the_argument():
    with pytest.raises(ValueError) as raised:
        resolve_intensity(cloud_provider="oracle", cloud_region="eu-frankfurt-1")
    message = str(raised.value)
    assert message.startswith("cloud_provider 'oracle'") and "accepted: gcp" in message


def test_unknown_cloud_region_raises_naming_the_argument():
    with pytest.raises(ValueError) as raised:
        resolve_intensity(cloud_provider="gcp", cloud_region="mars-north1")
    message = str(raised.value)
    assert message.startswith("cloud_region 'mars-north1'") and "europe-west1" in message


# ---- explicit intensity, default, PUE --------------------------------------------------------------------


def test_explicit_intensity_wins_over_everything():
    grid = resolve_intensity(cloud_provider="gcp", cloud_region="europe-west1", carbon_intensity_g_per_kwh=42)
    assert grid.g_per_kwh == 42.0 and grid.cloud_region == "europe-west1"  # the location is still named
    assert grid.source == "carbon_intensity_g_per_kwh argument"
    assert not grid.is_default


def test_no_location_is_the_world_average_and_says_so():
    grid = resolve_intensity()
    assert grid.g_per_kwh == DataSource().get_carbon_intensity_per_source_data()["world_average"]
    assert grid.is_default
    assert "world average" in grid.location


def test_pue_multiplies_the_it_energy():
    grid = resolve_intensity(carbon_intensity_g_per_kwh=100.0, pue=1.5)
    assert grid.kg_for_kwh(2.0) == pytest.approx(0.3)  # 2 kWh x 1.5 x 100 g
    assert grid.kg_for_j(2.0 * J_PER_KWH) == pytest.approx(0.3)
    assert J_PER_KWH == 3.6e6


def test_pue_on_a_country():
    plain = resolve_intensity(country_iso_code="FRA")
    with_pue = resolve_intensity(country_iso_code="FRA", pue=1.1)
    assert with_pue.kg_for_kwh(1.0) == pytest.approx(1.1 * codecarbon_kg_per_kwh("FRA"), rel=1e-9)
    assert with_pue.kg_for_kwh(1.0) == pytest.approx(1.1 * plain.kg_for_kwh(1.0))
    assert round(with_pue.kg_for_kwh(1.0), 3) == 0.062  # the module docstring's example


def test_to_dict_carries_the_provenance():
    data = resolve_intensity(country_iso_code="USA", region="california", pue=1.2).to_dict()
    assert data["region"] == "california" and data["pue"] == 1.2 and data["country_iso_code"] == "USA"
    assert data["source"] == "codecarbon regional data"
    assert GridIntensity(**data) == resolve_intensity(country_iso_code="USA", region="california", pue=1.2)
