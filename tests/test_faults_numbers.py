"""Faults that used to give wrong numbers: a RAPL counter that resets, the clock going back, psutil
refusing this process's own figures, two runs in progress in one process. Each now gives an honest
(or honestly labelled) figure and says what happened, once."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
import threading
import time
from unittest.mock import create_autospec

import psutil
import pytest
from fakes import MAX_RANGE_UJ, FakeClock, PowercapTree, advance_rapl

import wattwise
from wattwise.config import Config
from wattwise.meter import EnergyMeter
from wattwise.plot import write_png
from wattwise.run import Run
from wattwise.sources.model import CpuTimeSource, RamShareSource
from wattwise.sources.rapl import RaplSource


def make_run(tmp_path, clock, sources, *, planned_steps=None, **options) -> Run:
    options.setdefault("carbon_intensity_g_per_kwh", 100.0)
    options.setdefault("print_summary", False)
    run = Run.from_config(Config.from_kwargs(**options), framework="test", planned_steps=planned_steps, clock=clock)
    return run.start(output_dir=tmp_path, meter=EnergyMeter(sources, clock=clock))


def steps_rows(path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        header, *rows = list(csv.reader(f))
    return header, rows


# ---- a RAPL counter that resets -----------------------------------------------------------------


def package(tmp_path, energy_j: float, max_power_w: float | None = None) -> PowercapTree:
    """One package zone; with ``max_power_w``, its constraints as the driver lists them (the
    long-term one with its maximum, the short-term one whose maximum reads 0 on many machines)."""
    tree = PowercapTree(tmp_path)
    directory = tree.zone("intel-rapl:0", "package-0", energy_uj=round(energy_j * 1e6))
    if max_power_w is not None:
        for i, (name, window_us, max_uw) in enumerate([("long_term", 27_983_872, round(max_power_w * 1e6)),
                                                       ("short_term", 2_440, 0)]):
            (directory / f"constraint_{i}_name").write_text(name + "\n")
            (directory / f"constraint_{i}_power_limit_uw").write_text(f"{round(max_power_w * 1e6)}\n")
            (directory / f"constraint_{i}_time_window_us").write_text(f"{window_us}\n")
            (directory / f"constraint_{i}_max_power_uw").write_text(f"{max_uw}\n")
    return tree


def test_a_rapl_counter_reset_counts_what_it_shows_since_and_says_so_once(tmp_path):
    tree = package(tmp_path, energy_j=370.0)
    clock = FakeClock()
    source = RaplSource.open(tree.root, clock=clock)
    clock.now += 2.0
    tree.add("intel-rapl:0", 50_000_000)
    assert source.read_j() == pytest.approx((50.0,))
    clock.now += 2.0
    tree.set("intel-rapl:0", 27_000_000)  # reset (driver reload, resume): it starts again from 0
    assert source.read_j() == pytest.approx((77.0,))  # not a wrap: 262,143 - 420 + 27 J
    clock.now += 2.0
    tree.add("intel-rapl:0", 10_000_000)
    assert source.read_j() == pytest.approx((87.0,))
    clock.now += 2.0
    tree.set("intel-rapl:0", 5_000_000)  # and once more
    assert source.read_j() == pytest.approx((92.0,))
    problems = source.problems()
    assert len(problems) == 1
    assert "intel-rapl:0" in problems[0] and "package-0" in problems[0]
    assert "reset" in problems[0] and "2 times" in problems[0]


@pytest.mark.parametrize(
    ("start_below_top_j", "now_j", "max_power_w", "counted_j"),
    [
        (100.0, 50.0, 125.0, 150.0),  # a wrap at 150 W: a wrap
        (600.0, 100.0, None, 700.0),  # 700 W: possible for a package that states no maximum
        (600.0, 100.0, 125.0, 100.0),  # 700 W: far above the 125 W this zone states: a reset
    ],
)
def test_a_wrap_is_told_from_a_reset_by_the_power_it_implies(tmp_path, start_below_top_j, now_j, max_power_w,
                                                            counted_j):
    tree = package(tmp_path, energy_j=MAX_RANGE_UJ / 1e6 - start_below_top_j, max_power_w=max_power_w)
    clock = FakeClock()
    source = RaplSource.open(tree.root, clock=clock)
    clock.now += 1.0
    tree.set("intel-rapl:0", round(now_j * 1e6))
    assert source.read_j() == pytest.approx((counted_j,))
    assert bool(source.problems()) == (counted_j == now_j)


def test_a_run_across_a_rapl_reset_reports_the_energy_supplied(tmp_path):
    """The source times its reads with the real clock: a few millijoules a step are possible at any
    speed, a wrap of 262 kJ in less than a minute is not."""
    tree = PowercapTree(tmp_path / "sys")
    tree.zone("intel-rapl:0", "package-0", energy_uj=370_000_000)
    tree.zone("intel-rapl:0:0", "dram", energy_uj=20_000_000, max_range_uj=65_712_999_613)
    clock = FakeClock()
    run = make_run(tmp_path, clock, [RaplSource.open(tree.root)], window_s=0.5)
    supplied_j, reset = 0.0, False
    for i in range(40):
        clock.now += 0.1
        advance_rapl(tree.root, "intel-rapl:0", 0.002)
        advance_rapl(tree.root, "intel-rapl:0:0", 0.0005)
        supplied_j += 0.0025
        if run.step() and i >= 20 and not reset:  # just read: the driver reloads, the counter restarts
            tree.set("intel-rapl:0", 0)
            reset = True
    report = run.finish()
    assert reset
    assert report.energy_j == pytest.approx(supplied_j)  # not 262 kJ more
    assert report.by_component["cpu:0"].energy_j == pytest.approx(0.08)
    resets = [n for n in report.notes if "intel-rapl:0 " in n and "reset" in n]
    assert len(resets) == 1, report.notes


# ---- the clock going back -----------------------------------------------------------------------


def test_the_clock_going_back_makes_no_negative_window_duration_or_energy(tmp_path):
    tree = PowercapTree(tmp_path / "sys")
    tree.zone("intel-rapl:0", "package-0", energy_uj=5_000_000)
    clock = FakeClock(5000.0)
    sources = [RaplSource.open(tree.root), RamShareSource(10.0, "test", clock=clock)]
    run = make_run(tmp_path, clock, sources, window_s=0.5, planned_steps=200)
    for i in range(100):
        clock.now += 0.1
        if i == 50:
            clock.now -= 1000.0  # a suspended VM, a faulty clock source
        advance_rapl(tree.root, "intel-rapl:0", 5.0)
        run.step()
    report = run.finish()

    assert 9.0 <= report.duration_s <= 10.0  # the window over the jump counts 0 s, the others theirs
    assert report.by_component["cpu:0"].energy_j == pytest.approx(500.0)  # every joule kept
    assert 0.0 <= report.by_component["ram"].energy_j <= 10.0 * 10.0
    assert report.energy_j >= 500.0
    for phase in report.by_phase.values():
        assert phase.duration_s >= 0 and phase.energy_j >= 0
    for point in report.timeline:
        assert point["t_s"] >= 0 and point["duration_s"] >= 0
        assert point["cpu:0"] >= 0 and point["ram"] >= 0
    jumps = [n for n in report.notes if "clock went back" in n]
    assert len(jumps) == 1 and re.search(r"by 1000(\.0)? s", jumps[0]), report.notes

    header, rows = steps_rows(run.output_dir / "steps.csv")
    starts = [float(r[header.index("start_s")]) for r in rows]
    assert starts == sorted(starts) and starts[0] >= 0
    for row in rows:
        for column in ("duration_s", "energy_j", "cpu:0_j", "ram_j"):
            assert float(row[header.index(column)]) >= 0, (column, row)

    made = [f for f in report.forecasts if f["energy_j"] is not None]
    assert made and all(math.isfinite(f["energy_j"]) and f["energy_j"] > 0 for f in made)
    assert all(f["energy_low_j"] >= 0 and f["duration_s"] > 0 for f in made)
    write_png(report, tmp_path / "after-the-jump.png")
    assert (tmp_path / "after-the-jump.png").stat().st_size > 0
    assert (run.output_dir / "report.png").stat().st_size > 0


def test_the_meter_never_goes_back_in_time_and_says_so_at_close():
    clock = FakeClock(100.0)
    meter = EnergyMeter([RamShareSource(10.0, "test", clock=clock)], clock=clock)
    first = meter.read()
    clock.now -= 30.0
    second = meter.read()
    clock.now += 2.0
    third = meter.read()
    assert first.timestamp_s <= second.timestamp_s <= third.timestamp_s
    assert third.timestamp_s - second.timestamp_s == pytest.approx(2.0)
    assert first.energy_j[0] <= second.energy_j[0] <= third.energy_j[0]
    meter.close()
    assert len([n for n in meter.notes if "clock went back by 30 s" in n]) == 1, meter.notes


def test_the_ram_estimate_never_integrates_backwards():
    clock = FakeClock(100.0)
    source = RamShareSource(10.0, "test", clock=clock)
    clock.now += 10.0
    before = source.read_j()[0]
    clock.now -= 1000.0
    after_jump = source.read_j()[0]
    clock.now += 10.0
    later = source.read_j()[0]
    assert 0 < before <= after_jump < later
    assert later - after_jump == pytest.approx(before, rel=0.5)  # 10 s, as before the jump
    assert source.problems() == []  # the meter, which reads the same clock, says it once


# ---- psutil refusing this process's own figures --------------------------------------------------


def own_process(refused: set[str], children: list | None = None):
    """This process as psutil would give it (an autospec'd ``psutil.Process`` answering with the real
    figures), refusing with ``AccessDenied`` the methods named in ``refused``, as in a hardened container."""
    real = psutil.Process()
    fake = create_autospec(psutil.Process, instance=True)
    fake.pid = real.pid

    def answer(name):
        def call(*args, **kwargs):
            if name in refused:
                raise psutil.AccessDenied(real.pid, "python")
            if name == "children" and children is not None:
                return list(children)
            return getattr(real, name)(*args, **kwargs)

        return call

    for name in ("cpu_times", "memory_info", "children"):
        getattr(fake, name).side_effect = answer(name)
    return fake


def over(process, make):
    """A source that sees this process as ``process`` (its tree's root) once made."""
    source = make()
    source._tree.root = process
    return source


def burn(cpu_s: float) -> None:
    start = time.process_time()
    while time.process_time() - start < cpu_s:
        pass


def test_psutil_refusing_this_processs_cpu_times_falls_back_to_os_times_and_says_so(monkeypatch):
    refused: set[str] = set()
    source = over(own_process(refused), lambda: CpuTimeSource(10.0, "test CPU"))
    meter = EnergyMeter([source])
    burn(0.1)
    first = meter.read().energy_j[0]
    assert first > 0
    refused.add("cpu_times")
    before = time.process_time()
    burn(0.4)
    spent_s = time.process_time() - before
    second = meter.read().energy_j[0]
    assert second - first == pytest.approx(10.0 * spent_s, abs=10.0 * 0.05)  # not frozen
    burn(0.1)
    assert meter.read().energy_j[0] > second
    meter.close()
    assert len(meter.notes) == 1
    assert "AccessDenied" in meter.notes[0] and "os.times()" in meter.notes[0]
    detail = meter.components[0].detail
    assert detail.startswith("test CPU") and "os.times()" in detail and "AccessDenied" in detail


def test_a_run_whose_cpu_times_are_refused_mid_run_has_a_labelled_figure_and_a_note(tmp_path, monkeypatch):
    refused: set[str] = set()
    clock = FakeClock()
    source = over(own_process(refused), lambda: CpuTimeSource(10.0, "test CPU"))
    run = make_run(tmp_path, clock, [source], window_s=0.5)
    spent_s = 0.0
    for i in range(40):
        if i == 10:
            refused.add("cpu_times")
        clock.now += 0.1
        before = time.process_time()
        burn(0.015)
        spent_s += time.process_time() - before
        run.step()
    report = run.finish()
    assert report.energy_j == pytest.approx(10.0 * spent_s, rel=0.25)
    assert "os.times()" in report.by_component["cpu"].detail
    assert len([n for n in report.notes if "AccessDenied" in n]) == 1
    header, rows = steps_rows(run.output_dir / "steps.csv")
    assert len(rows) >= 6 and all(float(r[header.index("cpu_j")]) > 0 for r in rows)  # never frozen at 0 J


def test_children_refusing_are_skipped_silently(monkeypatch):
    child = create_autospec(psutil.Process, instance=True)
    child.pid = 999_999
    child.cpu_times.side_effect = psutil.AccessDenied(999_999, "worker")
    child.memory_info.side_effect = psutil.AccessDenied(999_999, "worker")
    process = own_process(set(), children=[child])
    cpu = over(process, lambda: CpuTimeSource(10.0, "test CPU"))
    ram = over(process, lambda: RamShareSource(10.0, "test RAM", clock=FakeClock()))
    burn(0.05)
    assert cpu.read_j()[0] > 0 and ram.read_j() == (0.0,)
    assert cpu.problems() == [] and ram.problems() == []
    assert cpu.components[0].detail == "test CPU" and ram.components[0].detail == "test RAM"


def test_when_nothing_can_read_this_processs_cpu_time_the_estimate_stops_and_says_so(monkeypatch):
    refused: set[str] = set()
    source = over(own_process(refused), lambda: CpuTimeSource(10.0, "test CPU"))
    burn(0.05)
    first = source.read_j()[0]
    refused.add("cpu_times")

    def no_times():
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "times", no_times)
    burn(0.05)
    assert source.read_j()[0] == first  # held, never backwards
    problems = source.problems()
    assert len(problems) == 1 and "stopped" in problems[0] and "AccessDenied" in problems[0]
    assert "stopped" in source.components[0].detail


def test_psutil_refusing_this_processs_memory_falls_back_to_its_peak_and_says_so(monkeypatch):
    resource = pytest.importorskip("resource")
    refused: set[str] = set()
    clock = FakeClock()
    source = over(own_process(refused), lambda: RamShareSource(20.0, "test RAM", clock=clock))
    clock.now += 100.0
    before = source.read_j()[0]
    assert before > 0
    refused.add("memory_info")
    clock.now += 100.0
    refused_at = source.read_j()[0]
    clock.now += 100.0
    later = source.read_j()[0]
    # the peak resident memory (getrusage, kB on Linux) stands in for the current one: an upper bound
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert later - refused_at == pytest.approx(20.0 * 100.0 * peak / psutil.virtual_memory().total, rel=0.05)
    assert later - refused_at >= 0.9 * before  # never the silent 0 J
    problems = source.problems()
    assert len(problems) == 1 and "AccessDenied" in problems[0] and "peak" in problems[0]
    assert "peak" in source.components[0].detail


# ---- two runs in progress in one process ----------------------------------------------------------


def overlap_notes(report) -> list[str]:
    return [n for n in report.notes if "overlap" in n and "must not be added" in n]


def test_two_runs_in_two_threads_are_told_they_overlap_and_keep_their_files_apart(tmp_path, caplog):
    options = dict(sources=("cpu", "ram"), country_iso_code="FRA", print_summary=False, output_dir=str(tmp_path),
                   window_s=0.01)
    first_started, second_started = threading.Event(), threading.Event()
    runs: dict[str, Run] = {}
    errors: list[BaseException] = []

    def train(name: str, wait_for: threading.Event | None, started: threading.Event, then: threading.Event | None):
        try:
            if wait_for is not None:
                assert wait_for.wait(30)
            with wattwise.track(**options) as run:
                runs[name] = run
                started.set()
                if then is not None:
                    assert then.wait(30)
                for _ in range(20):
                    burn(0.002)
                    run.step()
        except BaseException as exc:  # noqa: BLE001  (reported by the test thread)
            errors.append(exc)
            started.set()

    with caplog.at_level(logging.INFO, logger="wattwise"):
        threads = [threading.Thread(target=train, args=("first", None, first_started, second_started)),
                   threading.Thread(target=train, args=("second", first_started, second_started, None))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert not errors, errors
    first, second = runs["first"].report, runs["second"].report
    assert len(overlap_notes(first)) == 1 and len(overlap_notes(second)) == 1
    for note in overlap_notes(first) + overlap_notes(second):
        assert "cpu" in note and "ram" in note and "whole process" in note
    assert runs["first"].run_id[:8] in overlap_notes(second)[0]
    assert runs["second"].run_id[:8] in overlap_notes(first)[0]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and "overlap" in r.getMessage()]
    assert len(warnings) == 1  # warned once, on the second run

    directories = {runs["first"].output_dir, runs["second"].output_dir}
    assert directories == {tmp_path / "wattwise", tmp_path / "track" / "wattwise"}
    for name, run in runs.items():
        assert json.loads((run.output_dir / "report.json").read_text())["run_id"] == run.run_id, name
        header, rows = steps_rows(run.output_dir / "steps.csv")
        assert rows and all(len(row) == len(header) for row in rows)


def test_two_energy_callbacks_in_one_trainer_write_two_steps_files_and_say_they_overlap(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from datasets import Dataset

    from wattwise.integrations.transformers import EnergyCallback

    torch.manual_seed(0)
    ids = torch.randint(0, 64, (32, 16), generator=torch.Generator().manual_seed(0)).tolist()
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=64, n_positions=16, n_embd=32, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0,
    ))
    callbacks = [EnergyCallback(sources=("cpu", "ram"), country_iso_code="FRA", window_s=0.001, print_summary=False)
                 for _ in range(2)]
    trainer = transformers.Trainer(
        model=model,
        args=transformers.TrainingArguments(
            output_dir=str(tmp_path / "out"), max_steps=8, per_device_train_batch_size=4, logging_steps=2,
            save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True,
        ),
        train_dataset=Dataset.from_dict({"input_ids": ids, "labels": ids}),
        callbacks=callbacks,
    )
    trainer.train()

    directories = [c.runs.latest("train").output_dir for c in callbacks]
    assert directories == [tmp_path / "out" / "wattwise", tmp_path / "out" / "train" / "wattwise"]
    for directory in directories:
        header, rows = steps_rows(directory / "steps.csv")
        assert header[:4] == ["window", "phase", "global_step", "steps"] and header[-2:] == ["cpu_j", "ram_j"]
        assert [int(r[0]) for r in rows] == list(range(1, len(rows) + 1))
        for row in rows:  # whole, well-formed rows: each number parses
            assert len(row) == len(header)
            assert row[1] == "train"
            assert all(math.isfinite(float(v)) for i, v in enumerate(row) if i != 1 and v != "")
        assert sum(int(r[3]) for r in rows) == 8
    for callback in callbacks:
        assert callback.report.train_steps == 8
        assert len(overlap_notes(callback.report)) == 1, callback.report.notes
