"""Request bodies to neutral requests, and router failures to HTTP statuses: the pure parts."""

from __future__ import annotations

from typing import Any

import pytest

from batuta.backends.types import Message
from batuta.errors import AllTargetsFailed, Attempt, FailureKind, RoutingError
from batuta.gateway.anthropic import parse_messages
from batuta.gateway.errors import GatewayError, from_routing
from batuta.gateway.openai import parse_chat

HI = [{"role": "user", "content": "Hi"}]


def test_chat_turns_become_system_history_prompt_and_prefill() -> None:
    call = parse_chat({
        "model": "m", "stream": True, "stream_options": {"include_usage": True},
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hel"},
                                         {"type": "text", "text": "lo"}]},
            {"role": "assistant", "content": "Hi!"},
            {"role": "developer", "content": "No emoji."},
            {"role": "user", "content": "Why?"},
            {"role": "assistant", "content": "Because"},
        ],
        "max_tokens": 5, "max_completion_tokens": 7, "temperature": 0, "top_p": 0.5,
        "stop": "\n", "seed": 3, "n": 1, "user": "ignored",
    })  # fmt: skip
    r = call.request
    assert call.model == "m" and call.include_usage and r.stream
    assert r.system == "Be brief.\n\nNo emoji." and r.prompt == "Why?"
    assert r.history == (Message("user", "Hello"), Message("assistant", "Hi!"))
    assert r.assistant_prefix == "Because" and r.max_tokens == 7
    assert (r.temperature, r.top_p, r.stop, r.seed) == (0.0, 0.5, ("\n",), 3)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ([], None),
        ({"messages": HI}, "model"),
        ({"model": "", "messages": HI}, "model"),
        ({"model": "m", "messages": ["x"]}, "messages[0]"),
        ({"model": "m", "messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({"model": "m", "messages": [{"role": "user", "content": ["x"]}]},
         "messages[0].content[0]"),
        ({"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]},
         "messages[0].content[0].text"),
        ({"model": "m", "messages": HI, "logprobs": True}, "logprobs"),
        ({"model": "m", "messages": HI, "top_logprobs": 2}, "top_logprobs"),
        ({"model": "m", "messages": [{"role": "tool", "content": None}]}, "messages[0].content"),
        ({"model": "m", "messages": HI, "n": 2}, "n"),
        ({"model": "m", "messages": HI, "max_tokens": True}, "max_tokens"),
        ({"model": "m", "messages": HI, "top_p": "1"}, "top_p"),
        ({"model": "m", "messages": HI, "stream": "yes"}, "stream"),
        ({"model": "m", "messages": HI, "stream_options": []}, "stream_options"),
        ({"model": "m", "messages": HI, "stop": [1]}, "stop"),
        ({"model": "m", "messages": [{"role": ["user"], "content": "x"}]}, "messages[0].role"),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ],
)  # fmt: skip
def test_chat_field_errors(body: Any, param: str | None) -> None:
    with pytest.raises(GatewayError) as caught:
        parse_chat(body)
    assert caught.value.status == 400 and caught.value.param == param


def test_plain_and_checked_chats_read_alike() -> None:
    """The common chat (string contents, no tools) is read by a fast path; a conversation
    with tool calls, content parts or a dict subclass takes the checked one, to the same
    neutral request."""

    class Body(dict[str, Any]):
        pass

    plain = [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"},
             {"role": "assistant", "content": "Yo", "tool_calls": []},
             {"role": "developer", "content": "D"}, {"role": "user", "content": "Why?"}]  # fmt: skip
    checked = [Body(m) for m in plain]
    parts = [{**m, "content": [{"type": "text", "text": m["content"]}]} for m in plain]
    got = [parse_chat({"model": "m", "messages": ms}).request for ms in (plain, checked, parts)]
    assert got[0] == got[1] == got[2]
    assert got[0].system == "S\n\nD" and got[0].prompt == "Why?" and not got[0].extra
    assert got[0].history == (Message("user", "Hi"), Message("assistant", "Yo"))
    call = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    tooled = [*plain[:2], {"role": "assistant", "content": None, "tool_calls": call},
              {"role": "user", "content": "Why?"}]  # fmt: skip
    request = parse_chat({"model": "m", "messages": tooled}).request
    assert request.extra["messages"] == tooled
    assert request.history == (Message("user", "Hi"), Message("assistant", ""))


def test_messages_body_as_anthropic_sends_it() -> None:
    call = parse_messages({
        "model": "claude", "max_tokens": 9, "system": [{"type": "text", "text": "Be brief."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        "stop_sequences": ["END"], "temperature": 1, "metadata": {"user_id": "u"},
    })  # fmt: skip
    r = call.request
    assert (call.model, r.system, r.prompt, r.max_tokens) == ("claude", "Be brief.", "Hi", 9)
    assert r.stop == ("END",) and r.temperature == 1.0 and not r.stream


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "c", "max_tokens": 5}, "messages"),
        ({"model": "c", "max_tokens": 5, "messages": [1]}, "messages.0"),
        ({"model": "c", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]},
         "messages.0.role"),
        ({"model": "c", "max_tokens": 5, "messages": HI, "temperature": 1.5}, "temperature"),
        ({"model": "c", "max_tokens": 5, "messages": HI, "tools": [{}]}, "tools"),
        ({"model": "c", "max_tokens": 5, "messages": HI, "system": 5}, "system"),
    ],
)  # fmt: skip
def test_messages_field_errors(body: Any, param: str) -> None:
    with pytest.raises(GatewayError) as caught:
        parse_messages(body)
    assert caught.value.status == 400 and caught.value.param == param


def _failed(*attempts: Attempt) -> AllTargetsFailed:
    return AllTargetsFailed("r", list(attempts))


@pytest.mark.parametrize(
    ("attempts", "status", "retry_after"),
    [
        ((Attempt("a", "circuit open"),), 503, None),
        ((Attempt("a", "the route's 1 s deadline has passed"),), 504, None),
        ((Attempt("a", "budget: route 'r' has spent $1 today"),), 429, None),
        ((Attempt("a", "x", FailureKind.RATE_LIMIT, retry_after=2.5),), 429, "3"),
        ((Attempt("a", "x", FailureKind.RATE_LIMIT),), 429, "1"),
        ((Attempt("a", "x", FailureKind.QUOTA),), 429, "1"),
        ((Attempt("a", "x", FailureKind.TIMEOUT),), 504, None),
        ((Attempt("a", "x", FailureKind.OVERLOADED),), 503, None),
        ((Attempt("a", "x", FailureKind.CLIENT),), 400, None),
        ((Attempt("a", "x", FailureKind.RATE_LIMIT), Attempt("b", "x", FailureKind.CONNECT)),
         502, None),
        ((Attempt("a", "x", FailureKind.AUTH),), 502, None),
    ],
)  # fmt: skip
def test_failure_kinds_map_to_statuses(
    attempts: tuple[Attempt, ...], status: int, retry_after: str | None
) -> None:
    error = from_routing(_failed(*attempts))
    assert error.status == status
    assert dict(error.headers()).get(b"retry-after") == (
        retry_after.encode() if retry_after else None
    )


def test_a_refused_route_is_403() -> None:
    error = from_routing(RoutingError("route 'x' is sovereign, but ..."))
    assert error.status == 403 and error.type == "permission_error"
