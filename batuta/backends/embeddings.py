"""OpenAI's ``POST /embeddings``, for every target whose backend embeds.

OpenAI, Together, Fireworks, vLLM, llama.cpp's llama-server (started with
``--embeddings``), LocalAI and Ollama (its ``/v1`` routes) all take OpenAI's request shape,
so one call serves them: ``{"model", "input", …}`` under the target's API base, auth in
its dialect's style. Vectors are always asked for as floats (not every server encodes
base64); a server that answers base64 anyway is decoded here. Failures are classified
BackendErrors, as for chat, so the router fails over the same way.
"""

from __future__ import annotations

import base64
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from batuta.backends import _http
from batuta.backends.types import Target
from batuta.catalogue import Dialect, lookup

# What ``input`` may be: a string, strings, or token ids (one list, or one per input).
EmbeddingInput = str | list[str] | list[int] | list[list[int]]


@dataclass(frozen=True)
class EmbeddingRequest:
    """What to embed; ``extra`` holds the fields sent as they are (``dimensions``,
    ``user``, …), left out of ``repr``."""

    input: EmbeddingInput
    extra: Mapping[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Embeddings:
    """One vector per input, in input order, and the tokens the server counted."""

    vectors: list[list[float]]
    input_tokens: int | None = None


def _floats(raw: Any, provider: str) -> list[float]:
    if isinstance(raw, str):  # base64 of little-endian float32s
        packed = base64.b64decode(raw)
        return list(struct.unpack(f"<{len(packed) // 4}f", packed))
    if isinstance(raw, list) and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in raw
    ):
        return [float(x) for x in raw]
    if isinstance(raw, list) and raw and all(isinstance(x, list) for x in raw):
        # llama-cpp-python's answer for a model without pooling: one vector per token
        raise _http.malformed(provider, "per-token embeddings (the model has no pooling)")
    raise _http.malformed(provider, "an embedding is not a list of numbers")


async def embed(
    target: Target,
    client: _http.HttpClient,
    request: EmbeddingRequest,
    *,
    first_byte_timeout: float | None = None,
    deadline: float | None = None,
) -> Embeddings:
    """Embed ``request.input`` with ``target``; a classified BackendError on failure."""
    record = lookup(target.backend)
    dialect = record.dialect if record else Dialect()
    key = os.environ.get(target.api_key_env) if target.api_key_env else None
    provider = target.name or target.backend
    body = {"model": target.model, "input": request.input, **request.extra}
    response = await _http.send(
        client,
        "POST",
        _http.api_url(target.base_url, "/embeddings"),
        provider=provider,
        headers=_http.auth_headers(target, key, dialect.auth_header),
        json_body=body,
        first_byte_timeout=first_byte_timeout,
        deadline=deadline,
        secret=key,
    )
    answer = await _http.read_answer(response, provider=provider, deadline=deadline)
    data = answer.get("data")
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise _http.malformed(provider, "embeddings answer has no data array")
    ordered = sorted(data, key=lambda d: d.get("index", 0) if isinstance(d, dict) else 0)
    vectors = [_floats(d.get("embedding"), provider) for d in ordered]
    usage = answer.get("usage")
    tokens = _http.int_or_none(usage.get("prompt_tokens")) if isinstance(usage, dict) else None
    return Embeddings(vectors, tokens)
