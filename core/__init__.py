"""wattwise: per-step energy and carbon of ML training, from inside the training loop.

Example::

    from wattwise.integrations.transformers import EnergyCallback   # or .lightning / .keras
    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[EnergyCallback(country_iso_code="FRA")])
    trainer.train()

``import wattwise`` is cheap: it imports no training framework and no codecarbon/pandas.
``wattwise.estimate(...)`` is the pre-run estimate (``wattwise.estimate`` the function, not the module
of the same name: import the module's other names with ``from wattwise.estimate import ...``).
"""

from .config import Config
from .estimate import Estimate, estimate  # cheap (no framework); binds the function over the submodule
from .report import RunReport

__version__ = "0.1.0"
__all__ = ["Config", "Estimate", "RunReport", "__version__", "estimate"]
