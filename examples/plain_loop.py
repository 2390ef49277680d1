"""Train a small MLP in a plain PyTorch loop on the CPU, offline, and track its energy with wattwise.track().

Run:  python examples/plain_loop.py [--output-dir runs/loop] [--epochs 4] [--probe]

No framework: the loop calls ``run.step()`` after each optimizer step and prints ``run.metrics()``
every 100 steps (a few of the keys every EnergyCallback logs), evaluates once per epoch inside
``run.phase("eval")``, and ends with wattwise's summary and files under <output-dir>/wattwise/.
With ``--probe`` it first measures three batch sizes for 200 steps each (``wattwise.probe``) and
prints each one's projected energy for the whole planned run, before training at batch size 32; the
summary then recommends the probe's cheapest batch size with the saving it measured (the probe is kept
beside the run registry, so later runs of the same model on this machine get it too).
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.data import DataLoader, TensorDataset

import wattwise

FEATURES, HIDDEN, CLASSES = 32, 512, 10
SHOWN = (wattwise.STEP_J, wattwise.POWER_W, wattwise.TOTAL_KWH, wattwise.FORECAST_KWH, wattwise.FORECAST_HIGH_KWH)


def synthetic_classes(n: int, seed: int, shuffle: bool, batch_size: int = 32) -> DataLoader:
    """Points around one random centre per class."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(CLASSES, FEATURES, generator=torch.Generator().manual_seed(0)) * 2
    labels = torch.randint(0, CLASSES, (n,), generator=generator)
    points = centres[labels] + torch.randn(n, FEATURES, generator=generator)
    return DataLoader(TensorDataset(points, labels), batch_size=batch_size, shuffle=shuffle)


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(FEATURES, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, CLASSES),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="runs/loop")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--country", default="FRA", help="ISO3 country code for the carbon intensity")
    parser.add_argument("--probe", action="store_true", help="first measure batch sizes 16, 32, 128 (200 steps each)")
    cli = parser.parse_args()

    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    if cli.probe:
        print(probe_batch_sizes(model, cli))
    loader = synthetic_classes(16384, seed=1, shuffle=True)
    eval_loader = synthetic_classes(1024, seed=2, shuffle=False)

    planned = len(loader) * cli.epochs
    with wattwise.track(country_iso_code=cli.country, planned_steps=planned, output_dir=cli.output_dir) as run:
        run.set_work(model=model)  # its parameter count, for the run registry (wattwise estimate's calibration)
        # the set-up the advisor compares with a probe of this model (the framework callbacks say it themselves)
        run.evidence.describe(batch_size=loader.batch_size)
        step = 0
        for epoch in range(cli.epochs):
            model.train()
            for x, y in loader:
                loss = torch.nn.functional.cross_entropy(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                run.step(samples=len(x))
                step += 1
                if step % 100 == 0:
                    metrics = run.metrics()  # the forecast keys appear once a few windows are measured
                    print(f"step {step}: loss {loss.item():.3f}, " + ", ".join(
                        f"{key.split('/')[1]} {metrics[key]:.3g}" for key in SHOWN if key in metrics))
            model.eval()
            correct = 0
            with run.phase("eval"), torch.no_grad():
                for x, y in eval_loader:
                    correct += int((model(x).argmax(dim=1) == y).sum())
                    run.step(samples=len(x))
            print(f"epoch {epoch}: accuracy {correct / len(eval_loader.dataset):.3f}, "
                  f"eval {run.pass_metrics('eval', totals=False)[wattwise.EVAL_J]:.2f} J")

    report = run.report
    print(f"\ntrain {report.by_phase['train'].energy_j:.1f} J over {report.train_steps} steps, "
          f"eval {report.by_phase['eval'].energy_j:.1f} J; files in {run.output_dir}")


def probe_batch_sizes(model: torch.nn.Module, cli: argparse.Namespace):
    """Before training: 200 steps at each batch size, each projected to the planned epochs (a larger
    batch makes fewer steps). The model and the random state are left as they were."""

    def run_steps(config: dict, run: wattwise.Run) -> float:
        loader = synthetic_classes(16384, seed=1, shuffle=True, batch_size=config["batch_size"])
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)  # its own: the real one is left untouched
        for _, (x, y) in zip(range(run.planned_steps), loader, strict=False):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.step(samples=len(x))
        return loss.item()

    from wattwise.options import Options

    return wattwise.probe(run_steps, {"batch_size": [16, 32, 128]}, steps=200, planned_samples=16384 * cli.epochs,
                          model=model, options=Options(country_iso_code=cli.country, output_dir=cli.output_dir))


if __name__ == "__main__":
    main()
