"""Local servers as processes: launch, supervise, observe, stop.

``Runtime`` (the API the rest of batuta uses) is imported on first use, so that
importing ``batuta.runtime.spec`` stays free of psutil and httpx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batuta.runtime.manager import Runtime

__all__ = ["Runtime"]


def __getattr__(name: str) -> Any:
    if name == "Runtime":
        from batuta.runtime.manager import Runtime

        return Runtime
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
