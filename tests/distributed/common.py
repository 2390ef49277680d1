"""What the HF and Lightning workers share: the node's fake RAPL counters and the callback's options."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for fakes.py
from fakes import PowercapTree, advance_rapl  # noqa: E402

PACKAGE_J = 3.0  # per training step, on the node's package counter
DRAM_J = 1.0  # and on its DRAM counter


def node_root(out: Path) -> Path:
    """The node's powercap root (``/sys/class/powercap`` of the fake sysfs under ``out/node``)."""
    return out / "node" / "class" / "powercap"


def make_node_tree(out: Path) -> Path:
    """Lay out the node's fake sysfs (the real powercap layout): one package and its DRAM."""
    tree = PowercapTree(out / "node")
    tree.zone("intel-rapl:0", "package-0")
    tree.zone("intel-rapl:0:0", "dram")
    return tree.root


def advance_node(root: Path) -> None:
    """One training step's worth of the node's counters (both processes' work on the node)."""
    advance_rapl(root, "intel-rapl:0", PACKAGE_J)
    advance_rapl(root, "intel-rapl:0:0", DRAM_J)


def callback_options(budget_kwh: float | None) -> dict[str, Any]:
    options: dict[str, Any] = dict(
        sources=("rapl", "cpu", "ram"), country_iso_code="FRA", window_s=0.05, print_summary=False
    )
    if budget_kwh is not None:
        options.update(budget_kwh=budget_kwh, on_budget="stop")
    return options
