"""Whether a target can honour what a request asks beyond the neutral request.

A request carrying pass-through fields (``InferenceRequest.extra``: ``tools``,
``response_format``, …) is sent only to targets whose catalogue record lists them in
``BackendCapabilities.passthrough``; the others are skipped, as an open circuit is, so
the route goes on to one that can. An embeddings call goes only to targets that embed.
"""

from __future__ import annotations

from batuta._util import passthrough
from batuta._util.options import flag
from batuta.backends.types import InferenceRequest, Target
from batuta.catalogue import lookup


def refused_fields(request: InferenceRequest, target: Target) -> list[str]:
    """The request's pass-through fields ``target`` would not honour (none: it may go)."""
    if not request.extra:
        return []
    record = lookup(target.backend)
    fields = record.capabilities.passthrough if record is not None else frozenset()
    return passthrough.unhonoured(fields, request.extra)


def skip_reason(request: InferenceRequest, target: Target) -> str | None:
    """Why ``target`` is skipped for ``request``'s pass-through fields, if it is."""
    refused = refused_fields(request, target)
    if not refused:
        return None
    return f"{target.backend} does not take {', '.join(refused)}"


def embeds(target: Target) -> bool:
    """Whether ``target`` answers OpenAI's ``/embeddings``: its backend embeds and speaks
    that route (OpenAI-protocol servers and APIs, Ollama's ``/v1``), and a local server
    whose engine needs a switch for it (llama.cpp: llama-server answers 501 without
    ``--embeddings``) was started with it: ``embeddings: true``, which routing passes on
    as the ``embeddings`` option."""
    record = lookup(target.backend)
    if record is None or not record.capabilities.embeddings:
        return False
    if record.protocol not in ("openai", "ollama"):
        return False
    if target.local and any(recipe.embeddings_argv for recipe in record.launch):
        return flag(target.options, "embeddings")
    return True
