"""The manifest's ``gateway:`` block in the cluster: ``gateway.json`` in the routes
ConfigMap, read by ``batuta gateway --gateway-config``, since the pod has no manifest.

It holds the keys (the *names* of their variables only, which the pod reads from the
Secret), their routes, budgets and rates, and what the gateway records. ``listen`` is left
out: the pod always listens on its own port. With keys the gateway refuses a client without
one, so it needs no ``--any-address``; without keys it is open to whatever the Service and
a NetworkPolicy let in.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from batuta.manifest import LoadedManifest

GATEWAY_FILE = "gateway.json"


def gateway_config_text(loaded: LoadedManifest) -> str:
    """The block as ``--gateway-config`` reads it (sorted keys: the same manifest gives the
    same bytes). The model holds variable names, never a key's value."""
    block = loaded.manifest.gateway.model_dump(mode="json", exclude={"listen"}, exclude_none=True)
    from batuta.render.kubernetes.redis import state_url

    if (url := state_url(loaded)) is not None:  # kubernetes.redis: the in-cluster one
        block["state"] = url
    return json.dumps(block, indent=2, sort_keys=True) + "\n"


def client_key_variables(loaded: LoadedManifest) -> list[str]:
    """The variables holding the keys clients present (``gateway.keys.*.key_env``)."""
    return sorted({key.key_env for key in loaded.manifest.gateway.keys.values()})
