"""batuta: one declarative file for a whole LLM-serving setup.

The public API is re-exported here lazily, so ``import batuta`` (and the CLI's start-up)
costs nothing until a name is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> "module" or "module:attribute" (``apply`` is taken by the subpackage batuta.apply).
_EXPORTS: dict[str, str] = {
    # manifest → plan → apply → runtime → routing table → router → backends
    "load_manifest": "batuta.manifest",
    "validate_file": "batuta.manifest",
    "LoadedManifest": "batuta.manifest",
    "make_plan": "batuta.plan",
    "Plan": "batuta.plan",
    "apply_manifest": "batuta.apply.execute:apply",
    "destroy": "batuta.apply.teardown",
    "DestroyResult": "batuta.apply.teardown",
    "Runtime": "batuta.runtime",
    "start_adhoc": "batuta.runtime.adhoc",
    "pull_model": "batuta.runtime.adhoc",
    "check_health": "batuta.health",
    "HealthRow": "batuta.health",
    "RoutingTable": "batuta.routing.table",
    "read_table": "batuta.routing.table",
    "Router": "batuta.router.engine",
    "BackendSelector": "batuta.selection",
    "query": "batuta.api",
    "render_kubernetes": "batuta.render",
    "adapter_for": "batuta.backends.registry",
    "InferenceRequest": "batuta.backends.types",
    "InferenceResponse": "batuta.backends.types",
    "CATALOGUE": "batuta.catalogue",
    "ServingBackend": "batuta.catalogue",
    "BackendCapabilities": "batuta.catalogue",
    "ModelFormat": "batuta.catalogue",
    "BatutaError": "batuta.errors",
    "ManifestError": "batuta.errors",
    "BackendError": "batuta.errors",
    "RoutingError": "batuta.errors",
}

__all__ = [
    "CATALOGUE",
    "BackendCapabilities",
    "BackendError",
    "BackendSelector",
    "BatutaError",
    "DestroyResult",
    "HealthRow",
    "InferenceRequest",
    "InferenceResponse",
    "LoadedManifest",
    "ManifestError",
    "ModelFormat",
    "Plan",
    "Router",
    "RoutingError",
    "RoutingTable",
    "Runtime",
    "ServingBackend",
    "adapter_for",
    "apply_manifest",
    "check_health",
    "destroy",
    "load_manifest",
    "make_plan",
    "pull_model",
    "query",
    "read_table",
    "render_kubernetes",
    "start_adhoc",
    "validate_file",
]

if TYPE_CHECKING:
    from batuta.api import query
    from batuta.apply.execute import apply as apply_manifest
    from batuta.apply.teardown import DestroyResult, destroy
    from batuta.backends.registry import adapter_for
    from batuta.backends.types import InferenceRequest, InferenceResponse
    from batuta.catalogue import CATALOGUE, BackendCapabilities, ModelFormat, ServingBackend
    from batuta.errors import BackendError, BatutaError, ManifestError, RoutingError
    from batuta.health import HealthRow, check_health
    from batuta.manifest import LoadedManifest, load_manifest, validate_file
    from batuta.plan import Plan, make_plan
    from batuta.render import render_kubernetes
    from batuta.router.engine import Router
    from batuta.routing.table import RoutingTable, read_table
    from batuta.runtime import Runtime
    from batuta.runtime.adhoc import pull_model, start_adhoc
    from batuta.selection import BackendSelector


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'batuta' has no attribute {name!r}")
    module, _, attr = module.partition(":")
    value = getattr(importlib.import_module(module), attr or name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
