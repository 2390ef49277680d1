"""Train a small MLP classifier with Lightning on the CPU, offline, and track its energy.

Run:  python examples/lightning_train.py [--output-dir runs/lightning] [--max-steps 500]
                                         [--namespace lightning.pytorch|pytorch_lightning]

The data are synthetic (no download). The run validates every 50 steps, logs energy metrics every
25 steps to CSV (<output-dir>/metrics.csv) and, when the tensorboard package is installed,
TensorBoard (<output-dir>/events.out.tfevents.*), then tests the model once. Each trainer call is
one run and ends with wattwise's summary and files, beside the loggers' (the callback follows
``trainer.log_dir``): the fit's under <output-dir>/wattwise/, the test's under
<output-dir>/test/wattwise/.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os

import torch
from torch.utils.data import DataLoader, TensorDataset

from wattwise.integrations.lightning import EnergyCallback

FEATURES, CLASSES = 32, 10


def synthetic_classes(n: int, seed: int) -> DataLoader:
    """Points around one random centre per class."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(CLASSES, FEATURES, generator=torch.Generator().manual_seed(0)) * 2
    labels = torch.randint(0, CLASSES, (n,), generator=generator)
    points = centres[labels] + torch.randn(n, FEATURES, generator=generator)
    return DataLoader(TensorDataset(points, labels), batch_size=32, shuffle=seed == 1)


def classifier(pl):
    class Classifier(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(FEATURES, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(),
                torch.nn.Linear(256, CLASSES),
            )

        def step(self, batch, name: str):
            x, y = batch
            loss = torch.nn.functional.cross_entropy(self.net(x), y)
            self.log(f"{name}_loss", loss, prog_bar=name != "train")
            return loss

        def training_step(self, batch, batch_idx):
            return self.step(batch, "train")

        def validation_step(self, batch, batch_idx):
            self.step(batch, "val")

        def test_step(self, batch, batch_idx):
            self.step(batch, "test")

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    return Classifier()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="runs/lightning")
    parser.add_argument("--max-steps", type=int, default=500)
    parser.add_argument("--country", default="FRA", help="ISO3 country code for the carbon intensity")
    parser.add_argument("--namespace", default="lightning.pytorch", choices=["lightning.pytorch", "pytorch_lightning"])
    cli = parser.parse_args()

    pl = importlib.import_module(cli.namespace)
    loggers = importlib.import_module(f"{cli.namespace}.loggers")
    # name="" and version="": the loggers write straight into --output-dir (not lightning_logs/version_N),
    # so trainer.log_dir is --output-dir and the callback writes <output-dir>/wattwise/ beside them
    chosen = [loggers.CSVLogger(cli.output_dir, name="", version="")]
    if importlib.util.find_spec("tensorboard"):
        chosen.insert(0, loggers.TensorBoardLogger(cli.output_dir, name="", version=""))

    energy = EnergyCallback(country_iso_code=cli.country)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=cli.max_steps,
        val_check_interval=50,
        check_val_every_n_epoch=None,
        log_every_n_steps=25,
        logger=chosen,
        callbacks=[energy],
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=cli.output_dir,
    )
    model = classifier(pl)
    trainer.fit(model, synthetic_classes(8192, seed=1), synthetic_classes(512, seed=2))
    trainer.test(model, synthetic_classes(512, seed=3))
    fit, test = energy.reports
    print(f"\ntrain {fit.by_phase['train'].energy_j:.1f} J, eval {fit.by_phase['eval'].energy_j:.1f} J, "
          f"test {test.by_phase['test'].energy_j:.1f} J; files in {os.path.join(cli.output_dir, 'wattwise')} "
          f"(fit) and {os.path.join(cli.output_dir, 'test', 'wattwise')} (test)")


if __name__ == "__main__":
    main()
