"""The shape the run-lifecycle design promises: one signature for every entry point, no import
cycle among core modules, no class grown past ~300 lines, thin adapters."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import wattwise
from wattwise.config import Config
from wattwise.options import Options

ROOT = Path(__file__).resolve().parents[1]


def test_every_entry_point_takes_the_one_explicit_signature():
    from wattwise.integrations.keras import EnergyCallback as KerasCallback
    from wattwise.integrations.lightning import EnergyCallback as LightningCallback
    from wattwise.integrations.transformers import EnergyCallback as HFCallback

    expected = inspect.signature(Options.__init__)
    assert all(p.kind is p.KEYWORD_ONLY for name, p in expected.parameters.items() if name != "self")
    for entry in (wattwise.track, HFCallback, LightningCallback, KerasCallback):
        assert inspect.signature(entry.__init__) == expected, entry
    options = set(expected.parameters) - {"self", "planned_steps"}
    assert options == {f.name for f in dataclasses.fields(Config)}  # every setting, and nothing else


def _core_imports() -> dict[str, set[str]]:
    """Each core module and the core modules it imports, at top level or inside functions
    (``TYPE_CHECKING`` imports are for annotations only and are left out)."""
    graph: dict[str, set[str]] = {}
    for path in (ROOT / "core").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT / "core").with_suffix("").parts)
        package = module.rsplit(".", 1)[0] if path.name != "__init__.py" and "." in module else (
            module.removesuffix(".__init__") if path.name == "__init__.py" else "")
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and getattr(node.test, "id", "") == "TYPE_CHECKING" for n in ast.walk(node)}
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level and id(node) not in typing_only:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                name = ".".join([*base, node.module]) if node.module else ".".join(base)
                targets.add(name)
                if not node.module:
                    targets.update(".".join([*base, alias.name]) for alias in node.names)
        graph[module.removesuffix(".__init__")] = {t for t in targets if t}
    return graph


def test_no_import_cycle_among_core_modules():
    graph = _core_imports()
    modules = set(graph)
    state: dict[str, int] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if target not in modules or target == "__init__":
                continue
            if state.get(target) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail, module, target]))
            if not state.get(target):
                visit(target, [*trail, module])
        state[module] = 2

    for module in sorted(modules):
        if not state.get(module):
            visit(module, [])
    assert {"report", "advisor", "render", "plot"} <= modules
    assert not graph["report"] & {"advisor", "render", "plot"}


def test_no_class_over_300_lines_and_thin_adapters():
    for path in [*(ROOT / "core").rglob("*.py"), *(ROOT / "integrations").glob("*.py")]:
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                assert node.end_lineno - node.lineno < 320, (path.name, node.name)
    for path in (ROOT / "integrations").glob("*.py"):
        code = [line for line in path.read_text().splitlines() if line.strip() and not line.strip().startswith("#")]
        assert len(code) < 320, path.name
