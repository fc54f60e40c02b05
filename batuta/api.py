"""The library's front door: the few calls a Python user needs, each one line.

::

    import batuta
    loaded = batuta.load_manifest("batuta.yaml")
    print(batuta.make_plan("batuta.yaml").summary)
    batuta.apply_manifest("batuta.yaml")
    print(batuta.query("Why is the sky blue?").text)
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from batuta._util.paths import state_dir_for

if TYPE_CHECKING:
    from batuta.backends.types import InferenceResponse


def query(
    prompt: str,
    *,
    route: str = "default",
    manifest: str | os.PathLike[str] | None = None,
    **options: Any,
) -> InferenceResponse:
    """Answer ``prompt`` through a route of the routing table that ``apply`` wrote.

    ``options`` are :class:`~batuta.backends.types.InferenceRequest` fields
    (system, max_tokens, temperature, top_p, stop, seed, stream).
    """
    from batuta.backends.types import InferenceRequest
    from batuta.router.engine import run_query
    from batuta.routing.table import read_table, table_path

    state = state_dir_for(manifest)
    path = table_path(state)
    entry = read_table(path).route(route, path)
    if "stop" in options:
        options["stop"] = tuple(options["stop"])
    return run_query(entry, InferenceRequest(prompt=prompt, **options), state_dir=state)
