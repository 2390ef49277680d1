"""Closed measurement windows: their rows in ``steps.csv`` and the report's bounded timeline.

Example::

    >>> from wattwise.windows import StepsCsv, Timeline, Window
    >>> timeline = Timeline(["cpu", "ram"])
    >>> timeline.add(start_s=0.0, duration_s=0.5, deltas=[4.0, 0.5], phase="train")
    >>> timeline.points()            # at most TIMELINE_POINTS, however long the run
    [{'t_s': 0.0, 'duration_s': 0.5, 'phase': 'train', 'cpu': 4.0, 'ram': 0.5}]
    >>> rows = StepsCsv.open("out/wattwise/steps.csv", ["cpu", "ram"])   # raises OSError if it cannot
    >>> rows.write(Window("train", global_step=10, steps=10, start_s=0.0, duration_s=0.5, deltas=[4.0, 0.5]))
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

TIMELINE_POINTS = 512
STEPS_CSV_COLUMNS = ["window", "phase", "global_step", "steps", "start_s", "duration_s", "energy_j", "power_w", "step_j"]


@dataclass
class Window:
    """A closed window: its phase, the global step it ended at, its steps, and joules per component."""

    phase: str
    global_step: int
    steps: int
    start_s: float
    duration_s: float
    deltas: list[float]

    def absorb(self, later: Window) -> None:
        """Take in the window right after this one (a step-less window joins the one before it)."""
        self.global_step = later.global_step
        self.steps += later.steps
        self.duration_s += later.duration_s
        self.deltas = [a + b for a, b in zip(self.deltas, later.deltas, strict=True)]


class Timeline:
    """At most ``TIMELINE_POINTS`` evenly spaced points of power by component: when full, pairs are
    merged and every later point covers twice as many windows (memory bounded however long the run)."""

    def __init__(self, components: Sequence[str], max_points: int = TIMELINE_POINTS) -> None:
        self._components = list(components)
        self._max_points = max_points
        self._points: list[dict[str, float | str]] = []
        self._stride = 1
        self._pending: dict[str, float | str] | None = None
        self._pending_windows = 0

    def __len__(self) -> int:
        return len(self._points)

    def add(self, *, start_s: float, duration_s: float, deltas: Sequence[float], phase: str) -> None:
        point: dict[str, float | str] = {"t_s": start_s, "duration_s": duration_s, "phase": phase}
        point.update(zip(self._components, deltas, strict=True))
        self._pending = point if self._pending is None else _merge_points(self._pending, point)
        self._pending_windows += 1
        if self._pending_windows < self._stride:
            return
        self._points.append(self._pending)
        self._pending, self._pending_windows = None, 0
        if len(self._points) >= self._max_points:
            pairs = zip(self._points[0::2], self._points[1::2], strict=False)
            self._points = [_merge_points(a, b) for a, b in pairs]
            self._stride *= 2

    def points(self) -> list[dict[str, float | str]]:
        """The points so far, the partly filled last one included."""
        return list(self._points) + ([dict(self._pending)] if self._pending else [])


class StepsCsv:
    """``steps.csv``: one row per window, flushed as the run goes, so an interrupted run keeps them.

    Each row is written whole or not at all: it is formatted first, written in one unbuffered write
    (continued after a short write), and when the file cannot take all of it (a full disk) the file
    is cut back to the end of the last whole row before the error is raised."""

    def __init__(self, file) -> None:
        self._file = file  # a binary file, unbuffered: what write() returns is on the disk
        self._rows = 0
        self._size = 0  # bytes of whole rows (the header included)

    @classmethod
    def open(cls, path: str | os.PathLike, components: Sequence[str]) -> StepsCsv:
        """A new ``steps.csv`` at ``path`` with its header; raises OSError (and leaves no file) if it cannot."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        steps = cls(open(path, "wb", buffering=0))  # noqa: SIM115  (open for the whole run, closed by close())
        try:
            steps._append(STEPS_CSV_COLUMNS + [f"{name}_j" for name in components])
        except BaseException:
            steps.close()
            with contextlib.suppress(OSError):
                path.unlink()
            raise
        return steps

    @property
    def rows(self) -> int:
        """Whole rows written, the header left out."""
        return self._rows

    def write(self, window: Window) -> None:
        """Append ``window``'s row; raises OSError/ValueError when the file cannot take it (whole)."""
        energy_j = sum(window.deltas)
        power_w = energy_j / window.duration_s if window.duration_s > 0 else 0.0
        step_j = repr(energy_j / window.steps) if window.steps else ""
        self._append(
            [self._rows + 1, window.phase, window.global_step, window.steps, f"{window.start_s:.4f}",
             f"{window.duration_s:.4f}", repr(energy_j), f"{power_w:.3f}", step_j]
            + [repr(d) for d in window.deltas]
        )
        self._rows += 1

    def _append(self, cells: list) -> None:
        text = io.StringIO()
        csv.writer(text).writerow(cells)
        encoded = text.getvalue().encode("utf-8")
        data = memoryview(encoded)
        try:
            while data:
                written = self._file.write(data)
                if not written:  # no progress and no error: do not loop for ever
                    raise OSError(errno.EIO, "the file took none of the row")
                data = data[written:]
            self._file.flush()
        except BaseException:
            self._cut_back()
            raise
        self._size += len(encoded)

    def _cut_back(self) -> None:
        """Drop a partly written row: the file ends at its last whole row again."""
        with contextlib.suppress(OSError, ValueError, AttributeError):
            self._file.truncate(self._size)
            self._file.seek(self._size)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()


def _merge_points(a: dict[str, float | str], b: dict[str, float | str]) -> dict[str, float | str]:
    merged: dict[str, float | str] = dict(a)
    for key, value in b.items():
        if key in ("t_s", "phase"):
            continue
        merged[key] = float(a.get(key, 0.0)) + float(value)
    if float(b["duration_s"]) > float(a["duration_s"]):
        merged["phase"] = b["phase"]
    return merged
