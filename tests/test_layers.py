"""The package's layers run one way (DESIGN.md): core ← transforms ← families ← objectives ←
fit ← infer / numpyro / cli, with leaves (networks, schedules, data, metrics, distributed
collectives, random state, the guarded step) that import nothing of the package. Read off
the source's imports, lazy ones included; no exception list."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pyro_xform

ROOT = Path(pyro_xform.__file__).parent
LEAVES = {"nn", "schedules", "datasets", "metrics", "distributed", "rng", "descent"}
#: The layer of each top-level module or package; a module imports only lower layers or leaves.
LAYERS = {
    "core": 0,
    "transforms": 1,
    "families": 2,
    "checkpoint": 3,
    "objectives": 3,
    "fit": 4,
    "two_stage": 5,
    "infer": 5,
    "numpyro": 6,
    "cli": 6,
    "__main__": 7,
    "__init__": 7,
}


def _unit(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return parts[0]


def _imports(path: Path) -> set[str]:
    """The package's top-level units that ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = path.relative_to(ROOT).parent.parts
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            target = (*base, *(node.module.split(".") if node.module else ()))
            if target:
                found.add(target[0])
            else:  # from . import x, y at the package root
                found.update(alias.name for alias in node.names)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            found.update(n.split(".")[1] for n in names if n and n.startswith("pyro_xform."))
    return found - {_unit(path)}


MODULES = sorted(p for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_unit_has_a_layer():
    units = {_unit(p) for p in MODULES}
    assert units <= LEAVES | set(LAYERS), units - LEAVES - set(LAYERS)


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(ROOT)) for p in MODULES])
def test_imports_run_down_the_layers(path):
    unit = _unit(path)
    for imported in _imports(path):
        assert unit not in LEAVES, f"{path.relative_to(ROOT)} is a leaf but imports {imported}"
        if imported in LEAVES:
            continue
        assert LAYERS[imported] < LAYERS[unit] or (unit == "__init__"), (
            f"{path.relative_to(ROOT)} (layer {LAYERS[unit]}) imports {imported} (layer {LAYERS[imported]})"
        )


def test_no_private_name_crosses_a_package():
    for path in MODULES:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            ours = isinstance(node, ast.ImportFrom) and (
                node.level or (node.module or "").startswith("pyro_xform")
            )
            if ours:
                private = [a.name for a in node.names if a.name.startswith("_") and a.name != "__version__"]
                assert not private, f"{path.relative_to(ROOT)} imports private {private} from {node.module}"
