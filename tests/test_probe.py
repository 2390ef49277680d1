"""``wattwise.probe`` for any loop: the projection arithmetic, failing candidates, what is left as it was,
the files, and the advisor's measured recommendation.

Every test runs on the ``steady`` fixture's fake clock with constant power: a candidate's step lasts
what the test says (``SECONDS_PER_STEP``), so every figure is exact whatever the machine's speed.
"""

from __future__ import annotations

import json
import random

import pytest
import torch
from fakes import PROBE_WATTS, FakeClock

import wattwise
import wattwise.probing
import wattwise.sources
from wattwise.advisor import Evidence, ProbeEvidence, TrainingSetup, advise
from wattwise.carbon import resolve_intensity
from wattwise.config import Config
from wattwise.options import Options
from wattwise.probe_result import ProbeResult
from wattwise.records import PhaseEnergy
from wattwise.run import Run

WATTS = PROBE_WATTS
SECONDS_PER_STEP = {8: 0.1, 16: 0.15, 32: 0.25}  # 10, 15 and 25 J a step: 1.25, 0.9375, 0.78125 J a sample
EVAL_BATCH_S = 0.1  # 10 J an evaluation batch of EVAL_BATCH samples
EVAL_BATCH = 16


def options(tmp_path, **extra) -> Options:
    return Options(carbon_intensity_g_per_kwh=100.0, output_dir=str(tmp_path), **extra)


def stepper(clock: FakeClock, *, fail_batch: int | None = None):
    def run_steps(config, run):
        for step in range(run.planned_steps):
            if config["batch_size"] == fail_batch and step == 3:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            clock.now += SECONDS_PER_STEP[config["batch_size"]]
            run.step(samples=config["batch_size"])
        return 1.5

    return run_steps


def test_fixed_epochs_favour_the_larger_batch_and_fixed_steps_the_smaller(steady, tmp_path):
    grid = {"batch_size": [8, 16, 32]}
    epochs = wattwise.probe(stepper(steady), grid, steps=20, planned_samples=3200, options=options(tmp_path))
    by_batch = {c.config["batch_size"]: c for c in epochs.candidates}
    assert [by_batch[b].planned_steps for b in (8, 16, 32)] == [400, 200, 100]  # samples / samples per step
    assert [by_batch[b].projected_energy_j for b in (8, 16, 32)] == pytest.approx([4000.0, 3000.0, 2500.0])
    assert by_batch[8].projected_duration_s == pytest.approx(40.0)
    assert by_batch[8].energy_per_sample_j == pytest.approx(1.25)
    assert by_batch[32].duration_per_sample_s == pytest.approx(0.25 / 32)
    assert by_batch[8].projected_emissions_kg == pytest.approx(4000.0 / 3.6e6 * 0.1)
    assert epochs.best.config == {"batch_size": 32}

    steps = wattwise.probe(stepper(steady), grid, steps=20, planned_steps=200, options=options(tmp_path))
    assert [c.planned_steps for c in steps.candidates] == [200, 200, 200]
    assert [c.projected_energy_j for c in steps.candidates] == pytest.approx([2000.0, 3000.0, 5000.0])
    assert steps.best.config == {"batch_size": 8}
    for c in steps.candidates:
        assert c.projected_energy_low_j <= c.projected_energy_j <= c.projected_energy_high_j
        assert c.projected_energy_high_j > c.projected_energy_low_j  # the forecaster's floor: never a point
        assert c.loss == 1.5 and c.steps == 20 and c.samples == 20 * c.config["batch_size"]


def test_planned_steps_may_depend_on_the_configuration_and_evaluation_passes_are_projected(steady, tmp_path):
    def run_eval(config, run):
        for _ in range(10):
            steady.now += EVAL_BATCH_S
            run.step(samples=EVAL_BATCH)

    result = wattwise.probe(stepper(steady), {"batch_size": [8, 16]}, steps=20,
                            planned_steps=lambda config: 1600 // config["batch_size"], run_eval=run_eval,
                            eval_passes=3, eval_samples=40 * EVAL_BATCH, options=options(tmp_path))
    eight, sixteen = result.candidates
    assert (eight.planned_steps, sixteen.planned_steps) == (200, 100)
    assert eight.eval_passes == 3 and eight.eval_pass_energy_j == pytest.approx(400.0)  # 40 batches x 10 J
    assert eight.projected_energy_j == pytest.approx(200 * 10.0 + 3 * 400.0)
    assert sixteen.projected_energy_j == pytest.approx(100 * 15.0 + 3 * 400.0)
    assert eight.projected_duration_s == pytest.approx(200 * 0.1 + 3 * 40 * EVAL_BATCH_S)


def test_a_failing_candidate_is_reported_and_the_others_run(steady, tmp_path):
    result = wattwise.probe(stepper(steady, fail_batch=16), {"batch_size": [8, 16, 32]}, steps=20,
                            planned_samples=3200, options=options(tmp_path))
    failed = result.candidates[1]
    assert failed.error.startswith("OutOfMemoryError: CUDA out of memory")
    assert failed.projected_energy_j is None and not failed.ran
    assert [c.ran for c in result.candidates] == [True, False, True]
    assert result.best.config == {"batch_size": 32}
    assert result.ranked()[-1] is failed
    table = str(result)
    assert "failed: OutOfMemoryError" in table
    assert table.index("batch_size=32") < table.index("batch_size=8") < table.index("batch_size=16")
    assert not wattwise.endings.in_progress()  # no candidate run left open


def test_not_enough_windows_is_said_rather_than_guessed(steady, tmp_path):
    def fast(config, run):
        for _ in range(run.planned_steps):
            steady.now += 0.001  # 4 steps make less than one 0.05 s window
            run.step(samples=8)

    result = wattwise.probe(fast, {"batch_size": [8]}, steps=4, planned_steps=100, options=options(tmp_path))
    only = result.candidates[0]
    assert only.ran and only.projected_energy_j is None and "probe more steps" in only.note
    assert result.best is None


def test_a_candidate_still_getting_cheaper_at_its_last_step_is_said_rather_than_projected(steady, tmp_path):
    def settling(config, run):  # flat for 10 steps, then cheaper every step (a cache filling, say)
        for step in range(run.planned_steps):
            steady.now += 0.3 if step < 10 else 0.3 - 0.1 * (step - 10) / 30
            run.step(samples=8)

    result = wattwise.probe(settling, {"batch_size": [8]}, steps=40, planned_steps=1000, options=options(tmp_path))
    only = result.candidates[0]
    assert only.ran and only.projected_energy_j is None and "probe more steps" in only.note


def test_a_few_spikes_early_in_a_candidate_are_noise_not_a_warm_up(steady, tmp_path):
    """Four steps at 6x the cost in the earlier half (another process taking the CPU for a moment, as
    `make demo` met on a busy machine) leave the halves' medians alike: the candidate is projected at
    its level, not "probe more steps" (the halves' means are 2x apart)."""
    def spiky(config, run):
        for step in range(run.planned_steps):
            steady.now += 0.6 if step in (3, 5, 6, 9) else 0.1
            run.step(samples=8)

    result = wattwise.probe(spiky, {"batch_size": [8]}, steps=40, planned_steps=1000, options=options(tmp_path))
    only = result.candidates[0]
    assert only.note is None and only.energy_per_step_j == pytest.approx(0.1 * WATTS, rel=1e-6)
    measured_j = (36 * 0.1 + 4 * 0.6) * WATTS
    assert only.projected_energy_j == pytest.approx(measured_j + 960 * 0.1 * WATTS, rel=1e-3)


def test_random_state_and_model_are_left_as_they_were_and_each_candidate_starts_alike(steady, tmp_path):
    torch.manual_seed(3)
    random.seed(3)
    model = torch.nn.Linear(4, 2)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    torch_state, python_state = torch.get_rng_state(), random.getstate()
    draws = []

    def run_steps(config, run):
        draws.append((torch.rand(1).item(), random.random()))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
        model.train()
        model.forward = lambda x: x  # what accelerate does for mixed precision, say
        for _ in range(run.planned_steps):
            torch.nn.Linear.forward(model, torch.randn(3, 4)).sum().backward()
            optimizer.step()
            steady.now += 0.1
            run.step(samples=3)

    wattwise.probe(run_steps, {"batch_size": [8, 16]}, steps=10, planned_steps=50, model=model,
                   options=options(tmp_path))
    assert draws[0] == draws[1]  # the same random state for every candidate
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert "forward" not in vars(model) and not model.training
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch_state, torch.get_rng_state()) and python_state == random.getstate()


def test_files_and_the_result_read_back(steady, tmp_path):
    result = wattwise.probe(stepper(steady), {"batch_size": [8, 32]}, steps=20, planned_samples=3200,
                            options=options(tmp_path))
    assert result.output_dir == str(tmp_path / "wattwise")
    assert (tmp_path / "wattwise" / "probe.png").stat().st_size > 0
    data = json.loads((tmp_path / "wattwise" / "probe.json").read_text())
    assert data == json.loads(json.dumps(result.to_dict()))
    assert data["best"] == 1 and "a few steps" in data["loss_caution"]
    again = ProbeResult.from_dict(data)
    assert again.best.config == {"batch_size": 32} and again.best.projected_energy_j == pytest.approx(2500.0)
    # the probe's own energy: every joule between its start and end (two candidates x 20 steps)
    assert result.probe_energy_j == pytest.approx(WATTS * 20 * (0.1 + 0.25))
    assert result.probe_share_of_best == pytest.approx(result.probe_energy_j / 2500.0)
    assert sum(c.probe_energy_j for c in result.candidates) == pytest.approx(result.probe_energy_j)
    second = wattwise.probe(stepper(steady), {"batch_size": [8]}, steps=20, planned_samples=3200,
                            options=options(tmp_path))
    assert (tmp_path / "wattwise" / "probe-2.json").exists() and second.output_dir == result.output_dir


def test_bad_arguments_raise_before_anything_runs(steady, tmp_path):
    with pytest.raises(ValueError, match="planned_steps= .* or planned_samples="):
        wattwise.probe(stepper(steady), {"batch_size": [8]}, steps=20)
    with pytest.raises(ValueError, match="candidates"):
        wattwise.probe(stepper(steady), {"batch_size": 8}, steps=20, planned_steps=10)
    with pytest.raises(ValueError, match="steps must be"):
        wattwise.probe(stepper(steady), {"batch_size": [8]}, steps=0, planned_steps=10)


# ---- the advisor's measured recommendation --------------------------------------------------------


def _train(clock: FakeClock, tmp_path, model, batch_size: int, steps: int = 100, **settings):
    """A tracked run of ``model`` at ``batch_size`` on the fake clock, as the probe measured it."""
    run = Run.from_config(Config.from_kwargs(carbon_intensity_g_per_kwh=100.0, output_dir=str(tmp_path / "run"),
                                             print_summary=False, **settings), "loop", clock=clock)
    run.start(planned_steps=steps)
    run.set_work(model=model)
    run.evidence.describe(framework="loop", batch_size=batch_size, precision="fp32")
    for _ in range(steps):
        clock.now += SECONDS_PER_STEP.get(batch_size, 0.2)
        run.step(samples=batch_size)
    return run.finish()


def test_the_advisor_recommends_the_probed_best_with_the_measured_saving(steady, tmp_path):
    model = torch.nn.Linear(4, 2)
    result = wattwise.probe(stepper(steady), {"batch_size": [8, 16, 32]}, steps=20, planned_samples=3200,
                            model=model, options=options(tmp_path))
    assert result.model == {"class": "Linear", "params": 10}
    report = _train(steady, tmp_path, model, batch_size=8)
    [advice] = [r for r in report.recommendations if r.rule == "probed_configuration"]
    assert advice.saving_j == pytest.approx(report.energy_j * (1 - 2500.0 / 4000.0))
    assert advice.confidence == "high" and "batch_size=32" in advice.title
    assert "probes" in advice.evidence and "1.25 J/sample" in advice.evidence
    assert advice.change == {"any": "batch_size=32"}

    assert not [r for r in _train(steady, tmp_path, model, 32).recommendations if r.rule == "probed_configuration"]
    other = torch.nn.Linear(4, 3)  # another model: not this probe's
    assert not [r for r in _train(steady, tmp_path, other, 8).recommendations if r.rule == "probed_configuration"]


def test_a_loop_that_does_not_say_its_batch_size_is_told_how_to(steady, tmp_path):
    """A probe of the model exists, but a ``wattwise.track()`` loop that never said its batch size or
    precision cannot be compared with it: the report says so and how, rather than staying silent."""
    model = torch.nn.Linear(4, 2)
    wattwise.probe(stepper(steady), {"batch_size": [8, 32]}, steps=20, planned_samples=3200, model=model,
                   options=options(tmp_path))
    run = Run.from_config(Config.from_kwargs(carbon_intensity_g_per_kwh=100.0, output_dir=str(tmp_path / "run"),
                                             print_summary=False), "loop", clock=steady)
    run.start(planned_steps=100)
    run.set_work(model=model)
    for _ in range(100):
        steady.now += SECONDS_PER_STEP[8]
        run.step(samples=8)
    report = run.finish()
    assert not [r for r in report.recommendations if r.rule == "probed_configuration"]
    [said] = [n for n in report.notes if "was not compared with this run" in n]
    assert "probes" in said and "run.evidence.describe(batch_size=" in said
    assert not [n for n in _train(steady, tmp_path, model, batch_size=8).notes if "not compared" in n]


def test_a_run_whose_configuration_was_not_probed_is_compared_per_sample(steady, tmp_path):
    model = torch.nn.Linear(4, 2)
    wattwise.probe(stepper(steady), {"batch_size": [8, 32]}, steps=20, planned_samples=3200, model=model,
                   options=options(tmp_path))
    report = _train(steady, tmp_path, model, batch_size=12)  # 0.2 s a step at 100 W: 20 J for 12 samples
    [advice] = [r for r in report.recommendations if r.rule == "probed_configuration"]
    samples = 100 * 12
    assert advice.confidence == "medium"
    assert advice.saving_j == pytest.approx((report.by_phase["train"].energy_j / samples - 0.78125) * samples)


def test_a_probe_passed_to_the_run_is_used_without_a_registry(steady, tmp_path):
    model = torch.nn.Linear(4, 2)
    result = wattwise.probe(stepper(steady), {"batch_size": [8, 16, 32]}, steps=20, planned_samples=3200,
                            model=model, options=options(tmp_path, registry=False))
    path = tmp_path / "wattwise" / "probe.json"
    for given in (result, str(path)):  # the result itself, or its probe.json
        report = _train(steady, tmp_path, model, batch_size=8, registry=False, probe=given)
        [advice] = [r for r in report.recommendations if r.rule == "probed_configuration"]
        assert advice.saving_j == pytest.approx(report.energy_j * (1 - 2500.0 / 4000.0))
    assert str(path) in advice.evidence  # cites the file it was given

    other = torch.nn.Linear(4, 3)  # a probe of another model is not used, and the report says why
    report = _train(steady, tmp_path, other, batch_size=8, registry=False, probe=result)
    assert not [r for r in report.recommendations if r.rule == "probed_configuration"]
    assert any("10 parameters, this run's has 15" in note for note in report.notes)


def test_a_bad_probe_argument_names_it(tmp_path):
    with pytest.raises(ValueError, match="probe="):
        Options(probe=str(tmp_path / "missing.json"))
    (tmp_path / "other.json").write_text('{"run_id": "x"}')
    with pytest.raises(ValueError, match="not a probe.json"):
        wattwise.track(probe=tmp_path / "other.json")
    with pytest.raises(ValueError, match="probe must be a ProbeResult"):
        Options(probe=3)


def test_the_rule_reads_only_evidence():
    probe = ProbeEvidence(path="/x/probes/p.json", created_at="2026-01-01T00:00:00+00:00", steps=40, candidates=[
        {"config": {"per_device_train_batch_size": 8}, "setup": {"batch_size": 8, "precision": "fp32"},
         "energy_per_sample_j": 2.0, "projected_energy_j": 2000.0},
        {"config": {"per_device_train_batch_size": 32, "bf16": True}, "setup": {"batch_size": 32, "precision": "bf16"},
         "energy_per_sample_j": 1.0, "projected_energy_j": 1000.0},
        {"config": {"per_device_train_batch_size": 64}, "setup": {"batch_size": 64, "precision": "fp32"},
         "error": "OutOfMemoryError: CUDA out of memory"},
    ])
    evidence = Evidence(energy_j=3000.0, duration_s=60.0, grid=resolve_intensity(country_iso_code="FRA"),
                        phases={"train": PhaseEnergy("train", energy_j=2800.0, duration_s=50.0, steps=10)},
                        components={}, setup=TrainingSetup(framework="transformers", batch_size=8, precision="fp32"),
                        probe=probe)
    [advice] = [r for r in advise(evidence) if r.rule == "probed_configuration"]
    assert advice.saving_j == pytest.approx(1500.0) and advice.saving_pct == pytest.approx(50.0)
    assert advice.change == {"transformers": "TrainingArguments(per_device_train_batch_size=32, bf16=True)"}
    assert "/x/probes/p.json" in advice.evidence
    evidence.setup = TrainingSetup(framework="transformers", batch_size=32, precision="bf16")
    assert not [r for r in advise(evidence) if r.rule == "probed_configuration"]
    evidence.probe = None
    assert not [r for r in advise(evidence) if r.rule == "probed_configuration"]
