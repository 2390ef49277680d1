"""One rank of a Hugging Face Trainer run under torchrun (gloo, CPU), for test_distributed.py.

``hf_worker.py OUT [BUDGET_KWH]``: a tiny GPT-2 built from a config, data-parallel over the ranks,
with ``EnergyCallback`` measuring a fake RAPL tree (the real sysfs layout, under ``OUT/node``) that
the node's first process advances by PACKAGE_J and DRAM_J per step, and each process's own CPU
time is not estimated beside it. Each rank writes ``OUT/rank<r>.json``: its report, its
``log_history`` and its final global step.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
from datasets import Dataset
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import advance_node, callback_options, make_node_tree, node_root  # noqa: E402

import wattwise.sources.rapl  # noqa: E402
from wattwise.integrations.transformers import EnergyCallback  # noqa: E402

MAX_STEPS = 12
VOCAB = 64


class NodeCounter(TrainerCallback):
    """The node's RAPL counters advance as the node works: by the first process, once per step."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def on_step_begin(self, args, state, control, **kwargs):
        advance_node(self.root)


def tokens(n: int, seed: int) -> Dataset:
    ids = torch.randint(0, VOCAB, (n, 16), generator=torch.Generator().manual_seed(seed))
    return Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})


def main() -> None:
    out = Path(sys.argv[1])
    budget_kwh = float(sys.argv[2]) if len(sys.argv) > 2 else None
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    root = node_root(out)
    if local_rank == 0:
        make_node_tree(out)
        (out / "node-ready").touch()
    while not (out / "node-ready").exists():  # before any process group exists
        time.sleep(0.01)
    wattwise.sources.rapl.DEFAULT_ROOT = str(root)
    energy = EnergyCallback(**callback_options(budget_kwh))
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=32, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0)
    )
    args = TrainingArguments(
        output_dir=str(out / "hf"), max_steps=MAX_STEPS, per_device_train_batch_size=4, logging_steps=2,
        eval_strategy="steps", eval_steps=6, per_device_eval_batch_size=8,
        save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, ddp_backend="gloo",
    )
    callbacks = [energy] + ([NodeCounter(root)] if local_rank == 0 else [])
    trainer = Trainer(model=model, args=args, train_dataset=tokens(64, 0), eval_dataset=tokens(16, 1),
                      callbacks=callbacks)
    trainer.train()
    (out / f"rank{rank}.json").write_text(json.dumps({
        "report": energy.report.to_dict(), "log_history": trainer.state.log_history,
        "global_step": trainer.state.global_step, "world_size": trainer.args.world_size,
    }))


if __name__ == "__main__":
    main()
