"""``wattwise runs``, ``report`` and ``compare`` with run ids: runs made by ``wattwise.track``, found
through the run registry (conftest.py gives every test its own registry file)."""

from __future__ import annotations

import dataclasses
import json

import pytest

import wattwise
from wattwise.cli import main
from wattwise.registry import Registry
from wattwise.render import plain_summary

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tracked(output_dir, steps: int = 5, **options) -> wattwise.Run:
    with wattwise.track(country_iso_code="FRA", planned_steps=steps, output_dir=output_dir, print_summary=False,
                        sources=("cpu",), **options) as run:
        for _ in range(steps):
            sum(i * i for i in range(2000))  # a little work
            run.step(samples=8)
    return run


def fails(argv: list[str], capsys) -> str:
    """``main(argv)`` exits with status 2 and one line on stderr; that line."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def test_wattwise_runs_lists_a_tracked_run_with_its_directory(tmp_path, private_registry, capsys, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    elsewhere = tracked(tmp_path / "elsewhere")
    at_home = tracked(tmp_path / "home" / "runs")
    assert main(["runs"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == str(private_registry)
    header = out[1]
    assert header.split()[-1] == "directory" and header.index("run_id") < header.index("directory")
    at = header.index("directory")
    # newest first; the directory is the run's wattwise/ (absolute, ~ for the home directory)
    assert at_home.run_id[:8] in out[2] and out[2][at:] == "~/runs/wattwise"
    assert elsewhere.run_id[:8] in out[3] and out[3][at:] == str(tmp_path / "elsewhere" / "wattwise")
    assert (tmp_path / "elsewhere" / "wattwise" / "report.json").is_file()
    assert main(["runs", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["run_id"], r["output_dir"]) for r in rows] == [
        (at_home.run_id, str(tmp_path / "home" / "runs" / "wattwise")),
        (elsewhere.run_id, str(tmp_path / "elsewhere" / "wattwise")),
    ]


def test_a_relative_output_dir_is_recorded_absolute(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tracked("out")
    [record] = Registry.open().runs()
    assert record.run_id == run.run_id and record.output_dir == str(tmp_path / "out" / "wattwise")
    monkeypatch.chdir(tmp_path.parent)  # found from any directory
    assert main(["report", run.run_id, "--no-png"]) == 0
    assert capsys.readouterr().out.startswith(plain_summary(run.report))


def test_a_run_that_wrote_no_files_shows_no_directory(tmp_path, capsys):
    run = tracked(tmp_path, write_files=False)
    assert main(["runs"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert run.run_id[:8] in out[2] and out[2].split()[-1] == "-"


def test_wattwise_report_takes_a_run_id_or_a_prefix_of_it(tmp_path, capsys, monkeypatch):
    run = tracked(tmp_path)
    summary = plain_summary(run.report)
    png = run.output_dir / "report.png"
    png.unlink()
    monkeypatch.chdir(tmp_path.parent)
    assert main(["report", run.run_id]) == 0
    out = capsys.readouterr().out
    assert out.startswith(summary) and f"figure: {png.absolute()}" in out
    assert png.read_bytes()[:8] == PNG_MAGIC  # drawn again beside report.json
    for prefix in (run.run_id[:8], run.run_id[:13], run.run_id[:8].upper()):
        assert main(["report", prefix, "--no-png"]) == 0
        assert capsys.readouterr().out.startswith(summary), prefix
    assert main(["report", str(run.output_dir), "--no-png"]) == 0  # a path still works
    assert capsys.readouterr().out.startswith(summary)


def test_wattwise_compare_takes_run_ids(tmp_path, capsys):
    a = tracked(tmp_path / "a")
    b = tracked(tmp_path / "b", steps=8)
    assert main(["compare", a.run_id, b.run_id[:10]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"A: {(tmp_path / 'a' / 'wattwise' / 'report.json').absolute()}"
    assert lines[1] == f"B: {(tmp_path / 'b' / 'wattwise' / 'report.json').absolute()}"
    rows = {line.split("  ")[0].strip(): line.split() for line in lines[2:]}
    assert rows["run"][1:3] == [a.run_id[:8], b.run_id[:8]]
    assert rows["training steps"][2:4] == ["5", "8"]
    assert main(["compare", a.run_id[:8], str(tmp_path / "b")]) == 0  # an id and a path
    assert capsys.readouterr().out.splitlines()[1].endswith("b/wattwise/report.json")


def test_an_unknown_run_id_is_one_error_line_naming_it(tmp_path, capsys):
    run = tracked(tmp_path)
    line = fails(["report", "deadbeef"], capsys)
    assert line.startswith("wattwise report: error:") and "'deadbeef'" in line and "wattwise runs" in line
    line = fails(["compare", run.run_id, "0123456789abcdef"], capsys)
    assert line.startswith("wattwise compare: error:") and "'0123456789abcdef'" in line
    line = fails(["report", "deadbee"], capsys)  # too short to be a prefix
    assert "'deadbee'" in line and "8 characters" in line
    line = fails(["report", str(tmp_path / "nowhere")], capsys)  # a path that is not there: as before
    assert "nowhere" in line and "report.json" in line


def test_an_ambiguous_prefix_a_run_without_files_and_a_moved_run_are_errors(tmp_path, capsys, private_registry):
    run = tracked(tmp_path)
    registry = Registry(private_registry)
    for run_id in ("abcdef12-0000-4000-8000-000000000000", "abcdef12-1111-4000-8000-000000000000"):
        registry.record(dataclasses.replace(run.report, run_id=run_id), output_dir=run.output_dir)
    line = fails(["report", "abcdef12"], capsys)
    assert "'abcdef12'" in line and "ambiguous" in line and "abcdef12-1111" in line
    assert main(["report", "abcdef12-1", "--no-png"]) == 0  # a longer prefix settles it
    capsys.readouterr()

    quiet = tracked(tmp_path / "quiet", write_files=False)
    line = fails(["report", quiet.run_id[:8]], capsys)
    assert quiet.run_id in line and "wrote no files" in line

    moved = tracked(tmp_path / "moved")
    (moved.output_dir / "report.json").rename(tmp_path / "moved.json")
    line = fails(["report", moved.run_id], capsys)
    assert moved.run_id in line and "report.json" in line and str(moved.output_dir.absolute()) in line


def test_run_ids_with_the_registry_off_or_elsewhere(tmp_path, capsys, monkeypatch, private_registry):
    run = tracked(tmp_path)
    monkeypatch.setenv("WATTWISE_REGISTRY", "off")
    line = fails(["report", run.run_id], capsys)
    assert run.run_id in line and "registry is off" in line
    assert main(["report", run.run_id, "--no-png", "--registry", str(private_registry)]) == 0
    assert capsys.readouterr().out.startswith(plain_summary(run.report))
    assert main(["compare", run.run_id, run.run_id[:8], "--registry", str(private_registry)]) == 0
    assert "+0.0%" in capsys.readouterr().out
