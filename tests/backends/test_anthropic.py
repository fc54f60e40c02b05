"""AnthropicAdapter against the loopback Messages API."""

from __future__ import annotations

import json
import time

import pytest

from batuta.backends.types import InferenceRequest, Message, Target
from batuta.errors import FailureKind
from tests.backends._support import (
    SECRET,
    complete,
    complete_error,
    drain,
    health,
    odd_server,
    text_of,
)
from tests.fakes.anthropic_server import AnthropicFake
from tests.fakes.base import sse
from tests.fakes.scripted import DEFAULT_TEXT, tokenize
from tests.fakes.scripted import QuietFake as FakeServer
from tests.fakes.specs import assert_valid

TOKENS = tokenize(DEFAULT_TEXT)


@pytest.fixture(scope="module")
def server():
    with AnthropicFake(api_key=SECRET) as running:
        yield running


@pytest.fixture
def fake(server, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    server.first_byte_delay = server.chunk_delay = 0.0
    server.text, server.no_prefill = DEFAULT_TEXT, set()
    return server.reset()


def target(fake, **options) -> Target:
    return Target(
        "claude",
        "anthropic",
        "anthropic",
        fake.url,
        "claude-fake-1",
        api_key_env="ANTHROPIC_API_KEY",
        options=options,
    )


def last_body(fake) -> dict:
    return json.loads(fake.requests[-1].body)


def test_complete_sends_the_messages_shape(fake):
    request = InferenceRequest(
        prompt="Hi",
        system="Be brief.",
        temperature=0.3,
        top_p=0.9,
        stop=("zzz",),
        history=(Message("user", "a"), Message("assistant", "b")),
    )
    done = complete(target(fake, **{"param.top_k": "5"}), request)
    assert done.text == DEFAULT_TEXT and done.finish_reason == "stop"
    assert done.usage.output_tokens == len(TOKENS) and done.usage.input_tokens
    sent = fake.requests[-1]
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == SECRET and sent.headers["anthropic-version"] == "2023-06-01"
    body = last_body(fake)
    assert body["max_tokens"] == 1024 and body["system"] == "Be brief." and body["top_k"] == 5
    assert body["temperature"] == 0.3 and "top_p" not in body  # never both
    assert body["stop_sequences"] == ["zzz"] and "stream" not in body
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert_valid("anthropic", sent)


def test_stream_named_events(fake):
    chunks, error = drain(target(fake), InferenceRequest(prompt="Hi", max_tokens=300))
    assert error is None and [c.text for c in chunks[:-1]] == TOKENS
    last = chunks[-1]
    assert last.finish_reason == "stop" and last.usage.output_tokens == len(TOKENS)
    assert last.usage.input_tokens == 1  # from message_start
    assert last_body(fake)["stream"] is True and last_body(fake)["max_tokens"] == 300
    assert_valid("anthropic", fake.requests[-1])


def test_max_tokens_and_stop_sequence(fake):
    chunks, _ = drain(target(fake), InferenceRequest(prompt="Hi", max_tokens=2))
    assert text_of(chunks) == "".join(TOKENS[:2]) and chunks[-1].finish_reason == "length"
    assert_valid("anthropic", fake.requests[-1])
    done = complete(target(fake), InferenceRequest(prompt="Hi", stop=("this",)))
    assert done.text == "Hello world, " and done.finish_reason == "stop"
    assert_valid("anthropic", fake.requests[-1])


def test_prefill_drops_trailing_whitespace_and_its_echo(fake):
    request = InferenceRequest(prompt="Q", assistant_prefix="Hello ")
    fake.text = " world and more"
    try:
        chunks, error = drain(target(fake), request)
        assert error is None and text_of(chunks) == "world and more"
        assert last_body(fake)["messages"][-1] == {"role": "assistant", "content": "Hello"}
        assert_valid("anthropic", fake.requests[-1])
        assert complete(target(fake), request).text == "world and more"
        assert_valid("anthropic", fake.requests[-1])
    finally:
        fake.text = DEFAULT_TEXT


def test_blank_stop_sequences_are_applied_here_not_sent(fake):
    fake.text = "Line one.\nLine two, after the break."
    request = InferenceRequest(prompt="Hi", stop=("\n", "", "zzz"))
    done = complete(target(fake), request)
    assert done.text == "Line one." and done.finish_reason == "stop"
    assert last_body(fake)["stop_sequences"] == ["zzz"]
    chunks, error = drain(target(fake), request)
    assert error is None and text_of(chunks) == "Line one." and chunks[-1].finish_reason == "stop"
    complete(target(fake), InferenceRequest(prompt="Hi", stop=(" ",)))
    assert "stop_sequences" not in last_body(fake)


def test_sampling_fits_claudes_ranges(fake):
    complete(target(fake), InferenceRequest(prompt="Hi", temperature=1.6, top_p=0.5))
    body = last_body(fake)
    assert body["temperature"] == 1.0 and "top_p" not in body  # 0-2 scale capped at 1
    complete(target(fake), InferenceRequest(prompt="Hi", temperature=0.4))
    assert last_body(fake)["temperature"] == 0.4
    complete(target(fake), InferenceRequest(prompt="Hi", top_p=0.8))
    assert last_body(fake)["top_p"] == 0.8 and "temperature" not in last_body(fake)
    sent = len(fake.requests)
    error = complete_error(target(fake), InferenceRequest(prompt="Hi", temperature=2.5))
    assert error.kind is FailureKind.CLIENT and "temperature 2.5 is outside 0-2" in str(error)
    assert len(fake.requests) == sent  # refused here, never sent


def test_a_model_refusing_prefill_is_asked_to_continue_in_a_user_turn(fake):
    import asyncio

    import httpx

    from batuta.backends.anthropic import AnthropicAdapter

    fake.no_prefill = {"claude-new"}
    shown = "Hello world, this"
    request = InferenceRequest(prompt="Q", model="claude-new", assistant_prefix=shown)

    async def go():
        async with httpx.AsyncClient() as client:
            adapter = AnthropicAdapter(target(fake), client)
            first = await adapter.complete(request)
            streamed = [c async for c in adapter.stream(request)]
            return first, streamed

    first, streamed = asyncio.run(go())
    assert first.text == DEFAULT_TEXT[len(shown) :] and first.finish_reason == "stop"
    assert text_of(streamed) == DEFAULT_TEXT[len(shown) :]
    refused, asked, again = (json.loads(r.body) for r in fake.requests)
    assert refused["messages"][-1] == {"role": "assistant", "content": shown}
    assert [m["role"] for m in asked["messages"]] == ["user", "assistant", "user"]
    assert asked["messages"][1]["content"] == shown
    assert "Continue it exactly where it stops" in asked["messages"][2]["content"]
    assert again["messages"] == asked["messages"]  # the adapter remembers the refusal
    fake.reset().fail_next(400, message="messages: text content blocks must be non-empty")
    error = complete_error(target(fake), InferenceRequest(prompt="Q", assistant_prefix=shown))
    assert error.kind is FailureKind.CLIENT and len(fake.requests) == 1  # other 400s: no retry


def test_429_and_529(fake):
    fake.fail_next(429, retry_after="7")
    error = complete_error(target(fake))
    assert error.kind is FailureKind.RATE_LIMIT and error.retry_after == 7.0
    assert error.request_id and error.request_id.startswith("req_")
    fake.fail_next(529)
    error = drain(target(fake))[1]
    assert (
        error.kind is FailureKind.OVERLOADED and error.status == 529 and "Overloaded" in str(error)
    )
    fake.fail_next(500)
    assert complete_error(target(fake)).kind is FailureKind.SERVER
    fake.fail_next(400, error_type="billing_error", message="Your credit balance is too low")
    assert complete_error(target(fake)).kind is FailureKind.QUOTA


def test_error_event_after_the_200_is_overloaded(fake):
    fake.error_event_after(3)
    chunks, error = drain(target(fake))
    assert text_of(chunks) == "".join(TOKENS[:3])
    assert error.kind is FailureKind.OVERLOADED and error.status is None


def test_cut_and_malformed(fake):
    fake.cut_after(1)
    chunks, error = drain(target(fake))
    assert text_of(chunks) == TOKENS[0] and error.kind is FailureKind.STREAM_CUT
    fake.malformed_next()
    assert drain(target(fake))[1].kind is FailureKind.MALFORMED
    fake.malformed_next()
    assert complete_error(target(fake)).kind is FailureKind.MALFORMED


def test_close_after_message_delta_is_accepted_but_not_before():
    def ending(stop_reason):
        def handler(req, resp):
            events = [
                sse(
                    {"type": "message_start", "message": {"usage": {"input_tokens": 3}}},
                    "message_start",
                ),
                sse(
                    {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "Hi"}},
                    "content_block_delta",
                ),
            ]
            if stop_reason:
                events.append(
                    sse(
                        {
                            "type": "message_delta",
                            "delta": {"stop_reason": stop_reason},
                            "usage": {"output_tokens": 1},
                        },
                        "message_delta",
                    )
                )
            resp.stream(200, events)

        return handler

    with FakeServer() as server:
        server.route("POST", "/v1/messages", ending("end_turn"))
        t = Target("c", "anthropic", "anthropic", server.url, "m", api_key_env="ANTHROPIC_API_KEY")
        import os

        os.environ["ANTHROPIC_API_KEY"] = SECRET
        try:
            chunks, error = drain(t)
            assert error is None and chunks[-1].usage.output_tokens == 1
            server.routes.clear()
            server.route("POST", "/v1/messages", ending(None))
            chunks, error = drain(t)
            assert text_of(chunks) == "Hi" and error.kind is FailureKind.STREAM_CUT
        finally:
            del os.environ["ANTHROPIC_API_KEY"]


def test_auth_errors_never_show_the_key(fake, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-wrong-123456")
    error = complete_error(target(fake))
    assert error.kind is FailureKind.AUTH and "sk-ant-wrong-123456" not in str(error)
    assert health(target(fake)) is False
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    error = complete_error(target(fake))
    assert error.kind is FailureKind.AUTH and "ANTHROPIC_API_KEY" in str(error)
    assert health(target(fake)) is False


def test_first_byte_timeout_and_connection_refused(fake, free_port):
    fake.first_byte_delay = 1.0
    started = time.monotonic()
    assert drain(target(fake), first_byte_timeout=0.2)[1].kind is FailureKind.TIMEOUT
    assert time.monotonic() - started < 0.9
    dead = Target(
        "c",
        "anthropic",
        "anthropic",
        f"http://127.0.0.1:{free_port}",
        "m",
        api_key_env="ANTHROPIC_API_KEY",
    )
    assert complete_error(dead).kind is FailureKind.CONNECT


def test_health_lists_models(fake):
    assert health(target(fake, anthropic_beta="tools-2024")) is True
    assert fake.requests[-1].path == "/v1/models"
    assert fake.requests[-1].headers["anthropic-beta"] == "tools-2024"
    assert_valid("anthropic", fake.requests[-1])


# ---------------------------------------------------------------------------- odd answers


def anon(server) -> Target:
    return Target("c", "anthropic", "anthropic", server.url, "m", api_key_env="ANTHROPIC_API_KEY")


def test_odd_blocking_answers(fake):
    error_body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    with odd_server("/v1/messages", error_body) as server:
        assert complete_error(anon(server)).kind is FailureKind.OVERLOADED
    with odd_server("/v1/messages", {"id": "msg"}) as server:
        assert complete_error(anon(server)).kind is FailureKind.MALFORMED


def test_odd_stream_events(fake):
    events = [
        sse({"type": "message_start", "message": {}}),  # type only in the data, no usage
        sse(
            {
                "type": "content_block_delta",
                "delta": {"type": "input_json_delta", "partial_json": "{"},
            },
            "content_block_delta",
        ),
        sse(
            {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "ok"}},
            "content_block_delta",
        ),
        sse(
            {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {}},
            "message_delta",
        ),
        None,  # dropped before message_stop, but the answer was already complete
    ]
    with odd_server("/v1/messages", events, stream=True) as server:
        chunks, error = drain(anon(server))
    assert error is None and text_of(chunks) == "ok" and chunks[-1].finish_reason == "tool_use"
    assert chunks[-1].usage.input_tokens is None
    with odd_server("/v1/messages", [sse("[1]", "message_start")], stream=True) as server:
        assert drain(anon(server))[1].kind is FailureKind.MALFORMED
