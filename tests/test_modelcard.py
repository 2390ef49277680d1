"""The Hub's co2_eq_emissions model-card metadata, and the evidence each integration gathers, through
real training runs."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
from huggingface_hub.repocard import metadata_load
from test_keras import energy as keras_energy
from test_keras import fit, tiny_model
from test_lightning import energy as lightning_energy
from test_lightning import loader, make_trainer, tiny_module
from test_transformers import energy, run

from wattwise.modelcard import co2_eq_emissions, write_co2_eq_emissions


def test_hf_training_writes_co2_eq_emissions_where_the_trainer_writes_its_card(tmp_path):
    callback = energy()
    trainer = run(tmp_path, callback, eval_strategy="steps", eval_steps=4)
    report = callback.report
    card = tmp_path / "out" / "README.md"
    co2 = metadata_load(card)["co2_eq_emissions"]
    assert co2["emissions"] == pytest.approx(report.emissions_kg * 1000.0, rel=1e-6)  # grams
    assert co2["training_type"] == "pre-training"  # a GPT-2 built from a config
    assert co2["geographical_location"] == "France"
    assert co2["hardware_used"].startswith("1 x ") and co2["hardware_used"].endswith("(CPU)")
    assert "estimated: cpu, ram" in co2["source"]

    trainer.create_model_card(model_name="tiny")  # transformers rewrites README.md from its TrainingSummary
    metadata = metadata_load(card)
    assert "generated_from_trainer" in metadata["tags"]  # the Trainer's card ...
    assert metadata["co2_eq_emissions"] == co2  # ... with our metadata put back


def test_hf_evidence_setup_and_metric_history(tmp_path):
    callback = energy()
    run(tmp_path, callback, eval_strategy="steps", eval_steps=4, dataloader_num_workers=0)
    evidence = callback.runs.run.evidence
    assert evidence.setup.framework == "transformers"
    assert (evidence.setup.device, evidence.setup.precision) == ("cpu", "fp32")
    assert (evidence.setup.batch_size, evidence.setup.grad_accumulation_steps) == (4, 1)
    assert (evidence.setup.num_workers, evidence.setup.eval_every_steps) == (0, 4)
    assert evidence.metric_name == "eval_loss" and not evidence.greater_is_better
    assert [p.step for p in evidence.history] == [4, 8, 12]
    energies = [p.energy_j for p in evidence.history]
    assert energies == sorted(energies) and energies[-1] <= callback.report.energy_j


def test_an_existing_card_keeps_its_other_metadata_and_body(tmp_path, steady_source):
    from test_render import tracked_run

    report = tracked_run(tmp_path, steady_source)
    card = tmp_path / "README.md"
    card.write_text("---\nlicense: mit\ntags:\n- mine\n---\n\n# My model\n\nText.\n")
    write_co2_eq_emissions(card, report, training_type="fine-tuning")
    metadata = metadata_load(card)
    assert metadata["license"] == "mit" and metadata["tags"] == ["mine"]
    assert metadata["co2_eq_emissions"] == co2_eq_emissions(report, training_type="fine-tuning")
    assert card.read_text().endswith("# My model\n\nText.\n")
    assert co2_eq_emissions(report, training_type="fine-tuning")["hardware_used"] == "1 x gpu:0"
    with pytest.raises(ValueError, match="training_type"):
        co2_eq_emissions(report, training_type="training")


def test_lightning_evidence_setup_and_metric_history(tmp_path):
    callback = lightning_energy()
    trainer = make_trainer(pl, tmp_path, [callback], max_steps=12, val_check_interval=4, num_sanity_val_steps=2)
    trainer.fit(tiny_module(pl), loader(64, batch_size=8), loader(16, seed=1))
    evidence = callback.runs.run.evidence
    assert (evidence.setup.framework, evidence.setup.device, evidence.setup.precision) == ("lightning", "cpu", "fp32")
    assert (evidence.setup.batch_size, evidence.setup.num_workers, evidence.setup.pin_memory) == (8, 0, False)
    assert evidence.metric_name == "val_loss"
    assert [p.step for p in evidence.history] == [4, 8, 12]  # the sanity check is not an evaluation


def test_keras_evidence_setup_and_metric_history(tmp_path):
    callback = keras_energy(tmp_path, print_summary=False)
    fit(tiny_model(), [callback], n=40, epochs=3)
    evidence = callback.runs.run.evidence
    assert (evidence.setup.framework, evidence.setup.precision, evidence.setup.batch_size) == ("keras", "fp32", 8)
    assert evidence.metric_name == "val_loss"
    assert [p.step for p in evidence.history] == [4, 8, 12]  # 30 training samples: 4 batches an epoch
