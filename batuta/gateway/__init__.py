"""``batuta gateway``: routes, retries, budgets and failover behind OpenAI- and
Anthropic-compatible HTTP endpoints (see docs/gateway.md).

``serve`` is imported on first use, so importing this package loads neither uvicorn nor
the router.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def serve(manifest: str | None = None, *, listen: str | None = None,
          state_dir: Path | None = None, **options: Any) -> None:  # fmt: skip
    """Run the gateway in the foreground; see :func:`batuta.gateway.server.serve`."""
    from batuta.gateway.server import serve as run

    run(manifest, listen=listen, state_dir=state_dir, **options)
