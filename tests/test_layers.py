"""Imports go one way: a module may import its own layer and the layers below it, never above.

Every module under ``src/crema`` is parsed with ``ast`` (nothing is imported), every ``import``
statement is read, function-local ones included, and relative imports are resolved. The layer
table is the one in ``docs/INTERFACES.md`` ("Layout and import direction").
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import crema

SRC = Path(crema.__file__).resolve().parent

# Unit (a subpackage or a top-level module of crema) -> layer; a unit may import units of its own
# layer or of lower layers. Layer 0 is shared by everyone and imports nothing above it.
LAYERS: dict[str, int] = {
    "config": 0, "config_io": 0, "errors": 0, "atomic": 0, "locking": 0, "paths": 0, "runtime": 0, "precision": 0,
    "weights": 0, "flags": 0, "limits": 0, "interrupts": 0, "kernels": 0,
    "data": 1,
    "model": 2,
    "train": 3,
    "eval": 4,
    "use": 5, "viz": 5, "serve": 5, "sklearn": 5,
    "cli": 6,
    "demo": 7, "__main__": 7,  # the demo runs CLI commands; cli only names it as a plugin, by string
    "crema": 0,  # the package's __init__: __version__, and crema.load (see ALLOWED_UPWARD)
}

# The only upward imports: ``crema.load()`` hands over to ``crema.use.api`` inside the function,
# since a module-level import there would load every layer whenever any crema module is imported.
ALLOWED_UPWARD = {("crema", "crema.use.api")}


def module_name(path: Path) -> str:
    """``src/crema/eval/probe.py`` -> ``crema.eval.probe``; a package's ``__init__`` is the package."""
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    """Whether ``crema.a.b`` is a module or package under ``src/crema``."""
    path = SRC.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imported_modules(path: Path) -> list[tuple[str, int]]:
    """``(absolute module name, line)`` of every crema import in ``path``, at any depth."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # ``from PKG import x`` may name a submodule (``from .. import runtime``): then ``PKG.x``
            found += [(f"{target}.{alias.name}" if is_module(f"{target}.{alias.name}") else target, node.lineno)
                      for alias in node.names]
    return [(target, line) for target, line in found if target == "crema" or target.startswith("crema.")]


def unit(module: str) -> str:
    """The layer table's key for a module: ``crema.eval.probe`` -> ``eval``; ``crema`` -> ``crema``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "crema"


def import_edges() -> list[tuple[str, str, int]]:
    """``(importing module, imported module, line)`` for the whole package."""
    return [(module_name(path), target, line)
            for path in sorted(SRC.rglob("*.py")) for target, line in imported_modules(path)]


def test_every_unit_has_a_layer():
    units = {unit(module_name(p)) for p in SRC.rglob("*.py")}
    assert units <= set(LAYERS), f"add {sorted(units - set(LAYERS))} to LAYERS (and to docs/INTERFACES.md)"


def test_no_module_imports_a_higher_layer():
    upward = [f"{src} -> {dst} (line {line})" for src, dst, line in import_edges()
              if LAYERS[unit(dst)] > LAYERS[unit(src)] and (src, dst) not in ALLOWED_UPWARD]
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)


def test_no_cycle_between_units():
    graph: dict[str, set[str]] = defaultdict(set)
    for src, dst, _ in import_edges():
        if unit(src) != unit(dst) and (src, dst) not in ALLOWED_UPWARD:
            graph[unit(src)].add(unit(dst))
    cycles = []
    for start in sorted(graph):
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in sorted(graph[node]):
                if nxt == start:
                    cycles.append(" -> ".join(path + [start]))
                elif nxt not in path:
                    stack.append((nxt, path + [nxt]))
    assert not cycles, "import cycles between units:\n" + "\n".join(sorted(set(cycles)))


def test_the_scan_sees_function_local_and_relative_imports():
    """The scanner itself: imports inside functions, ``..`` imports and ``from PKG import module``."""
    edges = {(src, dst) for src, dst, _ in import_edges()}
    assert ("crema", "crema.use.api") in edges                      # inside crema.load()
    assert ("crema.eval.finetune", "crema.train.finetune") in edges  # from ..train.finetune import ...
    assert ("crema.eval.probe", "crema.eval.metrics") in edges       # from . import metrics
    assert ("crema.use.api", "crema") in edges                       # from .. import __version__


# Units that use trained models but never train one: they read checkpoints through ``crema.model``
# (``model.checkpoint``, ``model.registry``), so that loading a model needs no training code.
NO_TRAIN_UNITS = ("use", "viz", "serve", "sklearn")


def test_model_users_never_import_training_code():
    """``use``, ``viz``, ``serve`` and ``sklearn`` import nothing from ``crema.train``, not even
    inside a function (``eval``, the layer between them, may)."""
    found = [f"{src} -> {dst} (line {line})" for src, dst, line in import_edges()
             if unit(src) in NO_TRAIN_UNITS and unit(dst) == "train"]
    assert not found, "imports of training code where a model is only used:\n" + "\n".join(found)
    assert set(NO_TRAIN_UNITS) <= set(LAYERS)  # a renamed unit would make this test pass vacuously
