"""The official ``openai`` SDK, sync and async, against the gateway in front of provider fakes.

The fakes speak OpenAI's protocol strictly (framing, error bodies, ``retry-after``); the
gateway runs in uvicorn on a free port; the SDK is used as an application would, with its
own retries off so each status is seen as the gateway sent it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.fakes.openai_server import OpenAIFake
from tests.fakes.scripted import DEFAULT_TEXT, tokenize
from tests.gateway.helpers import GatewayThread, local, route_of, write_routes

ALPHA = "Alpha answers first. " + DEFAULT_TEXT
HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[OpenAIFake, OpenAIFake]]:
    a, b = OpenAIFake(text=ALPHA).start(), OpenAIFake().start()
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture
def upstream(fakes: tuple[OpenAIFake, OpenAIFake]) -> tuple[OpenAIFake, OpenAIFake]:
    for fake in fakes:
        fake.reset()
        fake.first_byte_delay = fake.chunk_delay = 0.0
    return fakes


@pytest.fixture
def gateway(tmp_path: Path, upstream: tuple[OpenAIFake, OpenAIFake]) -> Iterator[GatewayThread]:
    a, b = upstream
    table = write_routes(
        tmp_path,
        route_of("default", local("a", a), local("b", b), aliases=("gpt-4o-mini",)),
        route_of("solo", local("a", a)),
        route_of("quick", local("a", a), first_byte_timeout=0.3, timeout=0.5),
    )
    with GatewayThread(table, keepalive=0.05) as gw:
        yield gw


def client(gw: GatewayThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)


def test_blocking_chat_through_a_route_with_routing_headers(gateway: GatewayThread) -> None:
    raw = client(gateway).chat.completions.with_raw_response.create(model="default", messages=HI)
    done = raw.parse()
    assert done.choices[0].message.content == ALPHA
    assert done.choices[0].finish_reason == "stop" and done.object == "chat.completion"
    assert done.usage is not None and done.usage.completion_tokens == len(tokenize(ALPHA))
    assert raw.headers["x-batuta-target"] == "a"
    assert raw.headers["x-batuta-attempts"] == "1" and raw.headers["x-batuta-fallbacks"] == "0"
    assert float(raw.headers["x-batuta-overhead-ms"]) >= 0


def test_alias_and_bare_target_select_their_route(
    gateway: GatewayThread, upstream: tuple[OpenAIFake, OpenAIFake]
) -> None:
    sdk = client(gateway)
    by_alias = sdk.chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert by_alias.choices[0].message.content == ALPHA and by_alias.model == "gpt-4o-mini"
    bare = sdk.chat.completions.with_raw_response.create(model="b", messages=HI)
    assert bare.parse().choices[0].message.content == DEFAULT_TEXT
    assert bare.headers["x-batuta-target"] == "b"
    # the upstream got the target's own model id, not the name the client sent
    assert [r.json()["model"] for r in upstream[1].requests] == ["fake-model"]


def test_stream_frames_as_openai_with_usage_chunk(
    gateway: GatewayThread, upstream: tuple[OpenAIFake, OpenAIFake]
) -> None:
    chunks = list(
        client(gateway).chat.completions.create(
            model="default", messages=HI, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == ALPHA
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(tokenize(ALPHA))
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert finals[0].model_extra is not None and finals[0].model_extra["x_batuta"]["target"] == "a"


def test_mid_stream_failover_reads_as_one_stream(
    gateway: GatewayThread, upstream: tuple[OpenAIFake, OpenAIFake]
) -> None:
    a, b = upstream
    a.text = b.text = DEFAULT_TEXT  # the second continues (here: restarts) the same answer
    a.cut_after(3)
    try:
        stream = client(gateway).chat.completions.create(model="default", messages=HI, stream=True)
        chunks = list(stream)
    finally:
        a.text = ALPHA
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == DEFAULT_TEXT
    last = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    assert last.model_extra is not None
    assert last.model_extra["x_batuta"]["failed_over_from"] == ["a"]
    assert last.model_extra["x_batuta"]["target"] == "b"


def test_route_failing_after_the_stream_began_is_an_in_band_error(
    gateway: GatewayThread, upstream: tuple[OpenAIFake, OpenAIFake]
) -> None:
    upstream[0].cut_after(3)
    stream = client(gateway).chat.completions.create(model="solo", messages=HI, stream=True)
    seen: list[str] = []
    with pytest.raises(openai.APIError, match="every target failed"):
        for chunk in stream:
            seen.append(chunk.choices[0].delta.content or "")
    assert "".join(seen) == "".join(tokenize(ALPHA)[:3])


def _has_text(line: str) -> bool:
    if not line.startswith("data: {"):
        return False
    choices = json.loads(line[6:])["choices"]
    return bool(choices and choices[0]["delta"].get("content"))


def test_keep_alive_lines_while_waiting_for_the_first_token(
    gateway: GatewayThread, upstream: tuple[OpenAIFake, OpenAIFake]
) -> None:
    upstream[0].first_byte_delay = 0.4
    body = {"model": "solo", "messages": HI, "stream": True}
    with httpx.stream("POST", gateway.url + "/v1/chat/completions", json=body, timeout=10) as r:
        lines = [line for line in r.iter_lines() if line]
    texts = [i for i, line in enumerate(lines) if _has_text(line)]
    keepalives = [i for i, line in enumerate(lines) if line == ": keep-alive"]
    assert len(keepalives) >= 3 and max(keepalives) < texts[0], lines[:8]
    assert lines[-1] == "data: [DONE]"
    # SDKs skip comment lines: the same stream parses as usual
    upstream[0].first_byte_delay = 0.2
    chunks = list(client(gateway).chat.completions.create(model="solo", messages=HI, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == ALPHA


def test_async_client_blocking_and_stream(gateway: GatewayThread) -> None:
    async def main() -> tuple[str, str]:
        sdk = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="unused", max_retries=0)
        async with sdk:
            done = await sdk.chat.completions.create(model="default", messages=HI)
            stream = await sdk.chat.completions.create(model="default", messages=HI, stream=True)
            pieces = [c.choices[0].delta.content or "" async for c in stream]
        return done.choices[0].message.content or "", "".join(pieces)

    blocking, streamed = asyncio.run(main())
    assert blocking == streamed == ALPHA


def test_unknown_model_is_not_found_with_a_suggestion(gateway: GatewayThread) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client(gateway).chat.completions.create(model="defualt", messages=HI)
    error = caught.value
    assert error.status_code == 404 and error.code == "model_not_found"
    assert "did you mean 'default'?" in error.message and error.param == "model"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"messages": []}, "messages"),
        ({"temperature": 5}, "temperature"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "messages"),
        ({"max_tokens": 0}, "max_tokens"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages[0].content[0].type",
        ),
    ],
)
def test_bad_fields_are_bad_requests_naming_the_field(
    gateway: GatewayThread, extra: dict[str, object], param: str
) -> None:
    body = {"messages": HI, **extra}
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway).chat.completions.create(model="default", **body)
    assert caught.value.param == param and f"400 - {param}: " in caught.value.message


def test_bad_json_is_a_bad_request(gateway: GatewayThread) -> None:
    r = httpx.post(gateway.url + "/v1/chat/completions", content=b"{not json", timeout=10)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_json"
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_upstream_rate_limit_is_429_with_retry_after(
    gateway: GatewayThread, upstream: tuple[OpenAIFake, OpenAIFake]
) -> None:
    upstream[0].fail_next(429, retry_after="7")
    with pytest.raises(openai.RateLimitError) as caught:
        client(gateway).chat.completions.create(model="solo", messages=HI)
    assert caught.value.response.headers["retry-after"] == "7"


@pytest.mark.parametrize(("status", "expected"), [(500, 502), (503, 503)])
def test_upstream_failures_map_to_gateway_statuses(
    gateway: GatewayThread, upstream: tuple[OpenAIFake, OpenAIFake], status: int, expected: int
) -> None:
    upstream[0].fail_next(status)
    with pytest.raises(openai.APIStatusError) as caught:
        client(gateway).chat.completions.create(model="solo", messages=HI, stream=True)
    assert caught.value.status_code == expected
    assert "route 'solo': every target failed" in caught.value.message


def test_upstream_timeout_is_504(
    gateway: GatewayThread, upstream: tuple[OpenAIFake, OpenAIFake]
) -> None:
    upstream[0].first_byte_delay = 1.0
    with pytest.raises(openai.APIStatusError) as caught:
        client(gateway).chat.completions.create(model="quick", messages=HI)
    assert caught.value.status_code == 504
