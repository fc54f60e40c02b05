"""Anthropic Messages framing: ``POST /v1/messages`` in, a ``message`` object or its named
server-sent events out (``message_start``, ``content_block_start``, ``ping``,
``content_block_delta`` …, ``content_block_stop``, ``message_delta``, ``message_stop``).

``ping`` is also the keep-alive while the first token is awaited, as Anthropic sends it;
an error after the stream began is an ``error`` event, as Anthropic's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from batuta._util import fastjson
from batuta.backends.types import InferenceRequest, InferenceResponse, Message
from batuta.gateway import _parse
from batuta.gateway.errors import GatewayError, anthropic_body, bad_field
from batuta.gateway.ids import answer_id

_STOP = {"stop": "end_turn", "length": "max_tokens", "stop_sequence": "stop_sequence"}


@dataclass(frozen=True)
class MessagesCall:
    """A parsed ``POST /v1/messages``."""

    model: str
    request: InferenceRequest


def _system(value: Any) -> str | None:
    if value is None:
        return None
    return _parse.content_text(value, "system") or None


def parse_messages(raw: Any) -> MessagesCall:
    """The request's fields, checked as Anthropic checks them; a 400 naming the field."""
    body = _parse.as_object(raw)
    model = _parse.text(body, "model", required=True)
    assert model is not None
    if body.get("max_tokens") is None:
        raise bad_field("max_tokens", "is required")
    max_tokens = _parse.integer(body, "max_tokens")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_field("messages", "must be a non-empty list of messages")
    turns: list[Message] = []
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            raise bad_field(where, "must be an object")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise bad_field(f"{where}.role", "must be user or assistant")
        turns.append(Message(role, _parse.content_text(message.get("content"), f"{where}.content")))
    prompt, history, prefill = _parse.split_turns(turns, "messages")
    if body.get("tools"):
        raise bad_field("tools", "tool use is not supported by the gateway")
    request = InferenceRequest(
        prompt=prompt,
        system=_system(body.get("system")),
        history=history,
        assistant_prefix=prefill,
        max_tokens=max_tokens,
        temperature=_parse.number(body, "temperature", 0.0, 1.0),
        top_p=_parse.number(body, "top_p", 0.0, 1.0),
        stop=_parse.strings(body, "stop_sequences"),
        stream=_parse.flag(body, "stream"),
    )
    return MessagesCall(model, request)


def stop_reason(reason: str | None) -> str:
    return _STOP.get(reason or "stop", "end_turn")


def _usage(resp: InferenceResponse) -> dict[str, int]:
    return {"input_tokens": resp.input_tokens or 0, "output_tokens": resp.tokens_generated}


def message(model: str, resp: InferenceResponse) -> dict[str, Any]:
    """The ``message`` object of a blocking answer."""
    return {
        "id": answer_id("msg_"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": resp.text}],
        "stop_reason": stop_reason(resp.finish_reason),
        "stop_sequence": None,
        "usage": _usage(resp),
    }


def event(name: str, data: Any) -> bytes:
    """One named event."""
    return f"event: {name}\ndata: ".encode() + fastjson.dumps(data) + b"\n\n"


class MessageStream:
    """The events of one streamed answer, in order."""

    KEEPALIVE = event("ping", {"type": "ping"})

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = answer_id("msg_")

    def start(self) -> bytes:
        head: dict[str, Any] = {
            "id": self.id, "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }  # fmt: skip
        block = {"type": "content_block_start", "index": 0,
                 "content_block": {"type": "text", "text": ""}}  # fmt: skip
        return (
            event("message_start", {"type": "message_start", "message": head})
            + event("content_block_start", block)
            + self.KEEPALIVE
        )

    def text(self, piece: str) -> bytes:
        delta = {"type": "text_delta", "text": piece}
        return event(
            "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
        )

    def end(self, resp: InferenceResponse) -> bytes:
        delta = {"type": "message_delta",
                 "delta": {"stop_reason": stop_reason(resp.finish_reason), "stop_sequence": None},
                 "usage": _usage(resp)}  # fmt: skip
        return (
            event("content_block_stop", {"type": "content_block_stop", "index": 0})
            + event("message_delta", delta)
            + event("message_stop", {"type": "message_stop"})
        )

    def error(self, error: GatewayError) -> bytes:
        return event("error", anthropic_body(error))
