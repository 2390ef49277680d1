"""wattwise: per-step energy and carbon of ML training, from inside the training loop.

Example::

    import wattwise

    with wattwise.track(country_iso_code="FRA", planned_steps=1000, output_dir="out") as run:
        for i, batch in enumerate(loader):
            train_step(batch)
            run.step(samples=len(batch))
            if i % 50 == 0:
                print(run.metrics())          # {"energy/step_j": ..., "energy/total_kwh": ..., ...}
    run.report                                # RunReport

or, in a framework, ``EnergyCallback(country_iso_code="FRA")`` from ``wattwise.integrations.transformers``
(``.lightning``, ``.keras``).

``import wattwise`` is cheap: it imports no training framework and no codecarbon/pandas.
``wattwise.probe(run_steps, {"batch_size": [16, 32, 64]}, steps=40, planned_samples=...)`` measures
candidate configurations for a few steps each and projects each one's whole run (``print(result)``);
the frameworks' own are ``wattwise.integrations.<framework>.probe``.
``wattwise.estimate(...)`` is the pre-run estimate (``wattwise.estimate`` the function, not the module
of the same name: import the module's other names with ``from wattwise.estimate import ...``).
"""

from .config import Config
from .estimate import Estimate, estimate  # cheap (no framework); binds the function over the submodule
from .figures import PASS_SAMPLE_KEYS, SAMPLE_J, TOKENS_PER_J
from .probing import probe  # measure candidate configurations before training (the function, not a module)
from .projection import FORECAST_HIGH_KWH, FORECAST_KG, FORECAST_KWH, FORECAST_LOW_KWH
from .report import RunReport
from .run import CARBON_KG, EVAL_J, POWER_W, PREDICT_J, STEP_J, TEST_J, TOTAL_KWH, Run, track

__version__ = "0.1.0"
LOG_KEYS = (STEP_J, POWER_W, TOTAL_KWH, CARBON_KG, SAMPLE_J, TOKENS_PER_J, EVAL_J, TEST_J, PREDICT_J,
            *PASS_SAMPLE_KEYS.values(), FORECAST_KWH, FORECAST_LOW_KWH, FORECAST_HIGH_KWH, FORECAST_KG)
__all__ = [
    "CARBON_KG", "EVAL_J", "FORECAST_HIGH_KWH", "FORECAST_KG", "FORECAST_KWH", "FORECAST_LOW_KWH", "LOG_KEYS",
    "PASS_SAMPLE_KEYS", "POWER_W", "PREDICT_J", "SAMPLE_J", "STEP_J", "TEST_J", "TOKENS_PER_J", "TOTAL_KWH", "Config", "Estimate", "Run", "RunReport",
    "__version__", "estimate", "probe", "track",
]
