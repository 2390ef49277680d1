"""Train a tiny GPT-2 with the Hugging Face Trainer on the CPU, offline, and track its energy.

Run:  python examples/hf_train.py [--output-dir runs/hf] [--max-steps 60]

The model is built from a config (no download) and trained on synthetic token sequences; the run
evaluates every 50 steps, logs energy metrics every 25 steps (console and TensorBoard when the
tensorboard package is installed) and ends with wattwise's summary and files under
<output-dir>/wattwise/.
"""

from __future__ import annotations

import argparse
import importlib.util
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments  # noqa: E402

from wattwise.integrations.transformers import EnergyCallback  # noqa: E402


def synthetic_tokens(n: int, length: int, vocab: int, seed: int) -> Dataset:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, length), generator=generator)
    return Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", default="runs/hf")
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--country", default="FRA", help="ISO3 country code for the carbon intensity")
    cli = parser.parse_args()

    vocab = 128
    config = GPT2Config(vocab_size=vocab, n_positions=64, n_embd=128, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config)
    args = TrainingArguments(
        output_dir=cli.output_dir,
        max_steps=cli.max_steps,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        logging_steps=25,
        eval_strategy="steps",
        eval_steps=50,
        save_strategy="no",
        report_to=["tensorboard"] if importlib.util.find_spec("tensorboard") else [],
        use_cpu=True,
        disable_tqdm=True,
    )
    energy = EnergyCallback(country_iso_code=cli.country)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=synthetic_tokens(1024, 64, vocab, seed=0),
        eval_dataset=synthetic_tokens(128, 64, vocab, seed=1),
        callbacks=[energy],
    )
    trainer.train()
    report = energy.report
    print(f"\ntrain {report.by_phase['train'].energy_j:.1f} J, eval {report.by_phase['eval'].energy_j:.1f} J; "
          f"files in {os.path.join(cli.output_dir, 'wattwise')}")


if __name__ == "__main__":
    main()
