"""The gateway block read alone from a JSON file (``batuta gateway --gateway-config FILE``).

A cluster's gateway reads no manifest: ``batuta render kubernetes`` writes the manifest's
``gateway:`` block (keys by their variables' names, budgets, rates, what is recorded) next
to the routing table, and the gateway takes it instead of a manifest's. It is checked by
the same model as the manifest's block, so a file the manifest would not accept is refused
with the file and the field named, never the value found there (it could be a key).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from batuta.gateway.errors import GatewaySetupError

if TYPE_CHECKING:
    from batuta.manifest.gateway import Gateway as GatewayBlock

OPTION = "--gateway-config"


def read_gateway_config(path: Path) -> GatewayBlock:
    """The ``Gateway`` block in ``path``; a GatewaySetupError naming the file and each wrong
    field when it cannot be read or is not a valid block."""
    from pydantic import ValidationError

    from batuta.manifest.gateway import Gateway as GatewayBlock

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise GatewaySetupError(f"{OPTION}: cannot read {path}: {why}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise GatewaySetupError(
            f"{path}:{exc.lineno}: {OPTION}: not JSON ({exc.msg}, column {exc.colno})"
        ) from None
    try:
        return GatewayBlock.model_validate(data)
    except ValidationError as exc:
        # The messages only: pydantic's ``input`` is the value itself, which may be a key.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(the file)'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False)
        )
        raise GatewaySetupError(f"{path}: {OPTION}: not a gateway block: {problems}") from None
