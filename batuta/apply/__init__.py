"""Apply: make what runs match the manifest (``execute``), again on every edit (``watch``).

The ``.batuta/`` state files and the apply lock are the runtime's record
(:mod:`batuta.runtime.state`). This package imports nothing eagerly; the names below load
on first use::

    from batuta.apply import apply
    result = apply("batuta.yaml")        # ApplyResult: added, changed, destroyed, ...
    destroy("batuta.yaml")               # DestroyResult: what `batuta down` stopped
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batuta.apply.execute import ApplyFailed, ApplyResult, apply, apply_loaded
    from batuta.apply.teardown import DestroyResult, destroy
    from batuta.apply.watch import WatchLoop

# (``watch`` the function stays in batuta.apply.watch: the name is that submodule's.)
__all__ = [
    "ApplyFailed",
    "ApplyResult",
    "DestroyResult",
    "WatchLoop",
    "apply",
    "apply_loaded",
    "destroy",
]

_WHERE = {
    "ApplyFailed": "batuta.apply.execute",
    "ApplyResult": "batuta.apply.execute",
    "apply": "batuta.apply.execute",
    "apply_loaded": "batuta.apply.execute",
    "WatchLoop": "batuta.apply.watch",
    "DestroyResult": "batuta.apply.teardown",
    "destroy": "batuta.apply.teardown",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
