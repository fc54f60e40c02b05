"""Imports flow down the layers: no module of batuta imports one from a layer above its own.

Every import of the package is walked: at module level, inside functions, under
``TYPE_CHECKING`` (a type is a dependency too) and relative ones. The order is written
once, here, with no exceptions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import batuta

PACKAGE = Path(batuta.__file__).parent

# The layers, top to bottom: a layer may import itself and the layers listed for it.
# A layer is a subpackage or top-level module of batuta (``batuta/__init__.py`` and
# ``batuta/api.py`` are the api).
# Modules that belong to another layer's name: the plugin loader fills the catalogue.
_PART_OF = {"plugins": "catalogue"}
_BELOW_DATA_PATH = {"selection", "catalogue", "errors", "_util"}
ALLOWED: dict[str, frozenset[str]] = {
    "api": frozenset({"render", "benchmark", "gateway", "health", "apply", "plan", "runtime"})
    | {"router"}
    | {"routing", "backends", "manifest"}
    | _BELOW_DATA_PATH,
    "cli": frozenset(
        {"api", "render", "benchmark", "gateway", "health", "apply", "plan", "runtime", "router"}
    )
    | {"routing", "backends", "manifest"}
    | _BELOW_DATA_PATH,
    "benchmark": frozenset({"router", "routing", "runtime", "manifest", "backends"})
    | _BELOW_DATA_PATH,
    "health": frozenset({"router", "routing", "runtime", "manifest", "backends"})
    | _BELOW_DATA_PATH,
    "gateway": frozenset({"router", "routing", "runtime", "manifest", "backends"})
    | _BELOW_DATA_PATH,  # to come: an HTTP front for the routes
    # A Kubernetes deployment of the manifest: launch recipes, config hash, routing table.
    "render": frozenset({"runtime", "routing", "manifest"}) | _BELOW_DATA_PATH,
    "apply": frozenset({"plan", "runtime", "routing", "manifest"}) | _BELOW_DATA_PATH,
    "plan": frozenset({"runtime", "routing", "manifest"}) | _BELOW_DATA_PATH,
    "runtime": frozenset({"manifest"}) | _BELOW_DATA_PATH,
    "router": frozenset({"backends", "routing"}) | _BELOW_DATA_PATH,
    "routing": frozenset({"manifest"}) | _BELOW_DATA_PATH,
    "backends": frozenset(_BELOW_DATA_PATH),
    "manifest": frozenset(_BELOW_DATA_PATH),
    "selection": frozenset({"catalogue", "errors", "_util"}),
    "catalogue": frozenset({"errors", "_util"}),
    "errors": frozenset(),
    "_util": frozenset(),
}


def layer_of(module: str) -> str:
    """``batuta.x.y`` -> ``x``; ``batuta`` and ``batuta.api`` -> ``api``."""
    parts = module.split(".")
    name = "api" if len(parts) == 1 or parts[1] == "api" else parts[1]
    return _PART_OF.get(name, name)


def module_of(path: Path) -> tuple[str, bool]:
    """The dotted name of a file of the package, and whether it is a package's __init__."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def imports_in(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, module imported) for every import of a batuta module in ``source``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                base = module.split(".")[: None if is_package else -1]
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            if target == "batuta":  # from batuta import x: the module imported is x
                found += [(node.lineno, f"batuta.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, target))
    return [(line, name) for line, name in found if name.split(".")[0] == "batuta"]


def upward_imports() -> list[str]:
    bad: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module, is_package = module_of(path)
        layer = layer_of(module)
        for line, target in imports_in(path.read_text(encoding="utf-8"), module, is_package):
            other = layer_of(target)
            if other != layer and other not in ALLOWED[layer]:
                where = path.relative_to(PACKAGE.parent)
                bad.append(f"{where}:{line}: {layer} imports {target} (layer {other})")
    return bad


def test_every_module_is_in_a_layer() -> None:
    layers = {layer_of(module_of(path)[0]) for path in PACKAGE.rglob("*.py")}
    assert layers <= set(ALLOWED), sorted(layers - set(ALLOWED))


def test_the_order_has_no_cycle() -> None:
    # Following "may import" from any layer never comes back to it: a strict order.
    def below(start: str) -> set[str]:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for lower in ALLOWED[todo.pop()] - seen:
                seen.add(lower)
                todo.append(lower)
        return seen

    assert [layer for layer in ALLOWED if layer in below(layer)] == []
    assert below("cli") == set(ALLOWED) - {"cli"}
    assert below("manifest") == {"selection", "catalogue", "errors", "_util"}


def test_imports_only_flow_down() -> None:
    assert upward_imports() == []


def test_the_walk_finds_imports_wherever_they_hide() -> None:
    source = """
from __future__ import annotations
from typing import TYPE_CHECKING
import batuta.errors
from . import watch
from ..runtime.spec import ServerSpec
if TYPE_CHECKING:
    from batuta.router.engine import Router
def late() -> None:
    from batuta import cli
    import json
"""
    found = imports_in(source, "batuta.apply.execute", is_package=False)
    assert sorted(found) == [
        (4, "batuta.errors"),
        (5, "batuta.apply"),
        (6, "batuta.runtime.spec"),
        (8, "batuta.router.engine"),
        (10, "batuta.cli"),
    ]
    upward = {layer_of(name) for _, name in found} - ALLOWED["apply"] - {"apply"}
    assert upward == {"router", "cli"}
    assert imports_in("from . import x\n", "batuta.apply", is_package=True) == [(1, "batuta.apply")]
