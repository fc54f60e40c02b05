"""OpenAI's Embeddings framing: ``POST /v1/embeddings`` in, a ``list`` of ``embedding``
objects out.

``input`` is a string, a list of strings, or token ids (a list of integers, or one list per
input); ``encoding_format`` is ``float`` (the default) or ``base64`` (little-endian
float32s, encoded here: upstreams are always asked for floats); ``dimensions``, ``user`` and
any other field pass through unchanged. A route with no target that embeds is a 400 naming
the route.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from typing import Any

from batuta.backends.embeddings import EmbeddingInput, EmbeddingRequest
from batuta.gateway import _parse
from batuta.gateway.errors import bad_field
from batuta.gateway.select import Selected
from batuta.router.embed import Embedded, route_embeds


@dataclass(frozen=True)
class EmbeddingCall:
    """A parsed ``POST /v1/embeddings``."""

    model: str
    request: EmbeddingRequest
    base64: bool = False


def _ints(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(x, int) and not isinstance(x, bool) for x in value)
    )


def _input(body: dict[str, Any]) -> EmbeddingInput:
    value = body.get("input")
    if isinstance(value, str) and value:
        return value
    if isinstance(value, list) and value:
        if all(isinstance(v, str) and v for v in value) or _ints(value):
            return value
        if all(_ints(v) for v in value):
            return value
    raise bad_field(
        "input",
        "must be a non-empty string, a list of non-empty strings, or token ids",
    )


def parse_embeddings(raw: Any) -> EmbeddingCall:
    """The request's fields, checked; a 400 naming the first wrong field."""
    body = _parse.as_object(raw)
    model = _parse.text(body, "model", required=True)
    assert model is not None
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise bad_field("encoding_format", "must be float or base64")
    _parse.integer(body, "dimensions")
    extra = {
        k: v for k, v in body.items()
        if k not in ("model", "input", "encoding_format") and v is not None
    }  # fmt: skip
    return EmbeddingCall(model, EmbeddingRequest(_input(body), extra), encoding == "base64")


def require_embedder(selected: Selected) -> None:
    """A 400 naming the route when none of its targets embeds."""
    if not route_embeds(selected.route):
        what = "endpoint" if selected.bare else "route"
        backends = ", ".join(e.backend for e in selected.route.targets)
        raise bad_field(
            "model",
            f"no target of {what} {selected.route.name!r} serves embeddings ({backends}); a"
            " llama.cpp server needs `embeddings: true`",
        )


def _encoded(vector: list[float], as_base64: bool) -> list[float] | str:
    if not as_base64:
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def response(call: EmbeddingCall, done: Embedded) -> dict[str, Any]:
    """The ``list`` object of ``embedding`` objects, in input order."""
    data = [
        {"object": "embedding", "index": i, "embedding": _encoded(v, call.base64)}
        for i, v in enumerate(done.embeddings.vectors)
    ]
    tokens = done.embeddings.input_tokens or 0
    return {
        "object": "list",
        "data": data,
        "model": call.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
