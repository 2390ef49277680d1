"""Cost of ``Run.step()`` and of one forecast, in isolation (``timeit``, best of 7).

Run:  python benchmarks/step_cost.py

``Run.step()`` is the only work wattwise does at every step; the forecast is made once per reading a
log step asks for, with up to 1024 windows of history.
"""

from __future__ import annotations

import random
import sys
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fakes import SteadySource  # noqa: E402

from wattwise.config import Config  # noqa: E402
from wattwise.forecast import Forecaster  # noqa: E402
from wattwise.meter import EnergyMeter  # noqa: E402
from wattwise.run import Run  # noqa: E402


def main() -> None:
    config = Config.from_kwargs(print_summary=False, write_files=False, registry=False, country_iso_code="FRA",
                                window_s=3600.0)
    run = Run.from_config(config, "loop")
    run.start(meter=EnergyMeter([SteadySource({"cpu": 1.0}, time.monotonic)]))
    for label, stmt in (("step()", "run.step()"), ("step(samples, tokens)", "run.step(samples=8, tokens=128)")):
        best = min(timeit.repeat(stmt, globals={"run": run}, number=200_000, repeat=7)) / 200_000
        print(f"Run.{label}: {best * 1e6:.3f} us")
    run.finish()
    for windows in (50, 300, 1024):
        forecaster = Forecaster(100_000)
        rng = random.Random(0)
        for _ in range(windows):
            forecaster.add_window(50, 5.0 * (1 + rng.uniform(-0.1, 0.1)), 0.5)
        best = min(timeit.repeat(forecaster.forecast, number=50, repeat=7)) / 50
        print(f"forecast with {windows} windows: {best * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
