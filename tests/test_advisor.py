"""The advisor's rules, fed evidence directly: each fires on its evidence, with a saving computed by
hand from the inputs, and stays silent without it."""

from __future__ import annotations

import dataclasses

import pytest

from wattwise import advisor
from wattwise.advisor import Evidence, GpuUsage, MetricPoint, Recommendation, TrainingSetup, advise
from wattwise.carbon import J_PER_KWH, resolve_intensity
from wattwise.report import ComponentEnergy, PhaseEnergy, RunReport

GB = 2**30
CLEAN_GRID = resolve_intensity(carbon_intensity_g_per_kwh=3.0)  # too clean for the region rule to fire


def gpu(util=90.0, used_gb=60.0, total_gb=80.0, limit_w=700.0, cc=(9, 0)) -> GpuUsage:
    return GpuUsage("gpu:0", "NVIDIA H100", samples=50, utilization_pct=util, memory_used_bytes=used_gb * GB,
                    memory_total_bytes=total_gb * GB, power_limit_w=limit_w, min_power_limit_w=100.0,
                    compute_capability=cc)


def component(name: str, energy_j: float, kind: str | None = None) -> ComponentEnergy:
    return ComponentEnergy(name, kind or name.split(":")[0], energy_j, measured=True, source="test", scope="device")


def evidence(*, train_j=1000.0, train_s=100.0, eval_j=0.0, passes=0, components=None, **overrides) -> Evidence:
    """A run that gives no rule a reason to fire: bf16 on a busy, well-filled GPU, clean grid."""
    phases = {"train": PhaseEnergy("train", energy_j=train_j, duration_s=train_s, steps=100)}
    if eval_j or passes:
        phases["eval"] = PhaseEnergy("eval", energy_j=eval_j, duration_s=10.0, steps=10, passes=passes)
    energy_j = train_j + eval_j
    settings = dict(
        energy_j=energy_j, duration_s=train_s, phases=phases, grid=CLEAN_GRID,
        components=components if components is not None else {"gpu:0": component("gpu:0", 0.3 * energy_j),
                                                                "cpu": component("cpu", 0.7 * energy_j)},
        setup=TrainingSetup(framework="transformers", device="cuda", precision="bf16", batch_size=16,
                            grad_accumulation_steps=1, num_workers=4, pin_memory=True, torch_threads=8,
                            physical_cores=8),
        gpus=[gpu()],
    )
    settings.update(overrides)
    return Evidence(**settings)


def setup(**changes) -> TrainingSetup:
    return dataclasses.replace(evidence().setup, **changes)


def only(ev: Evidence, rule: str) -> Recommendation:
    found = [r for r in advise(ev) if r.rule == rule]
    assert len(found) == 1, [r.rule for r in advise(ev)]
    return found[0]


def assert_saving(rec: Recommendation, ev: Evidence, saving_j: float) -> None:
    assert rec.saving_j == pytest.approx(saving_j)
    assert rec.saving_kg == pytest.approx(saving_j / J_PER_KWH * ev.grid.g_per_kwh / 1000.0)
    assert rec.saving_pct == pytest.approx(100.0 * saving_j / ev.energy_j)
    assert rec.confidence in advisor.CONFIDENCES
    assert rec.source and rec.method and rec.evidence


def test_a_run_without_evidence_gets_no_recommendation():
    assert advise(evidence()) == []


# ---- mixed precision -----------------------------------------------------------------------------


def test_mixed_precision_fires_for_fp32_on_tensor_cores():
    ev = evidence(setup=setup(precision="fp32"), gpus=[gpu(util=80.0, cc=(8, 0))])
    rec = only(ev, "mixed_precision")
    assert_saving(rec, ev, 1000.0 * 0.8 * (1 - 1 / 1.5))  # busy time 1.5x faster
    assert rec.change == {
        "transformers": "TrainingArguments(bf16=True)",
        "lightning": 'Trainer(precision="bf16-mixed")',
        "keras": 'keras.mixed_precision.set_global_policy("mixed_bfloat16")',
    }


def test_mixed_precision_suggests_fp16_before_ampere():
    rec = only(evidence(setup=setup(precision="fp32"), gpus=[gpu(cc=(7, 0))]), "mixed_precision")
    assert rec.change["transformers"] == "TrainingArguments(fp16=True)"


@pytest.mark.parametrize(
    "overrides",
    [
        {"setup": setup(precision="bf16")},  # already mixed
        {"setup": setup(precision=None)},  # unknown
        {"setup": setup(precision="fp32"), "gpus": [gpu(cc=(6, 1))]},  # no tensor cores
        {"setup": setup(precision="fp32"), "gpus": [gpu(cc=None)]},  # unknown GPU generation
        {"setup": setup(precision="fp32", device="cpu"), "gpus": []},  # CPU training
    ],
)
def test_mixed_precision_is_silent_without_evidence(overrides):
    assert "mixed_precision" not in [r.rule for r in advise(evidence(**overrides))]


# ---- batch size ----------------------------------------------------------------------------------


def test_batch_size_fires_on_an_underused_gpu_with_memory_to_spare():
    ev = evidence(gpus=[gpu(util=40.0, used_gb=16.0)])  # 20% of memory: 0.9/0.2 = 4.5 -> 4x
    rec = only(ev, "batch_size")
    assert_saving(rec, ev, 1000.0 * 0.6 * (1 - 1 / 4))
    assert rec.change["transformers"] == "TrainingArguments(per_device_train_batch_size=64)"
    assert rec.confidence == "low"  # a larger effective batch changes the optimisation


def test_batch_size_keeps_the_effective_batch_by_lowering_accumulation():
    ev = evidence(gpus=[gpu(util=50.0, used_gb=24.0)], setup=setup(batch_size=16, grad_accumulation_steps=8))
    rec = only(ev, "batch_size")  # 30% of memory: 0.9/0.3 = 3 -> 2x
    assert_saving(rec, ev, 1000.0 * 0.5 * (1 - 1 / 2))
    assert rec.change["transformers"] == (
        "TrainingArguments(per_device_train_batch_size=32, gradient_accumulation_steps=4)"
    )
    assert rec.change["lightning"] == "DataLoader(batch_size=32) and Trainer(accumulate_grad_batches=4)"
    assert rec.confidence == "medium"


@pytest.mark.parametrize("gpus", [[gpu(util=70.0, used_gb=8.0)], [gpu(util=30.0, used_gb=40.0)], []])
def test_batch_size_is_silent_on_a_busy_or_full_gpu(gpus):
    assert "batch_size" not in [r.rule for r in advise(evidence(gpus=gpus))]


# ---- data loading --------------------------------------------------------------------------------


def test_data_loading_fires_when_the_gpu_idles_and_loading_is_serial():
    ev = evidence(gpus=[gpu(util=40.0)], setup=setup(num_workers=0, pin_memory=False, physical_cores=2))
    rec = only(ev, "data_loading")
    assert_saving(rec, ev, 1000.0 * 0.6 * 0.5)  # half of the idle time
    assert "num_workers=0 and pin_memory=False" in rec.evidence
    assert rec.change["transformers"] == "TrainingArguments(dataloader_num_workers=2, dataloader_pin_memory=True)"


@pytest.mark.parametrize(
    "overrides",
    [
        {"gpus": [gpu(util=40.0)]},  # workers and pinned memory already
        {"gpus": [gpu(util=40.0)], "setup": setup(num_workers=None, pin_memory=None)},  # not known
        {"gpus": [gpu(util=85.0)], "setup": setup(num_workers=0)},  # the GPU is not waiting
    ],
)
def test_data_loading_is_silent_without_evidence(overrides):
    assert "data_loading" not in [r.rule for r in advise(evidence(**overrides))]


# ---- evaluation share ----------------------------------------------------------------------------


def test_evaluation_share_fires_when_evaluation_costs_much():
    ev = evidence(eval_j=300.0, passes=3, setup=setup(eval_every_steps=50))  # 300 of 1300 J: 23%
    rec = only(ev, "evaluation_share")
    assert_saving(rec, ev, 150.0)
    assert rec.change["transformers"] == "TrainingArguments(eval_steps=100)"


@pytest.mark.parametrize(("eval_j", "passes"), [(100.0, 4), (300.0, 1)])
def test_evaluation_share_is_silent_for_cheap_or_single_evaluations(eval_j, passes):
    assert "evaluation_share" not in [r.rule for r in advise(evidence(eval_j=eval_j, passes=passes))]


# ---- early stopping ------------------------------------------------------------------------------


def history(values: list[float]) -> list[MetricPoint]:
    return [MetricPoint(step=10 * (i + 1), value=v, energy_j=100.0 * (i + 1)) for i, v in enumerate(values)]


def test_early_stopping_fires_when_the_metric_stopped_improving():
    ev = evidence(train_j=800.0, metric_name="eval_loss", metric_history=history([3.0, 2.0, 1.5, 1.6, 1.7, 1.8, 1.9]))
    rec = only(ev, "early_stopping")
    # best at evaluation 3 (300 J so far); patience 2 stops at evaluation 5 (500 J): 800 - 500 saved
    assert_saving(rec, ev, 800.0 - 500.0)
    assert "500 J spent after it" in rec.evidence  # 800 - 300
    assert 'metric_for_best_model="eval_loss"' in rec.change["transformers"]


def test_early_stopping_reads_the_metric_direction():
    values = [0.5, 0.6, 0.7, 0.65, 0.6, 0.6, 0.6]  # an accuracy: best at evaluation 3
    ev = evidence(train_j=800.0, metric_name="eval_accuracy", greater_is_better=True, metric_history=history(values))
    assert_saving(only(ev, "early_stopping"), ev, 800.0 - 500.0)
    as_loss = dataclasses.replace(ev, greater_is_better=False)  # read as a loss, it last improved at evaluation 1
    assert_saving(only(as_loss, "early_stopping"), as_loss, 800.0 - 300.0)


@pytest.mark.parametrize("values", [[3.0, 2.0, 1.5, 1.2, 1.1], [3.0, 2.0, 2.1, 2.2], [2.0, 2.1, 2.2]])
def test_early_stopping_is_silent_while_improving_or_with_too_little_history(values):
    ev = evidence(train_j=800.0, metric_name="eval_loss", metric_history=history(values))
    assert "early_stopping" not in [r.rule for r in advise(ev)]


# ---- power limit ---------------------------------------------------------------------------------


def test_power_limit_fires_when_gpus_draw_most_of_their_limit():
    components = {"gpu:0": component("gpu:0", 2000.0), "cpu": component("cpu", 1000.0)}
    ev = evidence(train_j=3000.0, train_s=10.0, components=components, gpus=[gpu(util=70.0, limit_w=250.0)])
    rec = only(ev, "power_limit")  # 200 W on average against 250 W: a 150 W cap binds
    assert_saving(rec, ev, 2000.0 * 0.137 - 1000.0 * 0.068)
    assert rec.change == {"any": "sudo nvidia-smi -i 0 -pl 150   (reset: -pl 250)"}
    assert rec.confidence == "medium"


@pytest.mark.parametrize("limit_w", [400.0, None])  # 200 W is under a 240 W cap; no limit known
def test_power_limit_is_silent_when_the_cap_would_not_bind(limit_w):
    components = {"gpu:0": component("gpu:0", 2000.0), "cpu": component("cpu", 1000.0)}
    ev = evidence(train_j=3000.0, train_s=10.0, components=components, gpus=[gpu(limit_w=limit_w)])
    assert "power_limit" not in [r.rule for r in advise(ev)]


# ---- region --------------------------------------------------------------------------------------


def test_lower_carbon_region_fires_from_codecarbons_cloud_table():
    france = resolve_intensity(country_iso_code="FRA")
    ev = evidence(grid=france)
    rec = only(ev, "lower_carbon_region")
    best = advisor.lowest_intensity_cloud_region(None)
    kg = france.kg_for_j(ev.energy_j)
    assert rec.saving_j == 0.0
    assert rec.saving_kg == pytest.approx(kg * (1 - best.g_per_kwh / france.g_per_kwh))
    assert rec.saving_pct == pytest.approx(100 * (1 - best.g_per_kwh / france.g_per_kwh))
    assert best.region in rec.title and best.region in rec.change["any"]


def test_lower_carbon_region_stays_with_the_runs_cloud_provider():
    grid = resolve_intensity(cloud_provider="gcp", cloud_region="asia-south1")
    rec = only(evidence(grid=grid), "lower_carbon_region")
    assert rec.change["any"].startswith(f"rent gcp {advisor.lowest_intensity_cloud_region('gcp').region}")


@pytest.mark.parametrize("grid", [resolve_intensity(), CLEAN_GRID])  # unknown location; already clean
def test_lower_carbon_region_is_silent_without_a_cleaner_option(grid):
    assert "lower_carbon_region" not in [r.rule for r in advise(evidence(grid=grid))]


# ---- CPU threads ---------------------------------------------------------------------------------


def test_cpu_threads_fires_when_cores_sit_idle():
    components = {"cpu": component("cpu", 600.0), "ram": component("ram", 400.0)}
    ev = evidence(components=components, gpus=[], setup=setup(device="cpu", torch_threads=2, physical_cores=8))
    rec = only(ev, "cpu_threads")
    assert_saving(rec, ev, 400.0 * (1 - 2 / 8))  # only the time-bound RAM energy shrinks
    assert rec.change == {"any": "torch.set_num_threads(8) before training (or OMP_NUM_THREADS=8)"}


@pytest.mark.parametrize(
    "overrides",
    [
        {"setup": setup(device="cpu", torch_threads=8, physical_cores=8), "gpus": []},
        {"setup": setup(device="cpu", torch_threads=None, physical_cores=8), "gpus": []},
        {"setup": setup(device="cuda", torch_threads=2, physical_cores=8)},  # GPU training
    ],
)
def test_cpu_threads_is_silent_without_evidence(overrides):
    assert "cpu_threads" not in [r.rule for r in advise(evidence(**overrides))]


# ---- ranking and the report ----------------------------------------------------------------------


def test_recommendations_are_ranked_by_co2e_saved():
    ev = evidence(
        grid=resolve_intensity(country_iso_code="FRA"), setup=setup(precision="fp32", num_workers=0),
        gpus=[gpu(util=40.0, used_gb=16.0)], eval_j=300.0, passes=3,
    )
    found = advise(ev)
    assert {r.rule for r in found} >= {"mixed_precision", "batch_size", "data_loading", "evaluation_share",
                                       "lower_carbon_region"}
    savings = [r.saving_kg for r in found]
    assert savings == sorted(savings, reverse=True)


def report_with(recommendations: list[Recommendation]) -> RunReport:
    return RunReport(
        run_id="r", framework="transformers", project_name="p", started_at="2026-01-01T00:00:00+00:00",
        duration_s=10.0, energy_j=1000.0, emissions_kg=1e-5, train_steps=10, planned_steps=10,
        by_component={"cpu": component("cpu", 1000.0)}, by_phase={"train": PhaseEnergy("train", 1000.0, 10.0, 10)},
        carbon={"g_per_kwh": 56.0, "pue": 1.0, "location": "France"}, recommendations=recommendations,
    )


def test_recommendations_round_trip_through_the_report_and_old_reports_still_load():
    found = advise(evidence(setup=setup(precision="fp32"), gpus=[gpu(util=40.0, used_gb=16.0, cc=(8, 0))]))
    assert found
    report = report_with(found)
    again = RunReport.from_dict(report.to_dict())
    assert again == report
    assert isinstance(again.recommendations[0], Recommendation)
    old = report.to_dict()
    del old["recommendations"]  # a report.json written before recommendations existed
    assert RunReport.from_dict(old).recommendations == []


def test_change_for_picks_the_runs_framework():
    rec = only(evidence(setup=setup(precision="fp32")), "mixed_precision")
    assert rec.change_for("lightning") == 'Trainer(precision="bf16-mixed")'
    assert rec.change_for("jax-loop").startswith("transformers: ")  # unknown: all of them
