"""The printed summary (plain and rich), report.png, and the `wattwise report` / `wattwise compare` commands."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import pytest
from fakes import FakeClock

from wattwise.cli import main
from wattwise.config import Config
from wattwise.meter import EnergyMeter
from wattwise.plot import merge_short, phase_spans
from wattwise.render import load_report, plain_summary, print_summary
from wattwise.report import RunReport
from wattwise.run import Run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tracked_run(tmp_path, steady_source, *, eval_steps=40, watts=None, name="run", eval_every=None) -> RunReport:
    """A run of 200 steps of 10 ms with an evaluation every 50 steps, written under tmp_path/name."""
    clock = FakeClock()
    config = Config.from_kwargs(country_iso_code="FRA", print_summary=False, window_s=0.1)
    session = Run.from_config(config, framework="transformers", clock=clock)
    meter = EnergyMeter([steady_source(watts or {"gpu:0": 200.0, "cpu": 50.0}, clock)], clock=clock)
    session.start(output_dir=tmp_path / name, planned_steps=200, meter=meter)
    if eval_every:  # the framework says when it evaluates (HF eval_steps, Lightning's schedule)
        session.plan(200, eval_every_steps=eval_every)
    for step in range(1, 201):
        clock.now += 0.01
        session.step()
        if step % 50 == 0:
            session.begin("eval")
            for _ in range(eval_steps):
                clock.now += 0.01
                session.step()
            session.end("eval")
            session.evidence.record_metric("eval_loss", [2.0, 1.0, 1.5, 1.6][step // 50 - 1], step=step)
    return session.finish()


def test_the_plain_summary_is_a_set_of_tables(tmp_path, steady_source):
    report = tracked_run(tmp_path, steady_source)
    text = plain_summary(report)
    lines = text.splitlines()
    assert lines[0].startswith("wattwise: ") and "CO2e" in lines[0]
    assert "  by component:" in lines and "  by phase:" in lines
    gpu_line = next(line for line in lines if line.strip().startswith("gpu:0"))
    assert gpu_line.split()[:5] == ["gpu:0", "720", "J", "80.0%", "measured"]  # 200 W of 250 W over 3.6 s
    train = next(line for line in lines if line.strip().startswith("train "))
    assert "200" in train.split()  # steps
    assert "forecast accuracy" in text
    recommendations = lines.index(next(line for line in lines if "recommendations, ranked" in line))
    ranked = [line.split()[0] for line in lines[recommendations + 2:] if line[4:5].isdigit()]
    assert ranked == [str(i + 1) for i in range(len(report.recommendations))]
    assert [r.rule for r in report.recommendations][:1] == ["lower_carbon_region"]  # 56 g/kWh vs 2 g/kWh
    assert "evaluation_share" in [r.rule for r in report.recommendations]  # 4 x 40 eval steps of 360
    assert "change: TrainingArguments(" in text  # the change in this run's framework's terms


def test_summary_shows_measured_and_estimated_and_the_forecast_error(tmp_path, steady_source):
    report = tracked_run(tmp_path, steady_source)
    report.by_component["cpu"].measured = False
    text = plain_summary(report)
    gpu_line = next(line for line in text.splitlines() if line.strip().startswith("gpu:0"))
    cpu_line = next(line for line in text.splitlines() if line.strip().startswith("cpu "))
    assert "measured" in gpu_line and "estimated" in cpu_line
    scored = [f for f in report.forecasts if f["error_pct"] is not None]
    assert scored and f"{scored[-1]['error_pct']:+.1f}%" in text


def test_a_forecast_made_before_any_scheduled_evaluation_says_what_it_left_out(tmp_path, steady_source):
    report = tracked_run(tmp_path, steady_source, eval_every=50)
    early = next(f for f in report.forecasts if f["energy_j"] is not None)
    assert early["at_step"] == 50 and early["eval_passes_unmeasured"] == 4  # taken before step 50's pass
    assert "without 4 eval passes, none run yet" in plain_summary(report)
    later = [f for f in report.forecasts if f["at_step"] > 50]
    assert later and all(f["eval_passes_unmeasured"] == 0 for f in later)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_rich_tables_on_a_terminal_plain_text_otherwise(tmp_path, steady_source):
    report = tracked_run(tmp_path, steady_source)
    pipe = io.StringIO()
    print_summary(report, file=pipe)
    assert pipe.getvalue() == plain_summary(report) + "\n"
    terminal = Terminal()
    print_summary(report, file=terminal)
    out = terminal.getvalue()
    assert "\x1b[" in out  # rich styled it
    words = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", out).split())
    assert "by phase" in words and "recommendations, ranked" in words
    assert "gpu:0 " in words and "measured" in words
    assert report.recommendations[0].title.split(" (")[0] in words


def test_report_png_is_drawn_at_the_end_of_a_run(tmp_path, steady_source):
    tracked_run(tmp_path, steady_source)
    png = tmp_path / "run" / "wattwise" / "report.png"
    assert png.read_bytes()[:8] == PNG_MAGIC
    width, height = int.from_bytes(png.read_bytes()[16:20], "big"), int.from_bytes(png.read_bytes()[20:24], "big")
    assert (width, height) == (990, 836)  # 9 x 7.6 inches at 110 dpi


def test_short_windows_are_merged_for_the_power_plot_keeping_energy():
    timeline = [
        {"t_s": 0.0, "duration_s": 1.0, "phase": "train", "gpu:0": 100.0},
        {"t_s": 1.0, "duration_s": 0.001, "phase": "eval", "gpu:0": 5.0},  # a 5 kW "spike"
        {"t_s": 1.001, "duration_s": 1.0, "phase": "eval", "gpu:0": 50.0},
    ]
    merged = merge_short(timeline, 0.05)
    assert [p["duration_s"] for p in merged] == [pytest.approx(1.001), 1.0]
    assert sum(p["gpu:0"] for p in merged) == pytest.approx(155.0)
    assert phase_spans(timeline) == [("train", 0.0, 1.0), ("eval", 1.0, 2.001)]


def test_importing_wattwise_does_not_import_rich_or_matplotlib():
    code = (
        "import sys, wattwise, wattwise.report, wattwise.render, wattwise.plot, wattwise.advisor, wattwise.run;"
        "print([m for m in ('rich', 'matplotlib') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "[]", result.stderr


# ---- the commands --------------------------------------------------------------------------------


def test_wattwise_report_renders_a_saved_run_again(tmp_path, steady_source, capsys):
    report = tracked_run(tmp_path, steady_source)
    png = tmp_path / "run" / "wattwise" / "report.png"
    png.unlink()
    assert main(["report", str(tmp_path / "run")]) == 0  # the run's directory: its wattwise/report.json
    out = capsys.readouterr().out
    assert out.startswith(plain_summary(report))
    assert png.read_bytes()[:8] == PNG_MAGIC
    other = tmp_path / "elsewhere.png"
    assert main(["report", str(png.with_name("report.json")), "--png", str(other)]) == 0
    assert other.read_bytes()[:8] == PNG_MAGIC
    assert main(["report", str(tmp_path / "run"), "--no-png"]) == 0


def test_wattwise_compare_puts_two_runs_side_by_side(tmp_path, steady_source, capsys):
    a = tracked_run(tmp_path, steady_source, name="a")
    b = tracked_run(tmp_path, steady_source, name="b", eval_steps=10, watts={"gpu:0": 100.0, "cpu": 50.0})
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b" / "wattwise" / "report.json")]) == 0
    rows = {line.split("  ")[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    change = 100 * (b.energy_j - a.energy_j) / a.energy_j
    assert rows["energy"][-1] == f"{change:+.1f}%"
    assert rows["training steps"][2:] == ["200", "200", "+0.0%"]
    assert "eval" in rows and "gpu:0 (measured)" in {k.strip() for k in rows}


@pytest.mark.parametrize("argv", [["report", "/nonexistent/run"], ["compare", "/nonexistent/a", "/nonexistent/b"]])
def test_the_commands_refuse_a_missing_report(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "is not a report.json nor a directory holding one" in capsys.readouterr().err


def test_a_file_that_is_not_a_report_is_refused(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="is not a wattwise report"):
        load_report(path)
