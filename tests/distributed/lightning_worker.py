"""A Lightning ``strategy="ddp"`` run on two CPU processes (gloo), for test_distributed.py.

``lightning_worker.py OUT [BUDGET_KWH]``, started as a plain script: Lightning's DDP launcher
starts the second process by running this script again. As in hf_worker.py, the node's RAPL counters
are a fake sysfs tree under ``OUT/node`` that the node's first process advances per step
(PACKAGE_J, DRAM_J). Each rank writes ``OUT/rank<r>.json``: its report, the CSV logger's rows, and
its final global step.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import advance_node, callback_options, make_node_tree, node_root  # noqa: E402

import wattwise.sources.rapl  # noqa: E402
from wattwise.integrations.lightning import EnergyCallback  # noqa: E402

MAX_STEPS = 12


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class NodeCounter(pl.Callback):
    """The node's RAPL counters advance as the node works: by its first process, once per step."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.local_rank != 0:
            return
        advance_node(self.root)


def loader(n: int, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(torch.randn(n, 4, generator=generator), torch.randn(n, 1, generator=generator)),
                      batch_size=4)


def main() -> None:
    out = Path(sys.argv[1])
    budget_kwh = float(sys.argv[2]) if len(sys.argv) > 2 else None
    root = node_root(out)
    if "LOCAL_RANK" not in os.environ:  # the launching process, before it starts the other rank
        make_node_tree(out)
    wattwise.sources.rapl.DEFAULT_ROOT = str(root)
    energy = EnergyCallback(**callback_options(budget_kwh))
    torch.manual_seed(0)
    trainer = pl.Trainer(
        accelerator="cpu", devices=2, strategy=os.environ.get("WORKER_STRATEGY", "ddp"), max_steps=MAX_STEPS, log_every_n_steps=2,
        val_check_interval=6, logger=pl.loggers.CSVLogger(out, name="logs", version=0),
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=str(out), callbacks=[energy, NodeCounter(root)],
    )
    trainer.fit(Tiny(), loader(96, 0), loader(16, 1))
    if energy.report is None:  # ddp_spawn: the ranks ran in child processes; this one keeps no report
        (out / "launcher.json").write_text(json.dumps({"report": None, "global_step": trainer.global_step}))
        return
    rows = []
    metrics_csv = out / "logs" / "version_0" / "metrics.csv"
    if trainer.is_global_zero and metrics_csv.exists():
        rows = list(csv.DictReader(metrics_csv.open()))
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps({
        "report": energy.report.to_dict(), "rows": rows, "global_step": trainer.global_step,
        "world_size": trainer.world_size,
    }))


if __name__ == "__main__":
    main()
