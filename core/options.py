"""The keyword arguments of every entry point, defined once: each ``EnergyCallback`` and
``wattwise.track`` inherit this ``__init__``, so IDEs complete them and ``LightningCLI`` / YAML
configs can set them (``--trainer.callbacks.init_args.country_iso_code=FRA``).

Example::

    >>> from wattwise.options import Options
    >>> Options(country_iso_code="fra", pue=1.2).config.country_iso_code
    'FRA'

``None`` means "not given": the ``WATTWISE_<NAME>`` environment variable, else the default
(``docs/guide.md`` lists each one). A bad value raises ``ValueError`` naming the argument, here,
before any training starts.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

from .config import Config
from .probe_result import ProbeResult  # a real import: LightningCLI / jsonargparse resolve the signature


class Options:
    """Where the run is (carbon), what to measure, where files go, the budget, the plan.

    Location (one of): ``country_iso_code`` (ISO 3166-1 alpha-3, e.g. ``"FRA"``) with an optional
    ``region`` (``"california"``); ``cloud_provider`` + ``cloud_region`` (``"gcp"``,
    ``"europe-west1"``); or ``carbon_intensity_g_per_kwh``. ``pue``: the data centre's power usage
    effectiveness (>= 1). ``output_dir``: the files go under ``<output_dir>/wattwise/`` (default:
    the framework's output directory). ``planned_steps``: the training steps planned, for the
    forecast, when the framework cannot tell (``track()``; an iterable dataset). ``cpu_power_w``
    / ``ram_power_w``: the TDP and RAM power of the estimates. ``sources``: any of ``nvml``,
    ``rapl``, ``cpu``, ``ram``. ``sync_cuda``: wait for queued CUDA work at each reading.
    ``window_s``: the shortest time between two readings. ``print_summary``, ``write_files``,
    ``project_name``. ``budget_kwh`` / ``budget_kg_co2e`` with ``on_budget`` (``"warn"`` or
    ``"stop"``). ``registry``: the run registry (``False`` = none, or a file path). ``probe``: a
    ``wattwise.probe`` result of this set-up (or its ``probe.json``) for the end-of-run advice.
    """

    def __init__(
        self,
        *,
        country_iso_code: str | None = None,
        region: str | None = None,
        cloud_provider: str | None = None,
        cloud_region: str | None = None,
        carbon_intensity_g_per_kwh: float | None = None,
        pue: float | None = None,
        output_dir: str | None = None,
        planned_steps: int | None = None,
        cpu_power_w: float | None = None,
        ram_power_w: float | None = None,
        sources: Sequence[str] | str | None = None,
        sync_cuda: bool | None = None,
        window_s: float | None = None,
        print_summary: bool | None = None,
        write_files: bool | None = None,
        project_name: str | None = None,
        budget_kwh: float | None = None,
        budget_kg_co2e: float | None = None,
        on_budget: str | None = None,
        registry: bool | str | None = None,
        probe: ProbeResult | str | None = None,
    ) -> None:
        options = dict(locals())
        for name in ("self", "planned_steps", "__class__"):
            options.pop(name, None)
        self.config = Config.from_kwargs(**options)
        self.planned_steps = checked_planned_steps(planned_steps)
        super().__init__()
        self._configured()

    def _configured(self) -> None:
        """Subclasses set themselves up from ``self.config`` here."""


def checked_planned_steps(planned_steps: object) -> int | None:
    """``planned_steps`` as a whole number > 0 (or None); ValueError naming it otherwise."""
    if planned_steps is None:
        return None
    if isinstance(planned_steps, bool) or not isinstance(planned_steps, numbers.Integral) or planned_steps <= 0:
        raise ValueError(f"planned_steps must be a whole number > 0, got {planned_steps!r}")
    return int(planned_steps)
