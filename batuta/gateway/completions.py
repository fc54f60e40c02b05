"""OpenAI's legacy Completions framing: ``POST /v1/completions`` in, ``text_completion``
objects (blocking, or one per piece of text as server-sent events, then ``data: [DONE]``) out.

The prompt is text to continue (``InferenceRequest.raw_prompt``): an OpenAI-protocol local
server gets it on its own completions route, as sent; a chat-only target (a hosted API,
Anthropic, …) gets it as one user message. One prompt per request: a string, or a list of
one string. A stream has no role chunk; its last chunk carries ``finish_reason`` and
``x_batuta``, then the usage chunk (``choices: []``) when ``stream_options.include_usage``
asks for it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from batuta.backends.types import InferenceRequest, InferenceResponse
from batuta.gateway import _parse
from batuta.gateway.errors import GatewayError, bad_field, openai_body
from batuta.gateway.ids import answer_id
from batuta.gateway.openai import event, facts, finish, usage_of

_MODELED = frozenset(
    {"model", "prompt", "max_tokens", "temperature", "top_p", "stop", "seed", "stream",
     "stream_options", "n"}
)  # fmt: skip


@dataclass(frozen=True)
class CompletionCall:
    """A parsed ``POST /v1/completions``."""

    model: str
    request: InferenceRequest
    include_usage: bool = False


def _prompt(body: dict[str, Any]) -> str:
    value = body.get("prompt")
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        raise bad_field("prompt", "one prompt per request: send a string (or a list of one)")
    if not isinstance(value, str) or not value:
        raise bad_field("prompt", "must be a non-empty string (token arrays are not supported)")
    return value


def parse_completion(raw: Any) -> CompletionCall:
    """The request's fields, checked; a 400 naming the first wrong field."""
    body = _parse.as_object(raw)
    model = _parse.text(body, "model", required=True)
    assert model is not None
    prompt = _prompt(body)
    if _parse.integer(body, "n") not in (None, 1):
        raise bad_field("n", "only one choice (n: 1) is supported")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad_field("stream_options", "must be an object")
    request = InferenceRequest(
        prompt=prompt,
        raw_prompt=True,
        max_tokens=_parse.integer(body, "max_tokens"),
        temperature=_parse.number(body, "temperature", 0.0, 2.0),
        top_p=_parse.number(body, "top_p", 0.0, 1.0),
        stop=_parse.strings(body, "stop"),
        seed=_parse.integer(body, "seed", minimum=-(2**63)),
        stream=_parse.flag(body, "stream"),
        extra=_parse.passthrough(body, _MODELED, {}),
    )
    return CompletionCall(model, request, _parse.flag(options or {}, "include_usage"))


def _choice(text: str, reason: str | None) -> dict[str, Any]:
    return {"text": text, "index": 0, "logprobs": None, "finish_reason": reason}


def text_completion(model: str, resp: InferenceResponse) -> dict[str, Any]:
    """The ``text_completion`` object of a blocking answer."""
    return {
        "id": answer_id("cmpl-"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [_choice(resp.text, finish(resp.finish_reason))],
        "usage": usage_of(resp),
    }


class TextStream:
    """The events of one streamed completion, in order."""

    KEEPALIVE = b": keep-alive\n\n"
    DONE = b"data: [DONE]\n\n"

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self.id = answer_id("cmpl-")
        self.created = int(time.time())

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return event({"id": self.id, "object": "text_completion", "created": self.created,
                      "model": self.model, "choices": choices, **extra})  # fmt: skip

    def start(self) -> bytes:
        return b""  # legacy streams open with text, not a role

    def text(self, piece: str) -> bytes:
        return self._chunk([_choice(piece, None)])

    def end(self, resp: InferenceResponse) -> bytes:
        out = self._chunk([_choice("", finish(resp.finish_reason))], x_batuta=facts(resp))
        if self.include_usage:
            out += self._chunk([], usage=usage_of(resp))
        return out + self.DONE

    def error(self, error: GatewayError) -> bytes:
        """The in-band error of a stream that had already begun."""
        return event(openai_body(error))
