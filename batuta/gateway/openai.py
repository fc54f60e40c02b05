"""OpenAI Chat Completions framing: request body in, ``chat.completion`` objects and
``chat.completion.chunk`` server-sent events out.

A stream is a role chunk, one chunk per piece of text, a chunk carrying ``finish_reason``,
the ``choices: []`` usage chunk when ``stream_options.include_usage`` asks for it, then
``data: [DONE]``. Which target answered (and after how many attempts) travels in the last
chunk as ``x_batuta`` (headers are gone by then), as Groq sends ``x_groq``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from batuta._util import fastjson
from batuta.backends.types import InferenceRequest, InferenceResponse, Message
from batuta.gateway import _parse
from batuta.gateway.errors import GatewayError, bad_field, openai_body
from batuta.gateway.ids import answer_id

_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}
# The fields parse_chat reads itself; any other is a pass-through field (batuta._util.passthrough).
_MODELED = frozenset(
    {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p",
     "stop", "seed", "stream", "stream_options", "n"}
)  # fmt: skip
_FINISH = {"stop": "stop", "length": "length", "stop_sequence": "stop", "end_turn": "stop",
           "max_tokens": "length", "content_filter": "content_filter"}  # fmt: skip


@dataclass
class ChatCall:
    """A parsed ``POST /v1/chat/completions``."""

    model: str
    request: InferenceRequest
    include_usage: bool = False


def parse_chat(raw: Any) -> ChatCall:
    """The request's fields, checked; a 400 naming the first wrong field."""
    body = _parse.as_object(raw)
    model = _parse.text(body, "model", required=True)
    assert model is not None
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_field("messages", "must be a non-empty list of messages")
    plain = _plain_chat(messages)
    if plain is not None:
        system, turns = plain
        tooled = False
    else:
        system, turns, tooled = _checked_chat(messages)
    prompt, history, prefill = _parse.split_turns(turns, "messages")
    n = _parse.integer(body, "n")
    if n not in (None, 1):
        raise bad_field("n", "only one choice (n: 1) is supported")
    max_tokens = _parse.integer(body, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = _parse.integer(body, "max_tokens")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad_field("stream_options", "must be an object")
    include_usage = _parse.flag(options or {}, "include_usage")
    request = InferenceRequest(
        prompt=prompt,
        system="\n\n".join(system) or None,
        history=history,
        assistant_prefix=prefill,
        max_tokens=max_tokens,
        temperature=_parse.number(body, "temperature", 0.0, 2.0),
        top_p=_parse.number(body, "top_p", 0.0, 1.0),
        stop=_parse.strings(body, "stop"),
        seed=_parse.integer(body, "seed", minimum=-(2**63)),
        stream=_parse.flag(body, "stream"),
        extra=_parse.passthrough(body, _MODELED, {"messages": messages} if tooled else {}),
    )
    return ChatCall(model, request, include_usage)


_PLAIN = {"user": "user", "assistant": "assistant", "system": None, "developer": None}


def _plain_chat(messages: list[Any]) -> tuple[list[str], list[Message]] | None:
    """The system texts and turns of the common chat (string contents; system, developer,
    user and assistant roles; no tool calls), read without the per-field checks; None for
    any other, which :func:`_checked_chat` reads, naming what is wrong."""
    system: list[str] = []
    turns: list[Message] = []
    for message in messages:
        if type(message) is not dict:
            return None
        content = message.get("content")
        role = message.get("role")
        if type(content) is not str or type(role) is not str or role not in _PLAIN:
            return None
        turn = _PLAIN[role]
        if turn is None:
            system.append(content)
        elif turn == "assistant" and message.get("tool_calls"):
            return None
        else:
            turns.append(Message(turn, content))
    return system, turns


def _checked_chat(messages: list[Any]) -> tuple[list[str], list[Message], bool]:
    """(system texts, turns, whether tools are in play), each message checked."""
    system: list[str] = []
    turns: list[Message] = []
    tooled = False  # a conversation with tool calls or results goes out as the client wrote it
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad_field(where, "must be an object")
        role = message.get("role")
        if not isinstance(role, str) or role not in _ROLES:  # a list would not hash
            raise bad_field(f"{where}.role", f"must be one of {', '.join(sorted(_ROLES))}")
        calls = role == "assistant" and bool(message.get("tool_calls"))
        tooled = tooled or calls or role in ("tool", "function")
        raw = message.get("content")
        content = "" if raw is None and calls else _parse.content_text(raw, f"{where}.content")
        if role in ("system", "developer"):
            system.append(content)
        else:
            # the neutral chat's view of a tool result: a user turn (for token estimates)
            turns.append(Message("assistant" if role == "assistant" else "user", content))
    return system, turns, tooled


def finish(reason: str | None) -> str:
    return _FINISH.get(reason or "stop", reason or "stop")


def usage_of(resp: InferenceResponse) -> dict[str, int]:
    prompt = resp.input_tokens or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": resp.tokens_generated,
        "total_tokens": prompt + resp.tokens_generated,
    }


def facts(resp: InferenceResponse) -> dict[str, Any]:
    """Routing facts of an answer, for ``x_batuta``."""
    return {
        "target": resp.target,
        "attempts": resp.attempts,
        "fallbacks": resp.fallbacks,
        "failed_over_from": resp.failed_over_from,
    }


def completion(model: str, resp: InferenceResponse) -> dict[str, Any]:
    """The ``chat.completion`` object of a blocking answer (its tool calls as sent)."""
    message: dict[str, Any] = {"role": "assistant", "content": resp.text}
    if resp.tool_calls:
        message = {"role": "assistant", "content": resp.text or None,
                   "tool_calls": resp.tool_calls}  # fmt: skip
    return {
        "id": answer_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish(resp.finish_reason),
            }
        ],
        "usage": usage_of(resp),
    }


def event(data: Any) -> bytes:
    """One ``data:`` event."""
    return b"data: " + fastjson.dumps(data) + b"\n\n"


class ChatStream:
    """The events of one streamed answer, in order."""

    KEEPALIVE = b": keep-alive\n\n"
    DONE = b"data: [DONE]\n\n"

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self.id = answer_id("chatcmpl-")
        self.created = int(time.time())
        # A text delta's event is the same bytes around the piece's JSON string each time:
        # made once, so a piece costs one dumps of a string (byte-identical to _chunk's).
        around = self._chunk([{"index": 0, "delta": {"content": ""}, "logprobs": None,
                               "finish_reason": None}])  # fmt: skip
        cut = around.index(b'"content":""') + len(b'"content":')
        self._text_head, self._text_tail = around[:cut], around[cut + 2 :]

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return event({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                      "model": self.model, "choices": choices, **extra})  # fmt: skip

    def start(self) -> bytes:
        delta = {"role": "assistant", "content": ""}
        return self._chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}])

    def text(self, piece: str) -> bytes:
        return self._text_head + fastjson.dumps(piece) + self._text_tail

    def tools(self, calls: tuple[dict[str, Any], ...]) -> bytes:
        """Tool-call deltas, as the upstream streamed them."""
        delta = {"tool_calls": list(calls)}
        return self._chunk([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}])

    def end(self, resp: InferenceResponse) -> bytes:
        last = {
            "index": 0,
            "delta": {},
            "logprobs": None,
            "finish_reason": finish(resp.finish_reason),
        }
        out = self._chunk([last], x_batuta=facts(resp))
        if self.include_usage:
            out += self._chunk([], usage=usage_of(resp))
        return out + self.DONE

    def error(self, error: GatewayError) -> bytes:
        """The in-band error of a stream that had already begun."""
        return event(openai_body(error))
