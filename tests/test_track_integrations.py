"""``wattwise.track`` with the tools people train with: an ``accelerate.Accelerator`` logging to
TensorBoard, torchrun on two CPU processes (gloo), and ``EnergyCallback`` configured by LightningCLI."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import wattwise
from wattwise.registry import Registry

torch = pytest.importorskip("torch")


# ---- accelerate + TensorBoard ----------------------------------------------------------------------


def test_track_metrics_reach_tensorboard_through_accelerate(tmp_path):
    pytest.importorskip("accelerate")
    pytest.importorskip("tensorboard")
    from accelerate import Accelerator
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accelerator = Accelerator(cpu=True, log_with="tensorboard", project_dir=str(tmp_path))
    accelerator.init_trackers("wattwise-test")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    model, optimizer = accelerator.prepare(model, optimizer)
    steps, logged = 30, []
    with wattwise.track(country_iso_code="FRA", planned_steps=steps, output_dir=tmp_path / "energy",
                        print_summary=False, sources=("cpu",)) as run:
        for i in range(steps):
            x, y = torch.randn(8, 8), torch.randn(8, 1)
            loss = torch.nn.functional.mse_loss(model(x), y)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            run.step(samples=8)
            if i % 5 == 0:
                metrics = run.metrics()
                logged.append(metrics)
                accelerator.log(metrics, step=i)
    accelerator.end_training()

    assert run.report.train_steps == steps and not run.report.partial
    assert all({"energy/total_kwh", "energy/power_w", "energy/step_j", "carbon/total_kg"} <= set(m) for m in logged)
    assert (run.output_dir / "report.json").is_file() and run.output_dir == tmp_path / "energy" / "wattwise"

    event_files = list(tmp_path.rglob("events.out.tfevents.*"))
    assert event_files, list(tmp_path.rglob("*"))
    events = EventAccumulator(str(event_files[0].parent))
    events.Reload()
    tags = events.Tags()["scalars"]
    for tag in ("energy/total_kwh", "energy/power_w"):
        assert tag in tags, tags
        points = events.Scalars(tag)
        assert [p.step for p in points] == [0, 5, 10, 15, 20, 25]
        assert [p.value for p in points] == pytest.approx([m[tag] for m in logged], rel=1e-6, abs=1e-12)
    totals = [p.value for p in events.Scalars("energy/total_kwh")]
    assert totals == sorted(totals)  # energy since the start never goes down


# ---- torchrun, two CPU processes -------------------------------------------------------------------


def test_track_under_torchrun_sums_the_ranks_and_writes_one_report(tmp_path, private_registry):
    from test_distributed import torchrun  # tests/ is on sys.path

    steps = 20
    rank0, rank1 = torchrun(tmp_path, "track_worker.py", str(steps))
    a, b = rank0["report"], rank1["report"]
    assert a["run_id"] == b["run_id"]
    assert a["energy_j"] == pytest.approx(b["energy_j"], rel=1e-9)
    assert len(a["ranks"]) == 2 and [r["rank"] for r in a["ranks"]] == [0, 1]
    assert a["energy_j"] == pytest.approx(sum(r["energy_j"] for r in a["ranks"]), rel=1e-6)
    # each rank's own CPU estimate, kept apart by rank; its size is not asserted: it moves in 10 ms ticks of
    # CPU time, which a run this short crosses or not depending on the machine's speed (even 0 J is right)
    assert set(a["by_component"]) == {"cpu (rank 0)", "cpu (rank 1)"}
    assert all(c["source"] == "cpu-time x TDP" and c["energy_j"] >= 0 for c in a["by_component"].values())
    assert a["train_steps"] == b["train_steps"] == steps  # the ranks' steps are one run's steps, not added
    assert rank0["is_main_process"] and not rank1["is_main_process"]
    assert [m["step"] for m in rank0["metrics"]] == [5, 10, 15, 20]

    reports = sorted(tmp_path.rglob("report.json"))
    assert reports == [tmp_path / "wattwise" / "report.json"], reports
    assert json.loads(reports[0].read_text())["run_id"] == a["run_id"]
    assert sorted(p.name for p in (tmp_path / "wattwise").iterdir()) == [
        "emissions.csv", "report.json", "report.png", "steps.csv"]
    [record] = Registry(private_registry).runs()  # rank 0 alone records the run
    assert record.run_id == a["run_id"] and record.output_dir == str(tmp_path / "wattwise")


# ---- LightningCLI ----------------------------------------------------------------------------------

CALLBACK = "wattwise.integrations.lightning.EnergyCallback"


@pytest.fixture(autouse=True)
def plain_argv(monkeypatch):
    """LightningCLI parses ``args=``, not pytest's own command line (and warns when both are there)."""
    monkeypatch.setattr(sys, "argv", ["lightning-cli-test"])


def lightning_cli(args: list[str]):
    pytest.importorskip("lightning")
    pytest.importorskip("jsonargparse")
    from lightning.pytorch.cli import LightningCLI
    from lightning.pytorch.demos.boring_classes import BoringDataModule, BoringModel

    return LightningCLI(BoringModel, BoringDataModule, args=args, save_config_kwargs={"overwrite": True})


def energy_callback(cli):
    from wattwise.integrations.lightning import EnergyCallback

    [callback] = [c for c in cli.trainer.callbacks if isinstance(c, EnergyCallback)]
    return callback


def trainer_args(tmp_path: Path) -> list[str]:
    return ["--trainer.max_steps=4", "--trainer.logger=false", "--trainer.enable_checkpointing=false",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
            "--trainer.limit_val_batches=0", f"--trainer.default_root_dir={tmp_path}"]


def test_lightning_cli_sets_up_energy_callback_from_the_command_line(tmp_path):
    cli = lightning_cli(["fit", *trainer_args(tmp_path),
                         f"--trainer.callbacks+={CALLBACK}",
                         "--trainer.callbacks.init_args.country_iso_code=FRA",
                         "--trainer.callbacks.init_args.print_summary=false",
                         f"--trainer.callbacks.init_args.output_dir={tmp_path / 'energy'}"])
    callback = energy_callback(cli)
    assert callback.config.country_iso_code == "FRA" and callback.config.print_summary is False
    assert callback.report is not None and callback.report.train_steps == 4 and not callback.report.partial
    assert (tmp_path / "energy" / "wattwise" / "report.json").is_file()


def test_lightning_cli_sets_up_energy_callback_from_a_yaml_config(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(
        "trainer:\n"
        "  callbacks:\n"
        f"    - class_path: {CALLBACK}\n"
        "      init_args:\n"
        "        country_iso_code: FRA\n"
        "        print_summary: false\n"
        "        sources: [cpu]\n"
        "        window_s: 0.5\n"
    )
    cli = lightning_cli(["fit", f"--config={config}", *trainer_args(tmp_path)])
    callback = energy_callback(cli)
    assert callback.config.country_iso_code == "FRA" and callback.config.window_s == 0.5
    assert tuple(callback.config.sources) == ("cpu",)
    assert callback.report.train_steps == 4
    # no output_dir and no logger: the trainer's default_root_dir
    assert (tmp_path / "wattwise" / "report.json").is_file()
    assert json.loads((tmp_path / "wattwise" / "report.json").read_text())["run_id"] == callback.report.run_id


def test_lightning_cli_rejects_a_bad_callback_option_before_training(tmp_path):
    with pytest.raises(ValueError, match="window_s must be a finite number > 0, got -1.0"):
        lightning_cli(["fit", *trainer_args(tmp_path), f"--trainer.callbacks+={CALLBACK}",
                       "--trainer.callbacks.init_args.country_iso_code=FRA",
                       "--trainer.callbacks.init_args.window_s=-1"])
    assert not (tmp_path / "wattwise").exists()
