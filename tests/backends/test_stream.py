"""How streams end: late cuts forgiven, and the body's tail read so connections are reused.

Reuse is observed the way a server sees it: the fakes record each request's client
address, and requests sent over one pooled connection share its port.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator

import httpx
import pytest

from batuta.backends import _stream
from batuta.backends.registry import adapter_for
from batuta.backends.types import InferenceRequest, Target
from batuta.errors import BackendError, FailureKind
from tests.backends._support import SECRET, text_of
from tests.fakes.anthropic_server import AnthropicFake
from tests.fakes.base import sse
from tests.fakes.bedrock_server import BedrockFake
from tests.fakes.ollama_server import OllamaFake
from tests.fakes.openai_server import OpenAIFake
from tests.fakes.realizar_server import RealizarFake
from tests.fakes.scripted import DEFAULT_TEXT
from tests.fakes.scripted import QuietFake as FakeServer
from tests.fakes.tgi_server import TGIFake

FINISH = {"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}]}
USAGE = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}


def openai_target(server, env: str | None = None) -> Target:
    return Target("o", "llamacpp", "openai", server.url, "m", env, local=True)


async def _stream_twice(target: Target, request: InferenceRequest):
    """Two streamed answers, one after the other, over one client."""
    answers = []
    async with httpx.AsyncClient() as client:
        adapter = adapter_for(target, client)
        for _ in range(2):
            answers.append([chunk async for chunk in adapter.stream(request)])
    return answers


def stream_twice(target: Target, request: InferenceRequest | None = None):
    return asyncio.run(_stream_twice(target, request or InferenceRequest(prompt="Hi")))


def ports(server) -> list[int]:
    return [r.client[1] for r in server.requests]


# ---------------------------------------------------------------------------- reuse


@pytest.mark.parametrize(
    ("send_done", "stream_usage"),
    [(True, True), (True, False), (False, True)],
    ids=["usage-then-done", "done-without-usage", "usage-then-close"],
)
def test_openai_streams_reuse_one_connection(send_done, stream_usage):
    with OpenAIFake(send_done=send_done, stream_usage=stream_usage) as server:
        answers = stream_twice(openai_target(server))
    assert [text_of(a) for a in answers] == [DEFAULT_TEXT, DEFAULT_TEXT]
    assert answers[0][-1].finish_reason == "stop"
    assert (answers[0][-1].usage is not None) is stream_usage
    assert len(server.requests) == 2
    assert ports(server)[0] == ports(server)[1]


def test_native_streams_reuse_one_connection(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    with (
        TGIFake() as tgi,
        OllamaFake(models=["m"]) as ollama,
        RealizarFake(model_ids=("default",)) as realizar,
        AnthropicFake(api_key=SECRET) as anthropic,
    ):
        targets = [
            (tgi, Target("t", "tgi", "tgi", tgi.url, "tgi", local=True)),
            (ollama, Target("l", "ollama", "ollama", ollama.url, "m", local=True)),
            (realizar, Target("r", "realizar", "realizar", realizar.url, "default", local=True)),
            (
                anthropic,
                Target("a", "anthropic", "anthropic", anthropic.url, "m", "ANTHROPIC_API_KEY"),
            ),
        ]
        for server, target in targets:
            answers = stream_twice(target)
            assert all(a[-1].finish_reason for a in answers), target.backend
            assert len(server.requests) == 2, target.backend
            assert len(set(ports(server))) == 1, target.backend


def test_bedrock_stream_reuses_its_connection(monkeypatch):
    secret = "fake/Secret+Key/0123456789abcdefghijklmn"
    with BedrockFake(secret_key=secret) as server:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", server.access_key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
        for name in ("AWS_SESSION_TOKEN", "AWS_BEARER_TOKEN_BEDROCK"):
            monkeypatch.delenv(name, raising=False)
        target = Target(
            "b", "bedrock", "bedrock", server.url, "m", "AWS_ACCESS_KEY_ID", {"region": "us-east-1"}
        )
        answers = stream_twice(target)
    assert answers[0][-1].usage is not None and answers[1][-1].finish_reason
    assert len(set(ports(server))) == 1


def test_a_server_that_never_ends_the_body_cannot_hold_the_answer():
    def stalls(req, resp):
        # finish and usage, then nothing for 2 s: no [DONE], no end of body.
        resp.stream(200, [sse(FINISH), sse(USAGE), 2.0, sse("[DONE]")])

    with FakeServer() as server:
        server.route("POST", "/v1/chat/completions", stalls)
        started = time.monotonic()
        answers = stream_twice(openai_target(server))
        elapsed = time.monotonic() - started
    assert [text_of(a) for a in answers] == ["Hi", "Hi"]
    assert answers[1][-1].usage.output_tokens == 1
    assert elapsed < 1.5  # two answers, each ending within the drain budget, not after 2 s
    assert ports(server)[0] != ports(server)[1]  # the unfinished connection was closed


def test_a_consumer_that_stops_early_closes_the_response():
    hung_up = threading.Event()

    def endless(req, resp):
        chunk = {"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}]}
        try:
            resp.stream(200, [piece for _ in range(200) for piece in (sse(chunk), 0.01)])
        except OSError:
            hung_up.set()

    async def first_chunk_only(url: str) -> str:
        async with httpx.AsyncClient() as client:
            chunks = adapter_for(openai_target(server), client).stream(InferenceRequest("Hi"))
            first = await chunks.__anext__()
            await chunks.aclose()
            return first.text

    with FakeServer() as server:
        server.route("POST", "/v1/chat/completions", endless)
        assert asyncio.run(first_chunk_only(server.url)) == "x"
        assert hung_up.wait(2.0)  # the server saw the connection go, long before 2 s of text


# ---------------------------------------------------------------------------- drain


async def _items(n: int, *, then_wait: float = 0.0) -> AsyncGenerator[int, None]:
    for i in range(n):
        yield i
    await asyncio.sleep(then_wait)


def test_drain_reads_a_short_tail_to_its_end():
    assert asyncio.run(_stream.drain(_items(3))) is True
    assert asyncio.run(_stream.drain(_items(0))) is True


def test_drain_gives_up_on_a_long_or_silent_tail():
    assert asyncio.run(_stream.drain(_items(50))) is False

    async def silent():
        started = time.monotonic()
        ended = await _stream.drain(_items(1, then_wait=5.0), seconds=0.05)
        return ended, time.monotonic() - started

    ended, took = asyncio.run(silent())
    assert ended is False and took < 1.0


def test_drain_swallows_a_failure_in_the_tail():
    async def cut() -> AsyncGenerator[int, None]:
        yield 1
        raise BackendError(FailureKind.STREAM_CUT, "gone")

    assert asyncio.run(_stream.drain(cut())) is False


# ---------------------------------------------------------------------------- late cuts


async def _cut_after(items: list[int], kind: FailureKind) -> AsyncGenerator[int, None]:
    for i in items:
        yield i
    raise BackendError(kind, "cut")


def _collect(source, answered):
    async def go():
        got = []
        async for item in _stream.forgive_late_cut(source, answered):
            got.append(item)
        return got

    return asyncio.run(go())


def test_a_cut_after_the_answer_is_forgiven():
    assert _collect(_cut_after([1, 2], FailureKind.STREAM_CUT), lambda: True) == [1, 2]


def test_a_cut_before_the_answer_and_other_failures_are_not():
    with pytest.raises(BackendError) as early:
        _collect(_cut_after([1], FailureKind.STREAM_CUT), lambda: False)
    assert early.value.kind is FailureKind.STREAM_CUT
    with pytest.raises(BackendError) as other:
        _collect(_cut_after([1], FailureKind.SERVER), lambda: True)
    assert other.value.kind is FailureKind.SERVER


def test_closing_the_wrapper_closes_its_source():
    closed = []

    async def source() -> AsyncGenerator[int, None]:
        try:
            yield 1
            yield 2
        finally:
            closed.append(True)

    async def go():
        wrapper = _stream.forgive_late_cut(source(), lambda: False)
        assert await wrapper.__anext__() == 1
        await wrapper.aclose()

    asyncio.run(go())
    assert closed == [True]


def test_opened_closes_the_events_then_the_response_however_the_loop_ends() -> None:
    closed: list[str] = []

    async def events() -> AsyncGenerator[int, None]:
        try:
            yield 1
            raise BackendError(FailureKind.STREAM_CUT, "cut after the answer")
        finally:
            closed.append("events")

    async def main() -> None:
        answered = False
        response = httpx.Response(200, content=b"")
        async with _stream.opened(events(), response=response, answered=lambda: answered) as src:
            async for _ in src:
                answered = True  # so the cut that follows is forgiven
        assert closed == ["events"] and response.is_closed
        response = httpx.Response(200, content=b"")
        with pytest.raises(ValueError):
            async with _stream.opened(events(), response=response) as src:
                async for _ in src:
                    raise ValueError("the loop's own failure")
        assert closed == ["events", "events"] and response.is_closed
        with pytest.raises(BackendError, match="cut after the answer"):
            async with _stream.opened(events(), answered=lambda: False) as src:
                async for _ in src:
                    pass
        assert len(closed) == 3

    asyncio.run(main())


def test_cut_names_the_missing_terminal_event() -> None:
    error = _stream.cut("bedrock", "messageStop", where=" mid-frame")
    assert error.kind is FailureKind.STREAM_CUT
    assert str(error) == "stream_cut: bedrock: stream ended mid-frame before messageStop"


def test_read_answer_is_the_shape_of_every_blocking_call() -> None:
    from batuta.backends import _http

    async def answer(body: bytes, **kw):
        response = httpx.Response(200, content=body)
        return await _http.read_answer(response, provider="p", **kw)

    assert asyncio.run(answer(b'{"text": "hi"}')) == {"text": "hi"}
    with pytest.raises(BackendError, match="p: answer is not a JSON object") as caught:
        asyncio.run(answer(b"[1, 2]"))
    assert caught.value.kind is FailureKind.MALFORMED
    with pytest.raises(BackendError, match="model is loading"):
        asyncio.run(answer(b'{"error": {"message": "model is loading"}}'))
    own = BackendError(FailureKind.OVERLOADED, "p: busy")
    with pytest.raises(BackendError, match="p: busy"):
        asyncio.run(answer(b'{"type": "error"}', in_band=lambda b: own if b["type"] else None))
    assert asyncio.run(answer(b'{"error": "x"}', in_band=lambda b: None)) == {"error": "x"}
