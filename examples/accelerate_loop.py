"""Train a small MLP in an ``accelerate`` custom loop on the CPU, offline, and track its energy with wattwise.track().

Run:  python examples/accelerate_loop.py [--output-dir runs/accelerate] [--epochs 4]
      torchrun --standalone --nproc_per_node=2 examples/accelerate_loop.py   # two CPU ranks (gloo)
      accelerate launch --multi_gpu --num_processes 8 examples/accelerate_loop.py --gpu

The loop is accelerate's own (``Accelerator.prepare``, ``accelerator.backward``); wattwise sees it
only through ``run.step()`` after each optimizer step and ``run.phase("eval")`` around the
evaluation. Every 20 steps ``run.metrics()`` goes to TensorBoard through ``accelerator.log``
(<output-dir>/tensorboard/, read with ``tensorboard --logdir <output-dir>/tensorboard``); the run
ends with wattwise's summary and files under <output-dir>/wattwise/. Under ``accelerate launch``
every rank calls ``run.step()`` equally often, the figures are the sums over the ranks and only the
main process logs and writes files. The model and data are ``plain_loop.py``'s.
"""

from __future__ import annotations

import argparse
import os

import torch
from accelerate import Accelerator
from plain_loop import make_model, synthetic_classes  # the same model and data as the plain loop

import wattwise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="runs/accelerate")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--country", default="FRA", help="ISO3 country code for the carbon intensity")
    parser.add_argument("--gpu", action="store_true", help="use the GPUs accelerate finds (default: the CPU)")
    cli = parser.parse_args()

    # The Accelerator first: under `accelerate launch` it sets up torch.distributed, which
    # track() then uses to sum the ranks' energy.
    accelerator = Accelerator(cpu=not cli.gpu, log_with="tensorboard", project_dir=cli.output_dir)
    accelerator.init_trackers("tensorboard")

    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model, optimizer, loader, eval_loader = accelerator.prepare(
        model, optimizer, synthetic_classes(16384, seed=1, shuffle=True), synthetic_classes(1024, seed=2, shuffle=False)
    )

    planned = len(loader) * cli.epochs  # this rank's optimizer steps: every rank makes as many
    with wattwise.track(country_iso_code=cli.country, planned_steps=planned, output_dir=cli.output_dir) as run:
        run.set_work(model=model)  # its parameter count, for the run registry (wattwise estimate's calibration)
        step = 0
        for epoch in range(cli.epochs):
            model.train()
            for x, y in loader:
                loss = torch.nn.functional.cross_entropy(model(x), y)
                optimizer.zero_grad()
                accelerator.backward(loss)
                optimizer.step()
                run.step(samples=len(x))
                step += 1
                if step % 20 == 0:
                    accelerator.log({"train/loss": loss.item(), **run.metrics()}, step=step)
            model.eval()
            correct = torch.zeros((), dtype=torch.long, device=accelerator.device)
            with run.phase("eval"), torch.no_grad():
                for x, y in eval_loader:
                    predictions, labels = accelerator.gather_for_metrics((model(x).argmax(dim=1), y))
                    correct += (predictions == labels).sum()
                    run.step(samples=len(x))
            # after the phase: the pass's joules (every rank's, summed) and the run's totals
            metrics = run.pass_metrics("eval")
            accelerator.log({"eval/accuracy": correct.item() / len(eval_loader.dataset), **metrics}, step=step)
            accelerator.print(f"epoch {epoch}: eval {metrics[wattwise.EVAL_J]:.2f} J, "
                              f"total {metrics[wattwise.TOTAL_KWH] * 3.6e6:.1f} J so far")

    accelerator.end_training()
    if accelerator.is_main_process:
        report = run.report
        print(f"\ntrain {report.by_phase['train'].energy_j:.1f} J over {report.train_steps} steps, "
              f"eval {report.by_phase['eval'].energy_j:.1f} J; files in {run.output_dir}, "
              f"TensorBoard logs in {os.path.join(cli.output_dir, 'tensorboard')}")


if __name__ == "__main__":
    main()
