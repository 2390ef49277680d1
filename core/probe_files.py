"""Where a probe's result goes: ``probe.json`` and ``probe.png`` under ``<output_dir>/wattwise/``, and
the probe store beside the run registry (``probe_store.py``), for the advisor.

Example::

    >>> keep(result, write=True, output_dir="runs/hf", registry=None)   # what Prober does at the end
    >>> result.output_dir                                                # "runs/hf/wattwise"

The files sit next to a run's (``report.json``...) without claiming the directory: the training run
that follows the probe still writes to ``<output_dir>/wattwise/``. A second probe into the same
directory in one process writes ``probe-2.json`` and ``probe-2.png``. A file that cannot be written
is a note in ``result.notes``, never an error.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .probe_result import ProbeResult

_written: dict[str, int] = {}  # directory -> probes this process wrote there
_lock = threading.Lock()


def keep(result: ProbeResult, *, write: bool, output_dir: str | os.PathLike,
         registry: bool | str | os.PathLike | None) -> None:
    """Write ``result``'s files (``write``) and keep it in the probe store (unless ``registry=False``)."""
    if write:
        _write_files(result, Path(output_dir) / "wattwise")
    from .probe_store import save

    try:
        save(result, registry)
    except Exception as exc:
        result.notes.append(f"the probe was not kept for the advisor ({type(exc).__name__}: {exc})")


def _write_files(result: ProbeResult, directory: Path) -> None:
    with _lock:
        n = _written.get(os.path.abspath(directory), 0) + 1
        _written[os.path.abspath(directory)] = n
    stem = "probe" if n == 1 else f"probe-{n}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        result.output_dir = str(directory)
        result.write_json(directory / f"{stem}.json")
    except Exception as exc:
        result.notes.append(f"could not write {stem}.json in {directory} ({type(exc).__name__}: {exc})")
        return
    try:
        from .probe_render import write_png

        write_png(result, directory / f"{stem}.png")
    except Exception as exc:  # no matplotlib, a full disk: the JSON is there
        result.notes.append(f"could not write {stem}.png in {directory} ({type(exc).__name__}: {exc})")
