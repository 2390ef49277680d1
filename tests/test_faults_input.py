"""Bad input and failing files: a clear error naming what is wrong, or an honest degraded result,
never a traceback. Location and option checks, a full disk or read-only directory under a run, a
damaged or read-only run registry, damaged report.json files, and the CLI's arguments.

A full disk and a read-only directory are simulated at Python's ``open`` (and ``os.mkdir`` /
``os.replace``) for paths under one directory: the tests run as root here, where ``chmod`` stops
nothing, and no test may need a real full file system."""

from __future__ import annotations

import builtins
import errno
import io
import json
import logging
import os
import sqlite3
import subprocess
import sys
import urllib.parse
import uuid
import warnings
from pathlib import Path

import pytest
from fakes import FakeClock

import wattwise
from wattwise.carbon import resolve_intensity
from wattwise.cli import main
from wattwise.config import Config
from wattwise.meter import EnergyMeter
from wattwise.registry import Registry
from wattwise.render import load_report
from wattwise.report import ComponentEnergy, PhaseEnergy, RunReport
from wattwise.run import Run
from wattwise.windows import STEPS_CSV_COLUMNS, StepsCsv, Window

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fails(argv: list[str], capsys) -> str:
    """``main(argv)`` exits with status 2 and one line on stderr, no traceback; that line."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return lines[0]


# ---- location ------------------------------------------------------------------------------------


def test_a_country_with_a_cloud_region_is_ambiguous_and_refused():
    kwargs = {"country_iso_code": "FRA", "cloud_provider": "gcp", "cloud_region": "us-central1"}
    for check in (Config.from_kwargs, resolve_intensity, wattwise.track):
        with pytest.raises(ValueError, match="country_iso_code.*cloud_provider") as info:
            check(**kwargs)
        assert "cloud_region" in str(info.value)
    with pytest.raises(ValueError, match="region.*cloud_provider"):
        Config.from_kwargs(country_iso_code="USA", region="california", cloud_provider="gcp",
                           cloud_region="us-central1")


def test_an_explicit_intensity_does_not_let_an_unknown_location_through():
    with pytest.raises(ValueError, match="country_iso_code 'ZZZ'"):
        resolve_intensity(country_iso_code="ZZZ", carbon_intensity_g_per_kwh=50)
    with pytest.raises(ValueError, match="country_iso_code 'ZZZ'"):
        wattwise.track(country_iso_code="ZZZ", carbon_intensity_g_per_kwh=50)
    with pytest.raises(ValueError, match="region 'atlantis'"):
        resolve_intensity(country_iso_code="USA", region="atlantis", carbon_intensity_g_per_kwh=50)
    with pytest.raises(ValueError, match="cloud_region 'mars-1'"):
        resolve_intensity(cloud_provider="gcp", cloud_region="mars-1", carbon_intensity_g_per_kwh=50)
    # a valid country with an explicit intensity: the intensity wins, the report still names the country
    grid = resolve_intensity(country_iso_code="FRA", carbon_intensity_g_per_kwh=50)
    assert grid.g_per_kwh == 50 and grid.country_iso_code == "FRA" and grid.country_name == "France"
    assert "France" in grid.location and "given" in grid.location


def test_location_conflicts_reach_the_estimate_command(capsys):
    line = fails(["estimate", "--params", "1e6", "--tokens", "1e9", "--hardware", "t4", "--precision", "fp16",
                  "--country", "FRA", "--cloud-provider", "gcp", "--cloud-region", "us-central1"], capsys)
    assert "country_iso_code" in line and "cloud_provider" in line


# ---- options -------------------------------------------------------------------------------------


@pytest.mark.parametrize("sources", [5, 3.5, object()])
def test_sources_of_the_wrong_type_are_a_value_error(sources):
    with pytest.raises(ValueError, match="sources"):
        Config.from_kwargs(sources=sources)


@pytest.mark.parametrize("sources", [(), [], ""])
def test_no_source_at_all_is_refused(sources):
    with pytest.raises(ValueError, match="sources must name at least one of nvml, rapl, cpu, ram"):
        Config.from_kwargs(sources=sources)


def test_an_empty_sources_variable_is_refused(monkeypatch):
    monkeypatch.setenv("WATTWISE_SOURCES", ",")
    with pytest.raises(ValueError, match="WATTWISE_SOURCES.*at least one"):
        Config.from_kwargs()
    with pytest.raises(ValueError, match="at least one"):
        wattwise.track()


@pytest.mark.parametrize("name", ["output_dir", "project_name", "region", "cloud_region"])
@pytest.mark.parametrize("value", ["", "   "])
def test_empty_strings_are_refused(name, value):
    kwargs = {name: value}
    if name == "region":
        kwargs["country_iso_code"] = "USA"
    if name == "cloud_region":
        kwargs["cloud_provider"] = "gcp"
    with pytest.raises(ValueError, match=f"{name} must be a non-empty string"):
        Config.from_kwargs(**kwargs)


@pytest.mark.parametrize("name", ["pue", "carbon_intensity_g_per_kwh", "cpu_power_w", "ram_power_w", "window_s",
                                  "budget_kwh", "budget_kg_co2e"])
def test_numbers_too_large_for_a_float_are_a_value_error(name):
    with pytest.raises(ValueError, match=f"{name} must be a finite number"):
        Config.from_kwargs(**{name: 10**400})
    with pytest.raises(ValueError, match=name):
        Config.from_kwargs(**{name: -(10**400)})


@pytest.fixture
def fresh_env_warnings(monkeypatch):
    """The process has warned about no variable yet."""
    import wattwise.config

    monkeypatch.setattr(wattwise.config, "_warned_variables", set())


def test_an_unknown_wattwise_variable_is_warned_about_once_with_the_closest_name(monkeypatch, fresh_env_warnings):
    monkeypatch.setenv("WATTWISE_COUNTRY", "FRA")
    monkeypatch.setenv("WATTWISE_NODE_ID", "node-a")  # known: read by the distributed code
    monkeypatch.setenv("WATTWISE_PUE", "1.2")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Config.from_kwargs()
        Config.from_kwargs()
        wattwise.track(country_iso_code="FRA")
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    assert "WATTWISE_COUNTRY" in messages[0] and "WATTWISE_COUNTRY_ISO_CODE" in messages[0]


def test_known_variables_are_not_warned_about(monkeypatch, fresh_env_warnings, tmp_path):
    for name, value in (("WATTWISE_NODE_ID", "n"), ("WATTWISE_REGISTRY", str(tmp_path / "r.sqlite")),
                        ("WATTWISE_COUNTRY_ISO_CODE", "FRA"), ("WATTWISE_SYNC_CUDA", "0")):
        monkeypatch.setenv(name, value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Config.from_kwargs()
    assert not caught


# ---- a full disk, a read-only directory -----------------------------------------------------------


def _under(path, root: Path) -> bool:
    if not isinstance(path, str | os.PathLike):
        return False
    return os.path.abspath(path).startswith(str(root) + os.sep) or os.path.abspath(path) == str(root)


class _Limited:
    """A file on a disk with ``disk.free`` bytes left: a write past it writes what fits, then fails."""

    def __init__(self, file, disk) -> None:
        self._file, self._disk = file, disk

    def write(self, data):
        room = self._disk.free
        part = data[:room]
        if part:
            self._file.write(part)
            self._disk.free -= len(part)
        if len(part) < len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self._file.name)
        return len(data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()

    def __getattr__(self, name):
        return getattr(self._file, name)


class FullDisk:
    """Writes under ``root`` share ``free`` bytes, then fail with ENOSPC (as a full disk does)."""

    def __init__(self, monkeypatch, root: Path, free: int) -> None:
        self.root, self.free = root, free
        real_open = builtins.open

        def fake_open(file, mode="r", *args, **kwargs):
            opened = real_open(file, mode, *args, **kwargs)
            if _under(file, root) and any(c in mode for c in "wax+"):
                return _Limited(opened, self)
            return opened

        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(io, "open", fake_open)


def read_only(monkeypatch, root: Path) -> None:
    """``root`` is a read-only directory: nothing can be created, written or moved in it."""
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o555)
    real_open, real_mkdir, real_replace = builtins.open, os.mkdir, os.replace

    def denied(path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))

    def fake_open(file, mode="r", *args, **kwargs):
        if _under(file, root) and any(c in mode for c in "wax+"):
            denied(file)
        return real_open(file, mode, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if _under(path, root) and os.path.abspath(path) != str(root):
            denied(path)
        return real_mkdir(path, *args, **kwargs)

    def fake_replace(src, dst, *args, **kwargs):
        if _under(dst, root):
            denied(dst)
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)
    monkeypatch.setattr(os, "replace", fake_replace)


@pytest.fixture
def restore_modes(tmp_path):
    yield
    for path in [tmp_path, *tmp_path.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)


def finished_run(output_dir: Path, steady_source, steps: int = 200) -> RunReport:
    """200 steps of 10 ms at 200 W + 50 W with a reading every 0.1 s, its files under output_dir."""
    clock = FakeClock()
    config = Config.from_kwargs(country_iso_code="FRA", print_summary=False, window_s=0.1)
    run = Run.from_config(config, framework="transformers", clock=clock)
    meter = EnergyMeter([steady_source({"gpu:0": 200.0, "cpu": 50.0}, clock)], clock=clock)
    run.start(output_dir=output_dir, planned_steps=steps, meter=meter)
    for _ in range(steps):
        clock.now += 0.01
        run.step()
    return run.finish()


def file_notes(report: RunReport) -> list[str]:
    return [n for n in report.notes if any(name in n for name in ("steps.csv", "report.json", "report.png"))]


def warnings_logged(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "wattwise" and r.levelno >= logging.WARNING]


def test_a_full_disk_costs_one_note_naming_each_file_and_leaves_nothing_half_written(
        tmp_path, steady_source, monkeypatch, caplog):
    FullDisk(monkeypatch, tmp_path / "out", free=0)
    report = finished_run(tmp_path / "out", steady_source)
    assert report is not None and report.energy_j > 0  # the run is not lost
    (note,) = file_notes(report)
    for name in ("steps.csv", "report.json", "emissions.csv", "report.png", "No space left on device"):
        assert name in note, note
    assert len([m for m in warnings_logged(caplog) if "No space left" in m]) == 1
    directory = tmp_path / "out" / "wattwise"
    left = {p.name: p.stat().st_size for p in directory.iterdir()} if directory.exists() else {}
    assert not [name for name in left if name.endswith(".tmp")], left
    assert "report.json" not in left and "report.png" not in left
    assert all(size > 0 for size in left.values()), left  # no empty file behind


def test_a_disk_filling_mid_run_keeps_whole_steps_csv_rows_and_says_report_json_failed(
        tmp_path, steady_source, monkeypatch, caplog):
    FullDisk(monkeypatch, tmp_path / "out", free=600)
    report = finished_run(tmp_path / "out", steady_source)
    steps = (tmp_path / "out" / "wattwise" / "steps.csv").read_bytes()
    assert steps.endswith(b"\r\n")
    rows = steps.decode().splitlines()
    assert rows[0].split(",")[: len(STEPS_CSV_COLUMNS)] == STEPS_CSV_COLUMNS
    assert len(rows) > 2 and all(len(row.split(",")) == len(rows[0].split(",")) for row in rows)
    assert [int(row.split(",")[0]) for row in rows[1:]] == list(range(1, len(rows)))
    (note,) = file_notes(report)
    assert "report.json" in note and "steps.csv" in note and "No space left" in note
    assert len([m for m in warnings_logged(caplog) if "No space left" in m]) == 1
    assert not (tmp_path / "out" / "wattwise" / "report.json.tmp").exists()
    assert not (tmp_path / "out" / "wattwise" / "report.png").exists()


def test_a_read_only_directory_is_one_note_that_says_permission_denied(
        tmp_path, steady_source, monkeypatch, caplog, restore_modes):
    read_only(monkeypatch, tmp_path / "ro")
    report = finished_run(tmp_path / "ro", steady_source)
    (note,) = file_notes(report)
    for name in ("steps.csv", "report.json", "report.png", "Permission denied"):
        assert name in note, note
    assert "No such file" not in note
    assert len([m for m in warnings_logged(caplog) if "Permission denied" in m]) == 1


def test_only_the_figure_failing_says_why_and_leaves_no_empty_png(tmp_path, steady_source, monkeypatch):
    import wattwise.report

    real = wattwise.report.write_atomically

    def png_denied(path, data):
        if Path(path).name == "report.png":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real(path, data)

    monkeypatch.setattr(wattwise.report, "write_atomically", png_denied)
    report = finished_run(tmp_path / "out", steady_source)
    (note,) = file_notes(report)
    assert "report.png" in note and "Permission denied" in note and "report.json" not in note
    assert (tmp_path / "out" / "wattwise" / "report.json").is_file()
    assert not (tmp_path / "out" / "wattwise" / "report.png").exists()


class _FailingRaw(io.BytesIO):
    """A raw file that takes ``free`` bytes, writing a short piece of the write that crosses it."""

    def __init__(self, free: int) -> None:
        super().__init__()
        self.free = free
        self.name = "steps.csv"

    def write(self, data) -> int:
        if self.free <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        part = bytes(data[: self.free])
        self.free -= len(part)
        return super().write(part)  # a short write, as the kernel makes when space runs out


def test_steps_csv_rows_are_written_whole_or_not_at_all():
    raw = _FailingRaw(free=250)
    steps = StepsCsv(raw)
    written = 0
    with pytest.raises(OSError):
        for i in range(100):
            steps.write(Window("train", global_step=i, steps=1, start_s=float(i), duration_s=1.0,
                               deltas=[1.0 / 3, 2.0 / 3]))
            written += 1
    text = raw.getvalue().decode()
    assert text.endswith("\r\n") and len(text.splitlines()) == written
    assert text.splitlines()[-1].split(",")[0] == str(written)


# ---- the run registry -----------------------------------------------------------------------------


def gpu_report(energy_j: float = 1000.0) -> RunReport:
    components = {"gpu:0": ComponentEnergy("gpu:0", "gpu", 800.0, True, "nvml", "device",
                                           "NVIDIA A100-SXM4-80GB, 80 GB"),
                  "cpu": ComponentEnergy("cpu", "cpu", energy_j - 800.0, False, "cpu-time", "process")}
    return RunReport(
        run_id=str(uuid.uuid4()), framework="test", project_name="p", started_at="2026-11-20T10:00:00+00:00",
        duration_s=100.0, energy_j=energy_j, emissions_kg=energy_j * 1e-7, train_steps=100, planned_steps=100,
        by_component=components, by_phase={"train": PhaseEnergy("train", energy_j=900.0, duration_s=90.0, steps=100)},
        carbon={"g_per_kwh": 56.0, "location": "France", "source": "test", "pue": 1.0}, hardware={"cpu_count": 8},
    )


def test_wattwise_runs_on_a_file_that_is_not_a_database(private_registry, capsys):
    private_registry.write_bytes(b"this is not a database\n" * 100)
    line = fails(["runs"], capsys)
    assert str(private_registry) in line and "not" in line
    line = fails(["runs", "--registry", str(private_registry)], capsys)
    assert str(private_registry) in line


def test_wattwise_runs_on_a_directory_at_the_registry_path(private_registry, capsys):
    private_registry.mkdir(parents=True)
    line = fails(["runs"], capsys)
    assert str(private_registry) in line and "directory" in line


def test_a_damaged_registry_costs_a_run_a_note_naming_the_file(private_registry, tmp_path, steady_source):
    private_registry.write_bytes(b"this is not a database\n" * 100)
    report = finished_run(tmp_path / "out", steady_source)
    (note,) = [n for n in report.notes if "registry" in n]
    assert str(private_registry) in note


def read_only_database(monkeypatch, path: Path) -> None:
    """``path`` can be read but not written (as a 0444 file is for anyone but root)."""
    path.chmod(0o444)
    real_connect = sqlite3.connect

    def connect(database, *args, **kwargs):
        text = os.fspath(database)
        if urllib.parse.unquote(text.removeprefix("file:").split("?")[0]) != str(path):
            return real_connect(database, *args, **kwargs)
        if kwargs.get("uri") and "mode=ro" in text:
            return real_connect(database, *args, **kwargs)
        return real_connect(f"file:{urllib.parse.quote(str(path))}?mode=ro", *args, **{**kwargs, "uri": True})

    monkeypatch.setattr(sqlite3, "connect", connect)


def test_a_read_only_registry_still_lists_and_calibrates(private_registry, monkeypatch, capsys):
    recorded = Registry(private_registry).record(gpu_report(), params=100_000_000, tokens=1e9, precision="bf16")
    conn = sqlite3.connect(private_registry)  # a file whose journal is not WAL, which a reader cannot change
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()
    read_only_database(monkeypatch, private_registry)
    assert main(["runs"]) == 0
    out = capsys.readouterr().out
    assert recorded.run_id[:8] in out
    assert main(["estimate", "--params", "1e8", "--tokens", "1e9", "--hardware", "a100-80gb"]) == 0
    assert "calibrated: yes, from 1 past run" in capsys.readouterr().out


# ---- wattwise report on damaged files ------------------------------------------------------------


def saved(tmp_path: Path, **changes) -> Path:
    """A saved report.json with ``changes`` made to its fields."""
    data = gpu_report().to_dict()
    data.update(changes)
    path = tmp_path / "run" / "wattwise" / "report.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(("field", "value"), [("by_component", 5), ("energy_j", "lots"), ("energy_j", None),
                                              ("by_phase", {"train": {"name": "train", "energy_j": "x"}}),
                                              ("timeline", [{"t_s": "soon", "duration_s": 1, "phase": "train"}]),
                                              ("notes", "a note"), ("train_steps", 1.5)])
def test_a_report_with_wrong_types_is_one_error_line_naming_the_file(tmp_path, capsys, field, value):
    path = saved(tmp_path, **{field: value})
    line = fails(["report", str(path)], capsys)
    assert str(path) in line and field in line
    line = fails(["compare", str(path), str(path)], capsys)
    assert str(path) in line


def test_a_report_with_unknown_fields_loads(tmp_path, capsys):
    data = gpu_report().to_dict()
    data["written_by_a_newer_version"] = {"x": 1}
    data["by_component"]["cpu"]["new_field"] = 3
    data["by_phase"]["train"]["new_field"] = "y"
    path = tmp_path / "report.json"
    path.write_text(json.dumps(data))
    report, _ = load_report(path)
    assert report.by_component["cpu"].energy_j == 200.0
    assert main(["report", str(path), "--no-png"]) == 0
    assert "wattwise:" in capsys.readouterr().out


def test_a_non_utf8_report_is_an_error_naming_the_file(tmp_path, capsys):
    path = tmp_path / "report.json"
    path.write_bytes(b'{"run_id": "\xff\xfe"}')
    line = fails(["report", str(path)], capsys)
    assert str(path) in line and "UTF-8" in line


def test_png_into_a_missing_directory_is_created(tmp_path, capsys):
    path = saved(tmp_path)
    target = tmp_path / "figures" / "new" / "run.png"
    assert main(["report", str(path), "--png", str(target)]) == 0
    assert f"figure: {target}" in capsys.readouterr().out.splitlines()
    assert target.read_bytes()[:8] == PNG_MAGIC


def test_png_into_an_existing_directory_writes_report_png_there_and_says_so(tmp_path, capsys):
    path = saved(tmp_path)
    folder = tmp_path / "figures"
    folder.mkdir()
    assert main(["report", str(path), "--png", str(folder)]) == 0
    assert f"figure: {folder / 'report.png'}" in capsys.readouterr().out.splitlines()
    assert (folder / "report.png").read_bytes()[:8] == PNG_MAGIC
    assert not (tmp_path / "figures.png").exists()


def test_a_closed_pipe_ends_the_command_quietly(tmp_path):
    path = saved(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "wattwise.cli", "report", str(path), "--no-png"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # as `| head` does once it has its lines
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err.decode() and "BrokenPipeError" not in err.decode(), err.decode()
    assert proc.returncode == 0  # the reader had what it wanted: `set -o pipefail` scripts go on


# ---- wattwise estimate's arguments ---------------------------------------------------------------


def test_a_negative_params_is_read_as_a_value_and_refused(capsys):
    line = fails(["estimate", "--params", "-1e6", "--tokens", "1e9", "--hardware", "t4", "--precision", "fp16"],
                 capsys)
    assert "params must be > 0" in line


@pytest.mark.parametrize(("argv", "name"), [
    (["--params", "1e400", "--tokens", "1e9"], "--params"),
    (["--params", "1e6", "--tokens", "1e400"], "--tokens"),
    (["--params", "1e6", "--tokens", "1e9", "--pue", "1e400"], "--pue"),
    (["--params", "1e6", "--tokens", "1e9", "--power-w", "nan"], "--power-w"),
])
def test_numbers_too_large_are_one_error_line(argv, name, capsys):
    line = fails(["estimate", *argv, "--hardware", "t4", "--precision", "fp16"], capsys)
    assert "OverflowError" not in line and name in line and "finite" in line


def test_a_usage_error_is_one_line_naming_the_argument(capsys):
    line = fails(["estimate", "--params"], capsys)
    assert "--params" in line
    line = fails(["runs", "--limit", "many"], capsys)
    assert "--limit" in line
