"""Run: windows, phases, bounded memory, files, partial reports (what every integration drives)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap

import pytest
from fakes import FakeClock

from wattwise.advisor import Recommendation
from wattwise.budget import Budget
from wattwise.carbon import resolve_intensity
from wattwise.config import Config
from wattwise.figures import SAMPLE_J
from wattwise.forecast import Forecast
from wattwise.meter import EnergyMeter
from wattwise.render import plain_summary
from wattwise.report import RunReport, emissions_csv_columns
from wattwise.run import CARBON_KG, POWER_W, STEP_J, TOTAL_KWH, UNMEASURED_EVAL_NOTE, Run
from wattwise.windows import TIMELINE_POINTS


class CountingSource:
    """Constant power on a fake clock; counts how often it is read."""

    def __init__(self, clock: FakeClock, watts: dict[str, float], steady_source) -> None:
        self._inner = steady_source(watts, clock)
        self.components = self._inner.components
        self.reads = 0

    def read_j(self):
        self.reads += 1
        return self._inner.read_j()

    def close(self):
        pass


def make_session(tmp_path, clock, sources, **options) -> Run:
    options.setdefault("carbon_intensity_g_per_kwh", 100.0)
    options.setdefault("print_summary", False)
    session = Run.from_config(Config.from_kwargs(**options), framework="test", clock=clock)
    session.start(output_dir=tmp_path, planned_steps=None, meter=EnergyMeter(sources, clock=clock))
    return session


def test_counters_are_read_per_window_not_per_step(tmp_path, steady_source):
    clock = FakeClock()
    source = CountingSource(clock, {"gpu:0": 100.0}, steady_source)
    session = make_session(tmp_path, clock, [source], window_s=0.5)
    reads_at_start = source.reads
    for _ in range(1000):  # 1000 steps of 10 ms = 10 s = 20 windows
        clock.now += 0.01
        session.step()
    windows = source.reads - reads_at_start
    assert 19 <= windows <= 21
    report = session.finish()
    assert report.train_steps == 1000
    assert report.energy_j == pytest.approx(100.0 * 10.0)


def test_a_step_between_readings_makes_one_python_call_below_run_step(tmp_path, steady_source):
    """The per-step path is a budget: a Python call costs 1-3 us between two training steps, where
    the caches are cold (docs/overhead.md), so a step that reads nothing calls ``Ledger.step`` and
    nothing else written in Python; and ``should_stop``/``active``, read at every step, are plain
    attributes, not properties."""
    clock = FakeClock()
    session = make_session(tmp_path, clock, [steady_source({"gpu:0": 100.0}, clock)], window_s=0.5)
    calls: list[str] = []

    def count(frame, event, arg):
        if event == "call":  # (file, function): co_qualname is Python 3.11+
            calls.append((frame.f_code.co_filename.rsplit("/", 1)[-1], frame.f_code.co_name))

    clock.now += 0.01  # well before the window is due
    sys.setprofile(count)
    try:
        due = session.step(32, 256.0)
        stop, active = session.should_stop, session.active
    finally:
        sys.setprofile(None)
    assert (due, stop, active) == (False, False, True)
    # Run.step, Ledger.step and the test's clock (the real one, time.monotonic, is written in C)
    assert calls == [("run.py", "step"), ("ledger.py", "step"), ("fakes.py", "__call__")]


def test_samples_are_counted_with_their_window_so_sample_j_divides_like_by_like(tmp_path, steady_source):
    clock = FakeClock()
    session = make_session(tmp_path, clock, [steady_source({"gpu:0": 100.0}, clock)], window_s=1.0)
    for _ in range(10):  # 1 s, 10 steps of 4 samples: the window closes at the 10th
        clock.now += 0.1
        session.step(samples=4)
    for _ in range(5):  # half a window more: counted, not yet read
        clock.now += 0.1
        session.step(samples=4)
    assert session.ledger.phases["train"].samples == 40
    metrics = session.metrics(read=False)  # the figures of the last reading: 100 J over 40 samples
    assert metrics[SAMPLE_J] == pytest.approx(100.0 / 40)
    assert session.metrics()[SAMPLE_J] == pytest.approx(50.0 / 20)  # read now: the open half window
    assert session.finish().by_phase["train"].samples == 60


def test_window_energy_sums_to_total_and_is_split_by_phase(tmp_path, steady_source):
    clock = FakeClock()
    session = make_session(tmp_path, clock, [steady_source({"gpu:0": 200.0, "cpu": 50.0}, clock)], window_s=0.5)
    for _ in range(100):
        clock.now += 0.02
        session.step()
    session.begin("eval")
    for _ in range(10):
        clock.now += 0.1
        session.step()
    eval_j = session.end("eval")
    for _ in range(50):
        clock.now += 0.02
        session.step()
    report = session.finish()

    assert eval_j == pytest.approx(250.0 * 1.0)
    assert report.by_phase["eval"].energy_j == pytest.approx(250.0)
    assert report.by_phase["eval"].passes == 1
    assert report.by_phase["eval"].steps == 10
    assert report.by_phase["train"].energy_j == pytest.approx(250.0 * 3.0)
    assert report.by_phase["train"].steps == 150
    assert report.by_component["gpu:0"].energy_j == pytest.approx(200.0 * 4.0)
    assert report.energy_j == pytest.approx(sum(p.energy_j for p in report.by_phase.values()))

    with open(tmp_path / "wattwise" / "steps.csv") as f:
        rows = list(csv.DictReader(f))
    assert sum(float(r["energy_j"]) for r in rows) == pytest.approx(report.energy_j, rel=1e-3)
    assert sum(int(r["steps"]) for r in rows if r["phase"] == "train") == 150
    assert sum(float(r["gpu:0_j"]) for r in rows) == pytest.approx(800.0, rel=1e-3)
    assert {r["phase"] for r in rows} == {"train", "eval"}


def test_log_metrics_cover_the_interval_since_the_last_log_and_exclude_eval(tmp_path, steady_source):
    clock = FakeClock()
    session = make_session(tmp_path, clock, [steady_source({"gpu:0": 100.0}, clock)], window_s=10.0)
    for _ in range(10):
        clock.now += 0.1
        session.step()
    first = session.metrics()
    assert first[STEP_J] == pytest.approx(10.0)
    assert first[POWER_W] == pytest.approx(100.0)
    session.begin("eval")
    for _ in range(5):  # a long evaluation: not training energy
        clock.now += 1.0
        session.step()
    assert session.end("eval") == pytest.approx(500.0)
    for _ in range(4):
        clock.now += 0.5
        session.step()
    second = session.metrics()
    assert second[STEP_J] == pytest.approx(50.0)
    assert second[POWER_W] == pytest.approx(100.0)
    assert second[TOTAL_KWH] == pytest.approx(100.0 * 8.0 / 3.6e6)
    assert second[CARBON_KG] == pytest.approx(second[TOTAL_KWH] * 100.0 / 1000.0)


def test_memory_is_bounded_however_long_the_run(tmp_path, steady_source):
    clock = FakeClock()
    session = make_session(tmp_path, clock, [steady_source({"gpu:0": 10.0}, clock)], window_s=0.5, write_files=False)
    for _ in range(20_000):  # 20 000 windows
        clock.now += 0.5
        session.step()
    assert len(session.ledger.timeline) < TIMELINE_POINTS
    report = session.finish()
    assert len(report.timeline) <= TIMELINE_POINTS
    assert sum(float(p["gpu:0"]) for p in report.timeline) == pytest.approx(report.energy_j)
    assert sum(float(p["duration_s"]) for p in report.timeline) == pytest.approx(report.duration_s)
    starts = [float(p["t_s"]) for p in report.timeline]
    assert starts == sorted(starts)


def test_time_without_steps_belongs_to_the_step_before_it(tmp_path, steady_source):
    clock = FakeClock()
    session = make_session(tmp_path, clock, [steady_source({"gpu:0": 10.0}, clock)], window_s=100.0)
    clock.now += 2.0  # set-up before the first step: joins the first step's window
    for _ in range(2):
        clock.now += 1.0
        session.step()
    session.metrics()
    clock.now += 3.0  # logging and evaluation set-up: the second step's
    session.begin("eval")
    for _ in range(4):
        clock.now += 0.5
        session.step()
    session.end("eval")
    clock.now += 1.0  # after the last evaluation until the end: the last eval batch's
    report = session.finish()
    assert report.by_phase["train"].energy_j == pytest.approx(70.0)
    assert report.by_phase["eval"].energy_j == pytest.approx(30.0)
    with open(tmp_path / "wattwise" / "steps.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["phase"], int(r["steps"]), float(r["energy_j"])) for r in rows] == [
        ("train", 2, pytest.approx(70.0)),
        ("eval", 4, pytest.approx(30.0)),
    ]


def test_set_up_before_the_first_step_goes_to_the_first_step_whatever_its_phase(tmp_path, steady_source):
    clock = FakeClock()
    session = make_session(tmp_path, clock, [steady_source({"gpu:0": 10.0}, clock)], window_s=100.0)
    clock.now += 2.0  # set-up, then a sanity-check validation before any training step
    session.begin("eval")
    for _ in range(2):
        clock.now += 1.0
        session.step()
    session.end("eval")
    session.plan(5)
    for _ in range(5):
        clock.now += 1.0
        session.step()
    report = session.finish()
    assert report.planned_steps == 5
    assert report.by_phase["eval"].energy_j == pytest.approx(40.0)
    assert report.by_phase["eval"].duration_s == pytest.approx(4.0)
    assert report.by_phase["train"].energy_j == pytest.approx(50.0)
    with open(tmp_path / "wattwise" / "steps.csv") as f:
        rows = [(r["phase"], int(r["steps"])) for r in csv.DictReader(f)]
    assert rows == [("eval", 2), ("train", 5)]


def test_a_session_can_start_in_another_phase(tmp_path, steady_source):
    clock = FakeClock()
    session = Run.from_config(Config.from_kwargs(print_summary=False, carbon_intensity_g_per_kwh=1.0), "test", clock=clock)
    session.start(output_dir=tmp_path, phase="test", meter=EnergyMeter([steady_source({"cpu": 1.0}, clock)], clock=clock))
    for _ in range(3):
        clock.now += 1.0
        session.step()
    assert session.end("test") == pytest.approx(3.0)
    report = session.finish()
    assert report.by_phase["test"].steps == 3 and list(report.by_phase) == ["test"]


def test_a_source_that_breaks_mid_run_is_dropped_and_noted(tmp_path, steady_source):
    clock = FakeClock()

    class Flaky:
        def __init__(self):
            self.inner = steady_source({"gpu:0": 100.0}, clock)
            self.components = self.inner.components
            self.reads = 0

        def read_j(self):
            self.reads += 1
            if self.reads > 3:
                raise OSError("device fell off the bus")
            return self.inner.read_j()

        def close(self):
            pass

    session = make_session(tmp_path, clock, [Flaky(), steady_source({"cpu": 10.0}, clock)], window_s=0.5)
    for _ in range(100):
        clock.now += 0.1
        session.step()
    report = session.finish()
    assert report.by_component["cpu"].energy_j == pytest.approx(100.0)
    assert 0 < report.by_component["gpu:0"].energy_j <= 100.0 * 1.5  # kept up to the last good read
    assert any("device fell off the bus" in note for note in report.notes)


def test_report_json_round_trips_and_emissions_csv_has_codecarbon_columns(tmp_path, steady_source):
    clock = FakeClock()
    session = make_session(tmp_path, clock, [steady_source({"gpu:0": 360.0}, clock)], pue=1.5)
    for _ in range(10):
        clock.now += 1.0
        session.step()
    report = session.finish()
    data = json.loads((tmp_path / "wattwise" / "report.json").read_text())
    assert RunReport.from_dict(data) == report
    assert data["energy_kwh"] == pytest.approx(0.001)
    assert report.emissions_kg == pytest.approx(0.001 * 1.5 * 100.0 / 1000.0)
    with open(tmp_path / "wattwise" / "emissions.csv") as f:
        reader = csv.DictReader(f)
        row = next(reader)
    assert reader.fieldnames == emissions_csv_columns()
    assert float(row["energy_consumed"]) == pytest.approx(0.0015)
    assert float(row["gpu_energy"]) == pytest.approx(0.0015)
    assert float(row["emissions"]) == pytest.approx(report.emissions_kg)
    assert float(row["pue"]) == 1.5


def test_finish_is_idempotent_and_files_only_on_the_main_process(tmp_path, steady_source):
    clock = FakeClock()
    session = Run.from_config(Config.from_kwargs(print_summary=False, carbon_intensity_g_per_kwh=1.0), "test", clock=clock)
    session.start(output_dir=tmp_path, is_main_process=False,
                  meter=EnergyMeter([steady_source({"cpu": 1.0}, clock)], clock=clock))
    clock.now += 1
    session.step()
    first = session.finish()
    assert session.finish() is first
    assert not (tmp_path / "wattwise").exists()


def test_no_location_warns_once_with_the_world_average(tmp_path, steady_source, caplog):
    clock = FakeClock()
    session = Run.from_config(Config.from_kwargs(print_summary=False), "test", clock=clock)
    with caplog.at_level("WARNING", logger="wattwise"):
        session.start(output_dir=tmp_path, meter=EnergyMeter([steady_source({"cpu": 1.0}, clock)], clock=clock))
        session.finish()
    warnings = [r for r in caplog.records if "world average" in r.getMessage()]
    assert len(warnings) == 1
    assert session.report.carbon["is_default"] is True
    assert session.report.carbon["g_per_kwh"] == 475.0


def test_interrupted_run_leaves_a_partial_report(tmp_path):
    script = textwrap.dedent(
        f"""
        from wattwise.config import Config
        from wattwise.run import Run
        s = Run.from_config(Config.from_kwargs(sources=("cpu", "ram"), country_iso_code="DEU"), "test")
        s.start(output_dir={str(tmp_path)!r})
        for _ in range(5):
            s.step()
        raise KeyboardInterrupt
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    data = json.loads((tmp_path / "wattwise" / "report.json").read_text())
    assert data["partial"] is True
    assert data["train_steps"] == 5
    assert "PARTIAL" in result.stderr


def test_import_wattwise_is_cheap():
    code = (
        "import sys, wattwise, wattwise.run, wattwise.sources;"
        "heavy = [m for m in ('torch', 'transformers', 'lightning', 'pytorch_lightning', 'keras', 'codecarbon', 'pandas')"
        " if m in sys.modules]; print(heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "[]", result.stderr


def test_unknown_phase_is_rejected(tmp_path, steady_source):
    clock = FakeClock()
    session = make_session(tmp_path, clock, [steady_source({"cpu": 1.0}, clock)], write_files=False)
    with pytest.raises(ValueError, match="phase"):
        session.begin("warmup")


def test_forecasts_are_logged_and_scored_against_the_measured_total(tmp_path, steady_source):
    clock = FakeClock()
    session = make_session(tmp_path, clock, [steady_source({"gpu:0": 100.0}, clock)], window_s=0.5)
    session.plan(1000)
    metrics = {}
    for step in range(1, 1001):
        clock.now += 0.1
        session.step()
        if step == 200:
            metrics = session.metrics()
    report = session.finish()
    assert metrics["energy/forecast_kwh"] == pytest.approx(100.0 * 100.0 / 3.6e6, rel=0.01)
    assert metrics["energy/forecast_low_kwh"] <= metrics["energy/forecast_kwh"] <= metrics["energy/forecast_high_kwh"]
    assert metrics["carbon/forecast_kg"] == pytest.approx(metrics["energy/forecast_kwh"] * 0.1)
    assert [f["fraction"] for f in report.forecasts] == [0.01, 0.02, 0.05, 0.10, 0.25, 0.50]
    scored = [f for f in report.forecasts if f["energy_j"] is not None]
    # windows of 5 steps; a forecast needs 5 (start-up + 4 steady): none at 1% (step 10) nor at 2%
    # (step 20); the 2% milestone is filled at step 25, before 5%; the 1% one stays empty
    assert [f["fraction"] for f in scored] == [0.02, 0.05, 0.10, 0.25, 0.50]
    assert scored[0]["at_step"] == 25
    assert all(f["fraction"] * 1000 <= f["at_step"] < f["fraction"] * 1000 + 10 for f in scored[1:])
    assert all(abs(f["error_pct"]) < 1.0 for f in scored)
    assert RunReport.from_dict(report.to_dict()) == report


def test_forecasts_made_before_the_first_scheduled_evaluation_say_they_leave_it_out(tmp_path, steady_source):
    clock = FakeClock()
    session = make_session(tmp_path, clock, [steady_source({"gpu:0": 100.0}, clock)], window_s=0.5)
    session.plan(1000, eval_every_steps=500)
    for step in range(1, 1001):
        clock.now += 0.1
        session.step()
        if step % 500 == 0:
            session.begin("eval")
            clock.now += 5.0
            session.end("eval")
    report = session.finish()
    by_fraction = {f["fraction"]: f for f in report.forecasts}
    # before step 500 no pass has run: both passes are left out, and the forecasts say so
    assert by_fraction[0.25]["eval_passes_unmeasured"] == 2
    assert by_fraction[0.25]["error_pct"] == pytest.approx(-100.0 * 1000.0 / 11_000.0, abs=1.0)
    assert UNMEASURED_EVAL_NOTE in report.notes
    # the 50% milestone is taken at the step, before that step's pass; later forecasts price the passes
    assert by_fraction[0.5]["eval_passes_unmeasured"] == 2
    assert RunReport.from_dict(report.to_dict()) == report


def test_two_named_intervals_are_measured_independently(tmp_path, steady_source):
    clock = FakeClock()
    session = make_session(tmp_path, clock, [steady_source({"gpu:0": 10.0}, clock)], window_s=0.5)
    closed = []
    for _ in range(10):  # an "epoch" of 10 steps of 0.2 s, with batch-level refreshes
        clock.now += 0.2
        if session.step():
            closed.append(session.metrics("batch", read=False))
    epoch = session.metrics("epoch")
    assert 3 <= len(closed) <= 4  # one window per 0.5 s, and step() says when it closed one
    assert closed[0]["energy/step_j"] == pytest.approx(2.0)
    assert epoch["energy/step_j"] == pytest.approx(2.0)
    assert epoch["energy/power_w"] == pytest.approx(10.0)
    assert epoch["energy/total_kwh"] == pytest.approx(20.0 / 3.6e6)


def test_once_the_plan_is_done_the_forecast_is_the_measured_total(tmp_path, steady_source):
    clock = FakeClock()
    session = make_session(tmp_path, clock, [steady_source({"gpu:0": 50.0}, clock)], window_s=0.5)
    session.plan(100)
    for _ in range(100):
        clock.now += 0.1
        session.step()
    session.begin("eval")  # a final evaluation after the last step
    for _ in range(5):
        clock.now += 0.1
        session.step()
    session.end("eval")
    metrics = session.metrics()
    assert metrics["energy/forecast_kwh"] == pytest.approx(metrics["energy/total_kwh"], rel=1e-9)
    assert metrics["energy/forecast_low_kwh"] == pytest.approx(metrics["energy/forecast_high_kwh"], rel=1e-9)


@pytest.mark.parametrize("on_budget", ["warn", "stop"])
def test_an_energy_budget_warns_from_the_forecast_and_acts_on_the_measure(tmp_path, steady_source, on_budget):
    clock = FakeClock()
    # 100 W for 1000 steps of 0.1 s is 10 kJ; the budget is 5 kJ
    session = make_session(tmp_path, clock, [steady_source({"gpu:0": 100.0}, clock)], window_s=0.5,
                           budget_kwh=5000.0 / 3.6e6, on_budget=on_budget)
    session.plan(1000)
    stopped_at = None
    for step in range(1, 1001):
        clock.now += 0.1
        session.step()
        if step % 50 == 0:
            session.metrics()
        if session.should_stop and stopped_at is None:
            stopped_at = step
    report = session.finish()
    warning = next(n for n in report.notes if n.startswith("forecast over budget"))
    assert "covers about 500 of the 1000 planned steps" in warning
    assert report.budget["forecast_over"] is True and report.budget["exceeded"] is True
    if on_budget == "stop":
        assert 500 <= stopped_at <= 510  # at the first window after the budget is spent
        assert report.budget["stopped_at_step"] == stopped_at
        assert "STOPPED by the budget" in plain_summary(report)
    else:
        assert stopped_at is None and report.budget["stopped_at_step"] is None
        exceeded = next(n for n in report.notes if n.startswith("budget exceeded at training step "))
        assert 500 <= int(exceeded.split()[5].rstrip(":")) <= 510


def test_a_forecast_budget_warning_names_a_recommendation_whose_saving_would_fit_it():
    """The advice is asked for only when the warning fires; the first (highest-ranked) change whose
    estimated saving brings the forecast's low end within every budget is named, in the framework's
    terms; a carbon-only change (another grid) cannot fit an energy budget."""
    grid = resolve_intensity(carbon_intensity_g_per_kwh=100.0)
    forecast = Forecast(at_step=100, planned_steps=1000, energy_j=10_000.0, energy_low_j=9_000.0,
                        energy_high_j=11_000.0, duration_s=100.0, duration_low_s=90.0, duration_high_s=110.0,
                        warmup_steps=0, eval_passes_expected=0)

    def rec(rule: str, saving_pct: float, energy: bool = True) -> Recommendation:
        return Recommendation(rule=rule, title=rule, change={"transformers": f"TrainingArguments({rule}=True)"},
                              evidence="e", saving_j=1.0 if energy else 0.0, saving_kg=1.0, saving_pct=saving_pct,
                              method="m", confidence="medium", source="s")

    region, small, big = rec("region", 90.0, energy=False), rec("small", 5.0), rec("big", 20.0)
    asked = []

    def advice():
        asked.append(1)
        return [region, small, big]

    roomy = Budget(kwh=9_500.0 / 3.6e6, kg_co2e=None, on_budget="warn", grid=grid)
    assert roomy.check_forecast(forecast, 1_000.0, advice=advice) is None and asked == []
    energy_budget = Budget(kwh=8_000.0 / 3.6e6, kg_co2e=None, on_budget="warn", grid=grid)  # 9000 x 0.8 fits
    warning = energy_budget.check_forecast(forecast, 1_000.0, advice=advice, framework="transformers")
    assert "would fit it by its estimate (20% saved, medium confidence): TrainingArguments(big=True)" in warning
    assert asked == [1]
    carbon_budget = Budget(kwh=None, kg_co2e=grid.kg_for_j(9_000.0) * 0.5, on_budget="warn", grid=grid)
    warning = carbon_budget.check_forecast(forecast, 1_000.0, advice=advice, framework="transformers")
    assert "TrainingArguments(region=True)" in warning  # 90% less carbon fits a carbon budget
    tight = Budget(kwh=1_000.0 / 3.6e6, kg_co2e=None, on_budget="warn", grid=grid)
    assert "would fit" not in tight.check_forecast(forecast, 1_000.0, advice=advice)


def test_a_carbon_budget_uses_the_grid_intensity(tmp_path, steady_source):
    clock = FakeClock()
    # 100 g/kWh: 1 g CO2e is 36 kJ, i.e. 360 s at 100 W
    session = make_session(tmp_path, clock, [steady_source({"gpu:0": 100.0}, clock)], window_s=0.5,
                           budget_kg_co2e=0.001, on_budget="stop")
    steps = 0
    while not session.should_stop and steps < 10_000:
        clock.now += 1.0
        session.step()
        steps += 1
    assert 360 <= steps <= 362
    assert not any(n.startswith("forecast") for n in session.notes)  # no plan, no forecast warning
