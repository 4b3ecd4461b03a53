"""The package's shape: no import cycle (function-local imports included), layers import only from below, and
one walker reads Keras' private graph."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tfcompress"

# Bottom up; a module may import from its own layer and the layers below, never from above.
LAYERS = [
    {"keras_graph", "files", "progress", "summaries", "tf_startup"},
    {"specs"},
    {"graph"},
    {"training", "data", "zoo"},
    {"pruning", "quantization", "scaling", "distill", "resolution"},
    {"runtime", "profile", "micronet", "export", "report", "plots", "latency", "quantization.scoring"},
    {"decomposition"},  # a technique whose latency-led search exports and measures its candidates
    {"pipeline"},
    {"cli", ""},  # "": the top package, which imports everything for users
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """tfcompress modules imported anywhere in the file (function bodies included)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import: climb from this module's package
                parents = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parents, base] if base else parents)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else base)
    return {module for module in found if module in modules and module != name}


@functools.cache
def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items() if name != "tfcompress"}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for child in sorted(graph.get(module, ())):
            if state.get(child) == 1:
                return [*stack[stack.index(child):], child]
            if child not in state and (found := visit(child)):
                return found
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_no_import_cycle_even_through_function_local_imports():
    cycle = _cycle(_graph())
    assert cycle is None, " → ".join(cycle)


def _layer(module: str) -> int:
    """The layer of the longest listed prefix of ``module`` (``quantization.scoring`` before ``quantization``)."""
    parts = module.split(".")[1:]
    for length in range(len(parts), -1, -1):
        prefix = ".".join(parts[:length])
        for index, names in enumerate(LAYERS):
            if prefix in names:
                return index
    raise AssertionError(f"{module} is in no layer of LAYERS")


@pytest.mark.parametrize("module", sorted(_graph()))
def test_modules_import_only_from_their_layer_or_below(module):
    above = {child for child in _graph()[module] if _layer(child) > _layer(module)}
    assert not above, f"{module} (layer {_layer(module)}) imports from above: {sorted(above)}"


def test_one_walker_reads_keras_private_graph():
    readers = [name for name, path in _modules().items() if "_nodes_by_depth" in path.read_text()]
    assert readers == ["tfcompress.keras_graph.walk"]
