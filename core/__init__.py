"""wattwise: per-step energy and carbon of ML training, from inside the training loop.

Example::

    from wattwise.integrations.transformers import EnergyCallback   # or .lightning / .keras
    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[EnergyCallback(country_iso_code="FRA")])
    trainer.train()

``import wattwise`` is cheap: it imports no training framework and no codecarbon/pandas.
"""

from .config import Config
from .report import RunReport

__version__ = "0.1.0"
__all__ = ["Config", "RunReport", "__version__"]
