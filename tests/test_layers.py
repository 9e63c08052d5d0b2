"""The package's imports point one way: each stage imports only from the stages below it, never up, and no two
sub-packages import each other (checked on the source with `ast`, imports inside functions included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGE = ROOT / "captioner"

#: The stages, bottom first: a module may import from its own stage and the ones before it.
LAYERS = (
    ("errors", "atomic"),  # modules at the package root
    ("data",),
    ("text",),
    ("features",),
    ("models",),
    ("artifacts",),
    ("decoding",),
    ("evaluation",),
    ("training",),
    ("export",),
    ("portable",),
    ("serving",),
    ("distributed",),
    ("cli",),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
FACADE = ("captioner", "captioner.__main__")  # `import captioner` and `python -m captioner`: over every stage


def stage(module: str) -> str:
    """The stage a dotted module name belongs to: `captioner.decoding.loops` → `decoding`."""
    return module.split(".")[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every captioner module `path` imports, at the top, inside functions or under TYPE_CHECKING."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from captioner import x`
    return {name for name in found if name.startswith("captioner.") and len(name.split(".")) > 1}


def package_modules() -> dict[str, set[str]]:
    """Each module of the package (less the facade) → the stages it imports from."""
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        if name not in FACADE:
            graph[name] = {stage(m) for m in imported_modules(path)}
    return graph


def test_every_stage_is_placed():
    stages = {stage(m) for m in package_modules()}
    assert stages - set(RANK) == set(), "add the new sub-package or module to LAYERS in its place"
    assert set(RANK) - stages == set(), "LAYERS names a stage that no longer exists"


def test_imports_only_point_down():
    upward = [f"{module} imports from {target} (stage {RANK[target]} > {RANK[stage(module)]})"
              for module, targets in package_modules().items() for target in sorted(targets)
              if RANK[target] > RANK[stage(module)]]
    assert upward == []


def test_no_cycles_between_stages():
    edges = {(stage(module), target) for module, targets in package_modules().items() for target in targets
             if target != stage(module)}
    cycles = sorted(f"{a} ⇄ {b}" for a, b in edges if (b, a) in edges and a < b)
    assert cycles == []


@pytest.mark.parametrize("source, expected", [
    ("from captioner.serving.api import Captioner", {"captioner.serving.api", "captioner.serving.api.Captioner"}),
    ("def f():\n    import captioner.training.run", {"captioner.training.run"}),
    ("from captioner import errors", {"captioner.errors"}),
])
def test_imports_are_found_anywhere_in_a_module(tmp_path, source, expected):
    path = tmp_path / "m.py"
    path.write_text(source)
    assert imported_modules(path) == expected
