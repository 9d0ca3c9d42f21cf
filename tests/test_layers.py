"""The package's layers, checked over its import graph (lazy imports inside functions
included): no module imports a higher layer, nothing imports the public facade, the
graph has no cycle, and the numpy layers never import torch.

Lowest first: errors -> kernels -> core -> coding -> format -> numpy binding -> torch
binding -> laperm -> experiments -> cli -> the facade
(``permcodec/__init__.py``, which may import anything, lazily).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import permcodec

ROOT = Path(permcodec.__file__).resolve().parent
PACKAGE = "permcodec"

#: Module-name prefixes of each layer, lowest first.
LAYERS: list[tuple[str, ...]] = [
    ("permcodec.errors",),
    ("permcodec.kernels",),
    ("permcodec.core",),
    ("permcodec.coding",),
    ("permcodec.format",),
    ("permcodec.numpy",),
    ("permcodec.torch",),
    ("permcodec.laperm",),
    ("permcodec.experiments",),
    ("permcodec.cli",),
]
#: Layers that run on numpy alone: they must not import torch (or the GPU kernels,
#: which do).
NUMPY_ONLY = ("permcodec.core", "permcodec.coding", "permcodec.format", "permcodec.numpy")
#: Third-party imports allowed only inside these prefixes.
CONFINED = {
    "numba": ("permcodec.kernels",),
    "triton": ("permcodec.kernels.rans_triton",),
    "torch": (
        "permcodec.torch",
        "permcodec.laperm",
        "permcodec.experiments",
        "permcodec.kernels.rans_triton",
        "permcodec.cli",
    ),
}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES.get(name) is not None and MODULES[name].name == "__init__.py"


def imports_of(name: str) -> Iterator[str]:
    """Every module ``name`` imports, anywhere in its body (absolute names)."""
    path = MODULES[name]
    here = name if _is_package(name) else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield sub if sub in MODULES else target


def layer_of(name: str) -> int | None:
    for i, prefixes in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return i
    return None


GRAPH = {
    name: sorted({m for m in imports_of(name) if m == PACKAGE or m.startswith(PACKAGE + ".")})
    for name in MODULES
}


def test_every_module_belongs_to_a_layer():
    assert [m for m in MODULES if m != PACKAGE and layer_of(m) is None] == []


def test_the_top_level_holds_at_most_ten_modules():
    top = [p for p in ROOT.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()]
    assert len([p for p in top if p.name != "__init__.py"]) <= 10, sorted(p.name for p in top)


@pytest.mark.parametrize("name", [m for m in MODULES if m != PACKAGE])
def test_no_module_imports_a_higher_layer_or_the_facade(name):
    mine = layer_of(name)
    for target in GRAPH[name]:
        assert target != PACKAGE, f"{name} imports the public facade `permcodec`"
        assert layer_of(target) <= mine, f"{name} (layer {mine}) imports {target}"


def test_the_import_graph_has_no_cycle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in GRAPH.get(node, []):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in MODULES:
        if name not in state:
            visit(name, [name])


@pytest.mark.parametrize("name", list(MODULES))
def test_third_party_imports_stay_in_their_layers(name):
    for target in imports_of(name):
        top = target.split(".")[0]
        if top in CONFINED:
            allowed = CONFINED[top]
            assert any(name == p or name.startswith(p + ".") for p in allowed), (
                f"{name} imports {top}, which only {', '.join(allowed)} may"
            )
        if any(name == p or name.startswith(p + ".") for p in NUMPY_ONLY):
            assert target != "permcodec.kernels.rans_triton", f"{name} imports the GPU kernel"


def test_the_check_sees_lazy_imports():
    """An import inside a function counts: the facade's lazy torch import is seen."""
    assert "permcodec.torch" in GRAPH[PACKAGE]
    assert "permcodec.laperm" in GRAPH[PACKAGE]
