"""The local run registry: every finished run, one row in a per-user SQLite file.

Example::

    >>> from wattwise.registry import Registry
    >>> registry = Registry.open()                 # None when turned off (WATTWISE_REGISTRY=off)
    >>> registry.path                              # ~/.local/share/wattwise/runs.sqlite on Linux
    >>> [(r.run_id, r.hardware, r.energy_j) for r in registry.runs(limit=5)]   # newest first

Where it lives (``resolve_path``): ``registry=`` (a path, ``True`` for the default, ``False`` for
none), else the ``WATTWISE_REGISTRY`` environment variable (a path, or ``0``/``false``/``off``/``no``
to turn it off), else the per-user data directory: ``$XDG_DATA_HOME/wattwise/runs.sqlite`` (default
``~/.local/share``) on Linux and other Unixes, ``~/Library/Application Support/wattwise`` on macOS,
``%LOCALAPPDATA%\\wattwise`` on Windows.

Several processes may record at once (parallel jobs, a sweep): the database is in WAL mode, every
connection waits up to ``BUSY_TIMEOUT_S`` for a lock, and a run is written in one short
transaction. Reading (``runs``, ``find``) opens the file read-only and changes nothing, so a
read-only registry still lists and calibrates. A file that cannot be used (not a database, a
directory at its path) raises ``RegistryError`` (a ``ValueError``) naming it. ``sqlite3`` is
imported only when the registry is used.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import sys
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlite3

    from .report import RunReport

ENV = "WATTWISE_REGISTRY"
OFF = ("0", "false", "off", "no", "none")
ON = ("1", "true", "on", "yes", "")
BUSY_TIMEOUT_S = 30.0
SCHEMA_VERSION = 3  # 2: the precision column; 3: stopped_by_budget

_COLUMNS = (
    ("run_id", "TEXT PRIMARY KEY"),
    ("recorded_at", "TEXT NOT NULL"),
    ("started_at", "TEXT"),
    ("framework", "TEXT"),
    ("project_name", "TEXT"),
    ("hardware", "TEXT NOT NULL"),  # the GPU's name (NVML), else the CPU's model name
    ("hardware_kind", "TEXT NOT NULL"),  # "gpu" or "cpu"
    ("devices", "INTEGER NOT NULL"),  # GPUs measured, or logical CPUs
    ("cpu_model", "TEXT"),
    ("params", "INTEGER"),
    ("tokens", "REAL"),
    ("samples", "REAL"),
    ("train_steps", "INTEGER"),
    ("planned_steps", "INTEGER"),
    ("energy_j", "REAL NOT NULL"),
    ("device_energy_j", "REAL NOT NULL"),  # the GPUs' (or the CPU's) part of energy_j
    ("duration_s", "REAL NOT NULL"),
    ("train_energy_j", "REAL"),
    ("train_duration_s", "REAL"),
    ("emissions_kg", "REAL"),
    ("by_phase", "TEXT"),  # JSON: phase -> energy_j, duration_s, steps, passes, samples
    ("output_dir", "TEXT"),
    ("partial", "INTEGER NOT NULL"),
    ("precision", "TEXT"),  # fp32, tf32, bf16 or fp16 as the framework said; NULL when not known
    ("stopped_by_budget", "INTEGER NOT NULL DEFAULT 0"),  # on_budget="stop" ended it before its plan
)


@dataclass(frozen=True)
class RunRecord:
    """One recorded run (SI units; ``tokens``/``samples``/``params`` are None when not known)."""

    run_id: str
    recorded_at: str
    started_at: str | None
    framework: str | None
    project_name: str | None
    hardware: str
    hardware_kind: str
    devices: int
    cpu_model: str | None
    params: int | None
    tokens: float | None
    samples: float | None
    train_steps: int | None
    planned_steps: int | None
    energy_j: float
    device_energy_j: float
    duration_s: float
    train_energy_j: float | None
    train_duration_s: float | None
    emissions_kg: float | None
    by_phase: dict[str, Any]
    output_dir: str | None
    partial: bool
    precision: str | None = None
    stopped_by_budget: bool = False

    @property
    def status(self) -> str:
        """``complete``, ``partial`` (interrupted) or ``stopped`` (by its budget)."""
        return "partial" if self.partial else "stopped" if self.stopped_by_budget else "complete"


def default_path() -> Path:
    """The per-user registry file of this platform (not created here)."""
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = home / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    return base / "wattwise" / "runs.sqlite"


def resolve_path(setting: bool | str | os.PathLike | None = None) -> Path | None:
    """Where the registry is, or None when it is off: ``setting`` (``registry=``), else ``WATTWISE_REGISTRY``.

    ``False`` or an off-word (``0``, ``false``, ``off``, ``no``, ``none``) turns it off; ``True``, an
    on-word or nothing means the default path; anything else is a file path.
    """
    if setting is None:
        setting = os.environ.get(ENV)
        if setting is None:
            return default_path()
    if isinstance(setting, bool):
        return default_path() if setting else None
    if isinstance(setting, str) and setting.strip().lower() in OFF:
        return None
    if isinstance(setting, str) and setting.strip().lower() in ON:
        return default_path()
    if not isinstance(setting, str | os.PathLike):
        raise ValueError(f"registry must be True, False or a path, got {setting!r}")
    return Path(os.path.expanduser(os.fspath(setting)))


class Registry:
    """A handle on the registry file; each call opens a short-lived connection (process- and fork-safe)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @classmethod
    def open(cls, setting: bool | str | os.PathLike | None = None) -> Registry | None:
        """The registry that ``setting`` (or ``WATTWISE_REGISTRY``) names, or None when it is off."""
        path = resolve_path(setting)
        return cls(path) if path is not None else None

    def _connect(self) -> sqlite3.Connection:
        """A connection for writing: the file (and its directory) created if need be, WAL mode set and
        the schema brought up to date. RegistryError naming the file when it cannot be used."""
        import sqlite3

        if self.path.is_dir():
            raise RegistryError(f"registry {self.path}: a directory is at its path, not a registry file")
        conn = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")  # persistent: set once, by the first writer
            conn.execute("PRAGMA synchronous = NORMAL")
            if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                self._create_schema(conn)
        except (sqlite3.Error, OSError) as exc:
            if conn is not None:
                conn.close()
            raise RegistryError(f"registry {self.path}: {_why(exc)}") from exc
        return conn

    @staticmethod
    def _create_schema(conn: sqlite3.Connection) -> None:
        columns = ", ".join(f"{name} {kind}" for name, kind in _COLUMNS)
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(f"CREATE TABLE IF NOT EXISTS runs ({columns})")
            present = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
            for name, kind in _COLUMNS:  # a file written by an older version gains the new columns
                if name not in present:
                    conn.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")
            conn.execute("CREATE INDEX IF NOT EXISTS runs_by_hardware ON runs (hardware_kind, hardware)")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _reader(self) -> sqlite3.Connection | None:
        """A read-only connection (no WAL pragma, no schema change: a read-only file still lists and
        calibrates), or None when there is no run to read (no file, an empty one). RegistryError
        naming the file when it is a directory, not a database, or not a run registry."""
        import sqlite3

        if not self.path.exists():
            return None
        if self.path.is_dir():
            raise RegistryError(f"registry {self.path}: a directory is at its path, not a registry file")
        uri = f"file:{urllib.parse.quote(os.path.abspath(self.path))}?mode=ro"
        first: Exception | None = None
        # immutable: a WAL file in a directory this process cannot write (no -shm can be made there)
        for options in ("", "&immutable=1"):
            conn = None
            try:
                conn = sqlite3.connect(uri + options, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
                conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
                tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            except sqlite3.OperationalError as exc:  # cannot open: try once more without locking
                if conn is not None:
                    conn.close()
                first = first or exc
                continue
            except sqlite3.Error as exc:
                if conn is not None:
                    conn.close()
                raise RegistryError(f"registry {self.path}: not a run registry ({_why(exc)})") from exc
            if "runs" in tables:
                return conn
            conn.close()
            if not tables:
                return None  # a database nothing was recorded in yet
            raise RegistryError(f"registry {self.path}: not a run registry (a database without a runs table)")
        raise RegistryError(f"registry {self.path}: cannot be read ({_why(first)})") from first

    def _select(self, sql: str, args: Sequence[Any]) -> list[RunRecord]:
        import sqlite3

        conn = self._reader()
        if conn is None:
            return []
        try:
            conn.row_factory = _row_factory
            return conn.execute(sql, args).fetchall()
        except (sqlite3.Error, ValueError, TypeError) as exc:  # a damaged page or row
            raise RegistryError(f"registry {self.path}: cannot be read ({_why(exc)})") from exc
        finally:
            conn.close()

    def record(self, report: RunReport, *, params: int | None = None, tokens: float | None = None,
               output_dir: str | os.PathLike | None = None, precision: str | None = None) -> RunRecord:
        """Write one run (a second write of the same ``run_id`` replaces it); returns what was written."""
        row = record_from_report(report, params=params, tokens=tokens, output_dir=output_dir, precision=precision)
        names = [name for name, _ in _COLUMNS]
        values = [getattr(row, name) for name in names]
        values[names.index("by_phase")] = json.dumps(row.by_phase)
        values[names.index("partial")] = int(row.partial)
        values[names.index("stopped_by_budget")] = int(row.stopped_by_budget)
        import sqlite3

        conn = self._connect()
        try:
            with conn:  # one short transaction
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(
                    f"INSERT OR REPLACE INTO runs ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})",
                    values,
                )
        except sqlite3.Error as exc:
            raise RegistryError(f"registry {self.path}: {_why(exc)}") from exc
        finally:
            conn.close()
        return row

    def runs(self, *, limit: int | None = None, hardware_kind: str | None = None,
             complete_only: bool = False) -> list[RunRecord]:
        """Recorded runs, newest first; ``complete_only`` leaves out partial (interrupted) runs and runs
        stopped by their budget."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
            raise ValueError(f"limit must be a whole number > 0, got {limit!r}")
        if not self.path.exists():
            return []
        where, args = [], []
        if hardware_kind is not None:
            where.append("hardware_kind = ?")
            args.append(hardware_kind)
        if complete_only:
            where.append("partial = 0")
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY recorded_at DESC, rowid DESC" + (f" LIMIT {limit}" if limit and not complete_only else "")
        runs = self._select(sql, args)
        if complete_only:  # in Python: a file from before the column still reads (read-only, unmigrated)
            runs = [r for r in runs if not r.stopped_by_budget][:limit]
        return runs

    def find(self, run_id: str) -> list[RunRecord]:
        """The runs whose ``run_id`` is ``run_id`` or starts with it (any case), newest first: one when
        it names a run, none when unknown, several when a prefix is ambiguous."""
        run_id = run_id.strip().lower()
        if not run_id:
            return []
        found = self._select(
            "SELECT * FROM runs WHERE lower(substr(run_id, 1, ?)) = ? ORDER BY recorded_at DESC, rowid DESC",
            (len(run_id), run_id),
        )
        exact = [r for r in found if r.run_id.lower() == run_id]
        return exact or found


class RegistryError(ValueError):
    """The registry file cannot be used (not a database, a directory at its path, unreadable); the
    message names the file."""


def _why(exc: BaseException | None) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


_RECORD_FIELDS = frozenset(f.name for f in dataclasses.fields(RunRecord))


def _row_factory(cursor: sqlite3.Cursor, row: tuple) -> RunRecord:
    # columns a newer version added are left out: its file still lists
    data = {d[0]: value for d, value in zip(cursor.description, row, strict=True) if d[0] in _RECORD_FIELDS}
    data["by_phase"] = json.loads(data["by_phase"] or "{}")
    data["partial"] = bool(data["partial"])
    data["stopped_by_budget"] = bool(data.get("stopped_by_budget") or False)
    return RunRecord(**data)


def record_from_report(report: RunReport, *, params: int | None = None, tokens: float | None = None,
                       output_dir: str | os.PathLike | None = None, precision: str | None = None) -> RunRecord:
    """What the registry keeps of a report: the hardware that did the work and what calibration needs."""
    gpus = [c for c in report.by_component.values() if c.kind == "gpu"]
    if gpus:
        names = sorted({c.detail.split(",")[0].strip() or c.name for c in gpus})
        hardware, kind, devices = " + ".join(names), "gpu", len(gpus)
        device_energy_j = sum(c.energy_j for c in gpus)
    else:
        hardware = str(report.hardware.get("cpu_model") or "unknown CPU")
        kind, devices = "cpu", int(report.hardware.get("cpu_count") or 1)
        device_energy_j = sum(c.energy_j for c in report.by_component.values() if c.kind == "cpu")
    train = report.by_phase.get("train")
    samples = train.samples if train is not None and train.samples else None
    return RunRecord(
        run_id=report.run_id,
        recorded_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds"),
        started_at=report.started_at, framework=report.framework, project_name=report.project_name,
        hardware=hardware, hardware_kind=kind, devices=devices, cpu_model=report.hardware.get("cpu_model"),
        params=int(params) if params else None, tokens=float(tokens) if tokens else None,
        samples=float(samples) if samples else None,
        train_steps=report.train_steps, planned_steps=report.planned_steps,
        energy_j=report.energy_j, device_energy_j=device_energy_j, duration_s=report.duration_s,
        train_energy_j=train.energy_j if train is not None else None,
        train_duration_s=train.duration_s if train is not None else None,
        emissions_kg=report.emissions_kg,
        by_phase={name: {"energy_j": p.energy_j, "duration_s": p.duration_s, "steps": p.steps,
                         "passes": p.passes, "samples": p.samples} for name, p in report.by_phase.items()},
        output_dir=os.path.abspath(output_dir) if output_dir is not None else None,  # found from any directory
        partial=bool(report.partial),
        precision=precision,
        stopped_by_budget=report.budget.get("stopped_at_step") is not None,
    )


def format_runs(records: list[RunRecord]) -> str:
    """A readable table of runs, with units in the headers; the last column is each run's directory
    (``report.json`` and the other files; ``~`` for the home directory, ``-`` when none was written)."""
    from .carbon import J_PER_KWH

    head = ["started (UTC)", "framework", "hardware", "precision", "params", "work", "steps", "energy kWh", "time s",
            "CO2e g", "status", "run_id", "directory"]
    rows = []
    for r in records:
        work = f"{r.tokens:.3g} tokens" if r.tokens else f"{r.samples:.3g} samples" if r.samples else "-"
        rows.append([
            (r.started_at or r.recorded_at)[:19].replace("T", " "), r.framework or "-",
            f"{r.hardware}" + (f" x{r.devices}" if r.hardware_kind == "gpu" and r.devices > 1 else ""),
            r.precision or "-",
            f"{r.params:.3g}" if r.params else "-", work, str(r.train_steps or 0),
            f"{r.energy_j / J_PER_KWH:.4g}", f"{r.duration_s:.1f}",
            f"{1000 * r.emissions_kg:.3g}" if r.emissions_kg is not None else "-",
            r.status, r.run_id[:8], _short_path(r.output_dir),
        ])
    if not rows:
        return "no runs recorded"
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def _short_path(path: str | None) -> str:
    """``path`` with the home directory written ``~``; ``-`` for none."""
    if not path:
        return "-"
    home = os.path.expanduser("~")
    if home not in ("", "~", os.sep) and (path == home or path.startswith(home + os.sep)):
        return "~" + path[len(home):]
    return path
