"""Grid carbon intensity from codecarbon's offline data, and kWh -> kg CO2e with PUE.

Example::

    >>> from wattwise.carbon import resolve_intensity
    >>> grid = resolve_intensity(country_iso_code="FRA", pue=1.1)
    >>> round(grid.kg_for_kwh(1.0), 3)        # 1 kWh of IT energy in France, PUE 1.1
    0.062

Location, one of: a cloud provider and region (codecarbon's ``impact.csv``); a country ISO3 code
with an optional region (codecarbon's regional data for the USA, Canada, China and the Nordic
bidding zones); nothing, which means the world average and one warning. Both a country and a cloud
region is refused (which one wins would be a guess). An explicit ``carbon_intensity_g_per_kwh``
replaces the location's figure; a location given with it is still checked and named in the report.
Nothing here touches the network.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import importlib.resources
import json
import logging
from dataclasses import asdict, dataclass

logger = logging.getLogger("wattwise")

J_PER_KWH = 3.6e6


@dataclass(frozen=True)
class GridIntensity:
    """Carbon intensity of the electricity a run uses, and where the figure comes from."""

    g_per_kwh: float
    pue: float
    location: str
    source: str
    country_iso_code: str | None = None
    country_name: str | None = None
    region: str | None = None
    cloud_provider: str | None = None
    cloud_region: str | None = None
    is_default: bool = False

    def kg_for_kwh(self, it_energy_kwh: float) -> float:
        """kg CO2e for IT energy in kWh: energy x PUE x intensity."""
        return it_energy_kwh * self.pue * self.g_per_kwh / 1000.0

    def kg_for_j(self, it_energy_j: float) -> float:
        return self.kg_for_kwh(it_energy_j / J_PER_KWH)

    def to_dict(self) -> dict:
        return asdict(self)


def _data_file(*parts: str):
    return importlib.resources.files("codecarbon").joinpath("data", *parts)


@functools.cache
def _energy_mix() -> dict:
    return json.loads(_data_file("private_infra", "global_energy_mix.json").read_text(encoding="utf-8"))


@functools.cache
def _world_average_g_per_kwh() -> float:
    data = json.loads(_data_file("private_infra", "carbon_intensity_per_source.json").read_text(encoding="utf-8"))
    return float(data["world_average"])


@functools.cache
def _cloud_rows() -> dict[tuple[str, str], dict]:
    with _data_file("cloud", "impact.csv").open(encoding="utf-8-sig") as f:
        return {(row["provider"], row["region"]): row for row in csv.DictReader(f)}


def known_countries() -> list[str]:
    return sorted(_energy_mix())


@dataclass(frozen=True)
class CloudRegion:
    """A cloud region of codecarbon's ``impact.csv`` and its grid intensity."""

    provider: str
    region: str
    place: str
    g_per_kwh: float


def lowest_intensity_cloud_region(provider: str | None = None) -> CloudRegion | None:
    """The cloud region with the lowest grid intensity in codecarbon's table (of ``provider`` if given).

    Example::

        >>> lowest_intensity_cloud_region("gcp").region
        'northamerica-northeast1'
    """
    rows = [row for (p, _), row in _cloud_rows().items() if provider is None or p == provider]
    if not rows:
        return None
    row = min(rows, key=lambda r: float(r["impact"]))
    place = ", ".join(part for part in (row.get("city"), row.get("country_name")) if part)
    return CloudRegion(row["provider"], row["region"], place, float(row["impact"]))


def check_location_arguments(
    *,
    country_iso_code: str | None = None,
    region: str | None = None,
    cloud_provider: str | None = None,
    cloud_region: str | None = None,
) -> None:
    """Refuse location arguments that contradict one another (ValueError naming them); whether each
    place exists is checked by ``resolve_intensity``, which needs codecarbon's data."""
    cloud = cloud_provider is not None or cloud_region is not None
    if cloud and (country_iso_code is not None or region is not None):
        given = "country_iso_code" + ("/region" if region is not None else "")
        raise ValueError(
            f"{given} ({country_iso_code!r}{f', {region!r}' if region is not None else ''}) and "
            f"cloud_provider/cloud_region ({cloud_provider!r}, {cloud_region!r}) both say where the run is: "
            "give one of them (a cloud region already names its country)"
        )
    if (cloud_provider is None) != (cloud_region is None):
        raise ValueError("cloud_provider and cloud_region must be given together (e.g. 'gcp' and 'europe-west1')")
    if region is not None and country_iso_code is None:
        raise ValueError("region needs country_iso_code too (e.g. country_iso_code='USA', region='california')")


def resolve_intensity(
    *,
    country_iso_code: str | None = None,
    region: str | None = None,
    cloud_provider: str | None = None,
    cloud_region: str | None = None,
    carbon_intensity_g_per_kwh: float | None = None,
    pue: float = 1.0,
) -> GridIntensity:
    """Pick the grid intensity for a location; raise ``ValueError`` naming the argument if it is unknown
    or contradicts another one.

    An explicit ``carbon_intensity_g_per_kwh`` wins over the location's figure, but a location given
    with it is still checked (an unknown country or region is refused) and named in the report.
    """
    check_location_arguments(country_iso_code=country_iso_code, region=region, cloud_provider=cloud_provider,
                             cloud_region=cloud_region)
    if cloud_provider is not None:
        grid = _cloud_intensity(cloud_provider, cloud_region, pue)
    elif country_iso_code is not None:
        grid = _country_intensity(country_iso_code, region, pue)
    else:
        grid = GridIntensity(
            _world_average_g_per_kwh(), pue, location="world average (no location given)",
            source="codecarbon world_average", is_default=True,
        )
    if carbon_intensity_g_per_kwh is None:
        return grid
    where = "" if grid.is_default else f" ({grid.location})"
    return dataclasses.replace(
        grid, g_per_kwh=float(carbon_intensity_g_per_kwh), location=f"given intensity{where}",
        source="carbon_intensity_g_per_kwh argument", is_default=False,
    )


def _cloud_intensity(cloud_provider: str, cloud_region: str, pue: float) -> GridIntensity:
    row = _cloud_rows().get((cloud_provider, cloud_region))
    if row is None:
        regions = sorted(r for p, r in _cloud_rows() if p == cloud_provider)
        if not regions:
            providers = sorted({p for p, _ in _cloud_rows()})
            raise ValueError(f"cloud_provider {cloud_provider!r} is unknown; accepted: {', '.join(providers)}")
        raise ValueError(
            f"cloud_region {cloud_region!r} is unknown for {cloud_provider}; accepted: {', '.join(regions)}"
        )
    return GridIntensity(
        float(row["impact"]), pue, location=f"{cloud_provider} {cloud_region} ({row['country_name']})",
        source="codecarbon data/cloud/impact.csv", country_iso_code=row["countryIsoCode"] or None,
        country_name=row["country_name"] or None, cloud_provider=cloud_provider, cloud_region=cloud_region,
    )


def _country_intensity(country_iso_code: str, region: str | None, pue: float) -> GridIntensity:
    mix = _energy_mix()
    if country_iso_code not in mix:
        raise ValueError(
            f"country_iso_code {country_iso_code!r} is not in codecarbon's data; accepted: ISO3 codes such as "
            f"{', '.join(known_countries()[:8])}, ... ({len(mix)} in all)"
        )
    name = mix[country_iso_code].get("country_name", country_iso_code)
    g_per_kwh = _codecarbon_g_per_kwh(country_iso_code, name, region)
    location = f"{name}, {region}" if region else name
    source = "codecarbon regional data" if region else "codecarbon data/private_infra/global_energy_mix.json"
    return GridIntensity(
        g_per_kwh, pue, location=location, source=source, country_iso_code=country_iso_code,
        country_name=name, region=region,
    )


def _codecarbon_g_per_kwh(country_iso_code: str, country_name: str, region: str | None) -> float:
    """codecarbon's own offline conversion of 1 kWh (its regional data included)."""
    if region is None:
        return float(_energy_mix()[country_iso_code]["carbon_intensity"])  # what codecarbon uses first
    from codecarbon.core.emissions import Emissions
    from codecarbon.core.units import Energy
    from codecarbon.external.geography import GeoMetadata
    from codecarbon.input import DataSource

    class _RegionalOnly(Emissions):
        # codecarbon falls back on the country's figure, with only a log line, when it has no data for
        # the region (or ignores the region outright outside USA/CAN/CHN/Nordic): every such fallback
        # goes through get_country_emissions, so make it an error here instead of a silent country figure.
        def get_country_emissions(self, energy, geo):
            raise LookupError("no regional figure")

    codecarbon_logger = logging.getLogger("codecarbon")
    level = codecarbon_logger.level
    codecarbon_logger.setLevel(logging.CRITICAL)  # its fallback logs an error with a traceback
    try:
        geo = GeoMetadata(country_iso_code=country_iso_code, country_name=country_name, region=region)
        kg = _RegionalOnly(DataSource()).get_private_infra_emissions(Energy.from_energy(kWh=1.0), geo)
    except Exception:
        raise ValueError(
            f"region {region!r} is not in codecarbon's regional data for {country_iso_code} "
            "(regional data exists for USA states, Canadian provinces, Chinese provinces and Nordic zones "
            "such as SE3; leave region unset to use the country's figure)"
        ) from None
    finally:
        codecarbon_logger.setLevel(level)
    return kg * 1000.0
