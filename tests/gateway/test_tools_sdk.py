"""Tool calling and pass-through fields through the gateway, with the official ``openai`` SDK.

The OpenAI fake answers a request with ``tools`` by calling them (blocking, and streamed as
``delta.tool_calls`` pieces); the Anthropic fake is a target that cannot take ``tools``, so
a route [anthropic, openai] sends such a request to the second one without calling the
first. Every request the OpenAI fake receives is checked against OpenAI's official spec.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from batuta.routing.table import TargetEntry
from tests.fakes.anthropic_server import AnthropicFake
from tests.fakes.openai_server import OpenAIFake
from tests.fakes.specs import assert_valid
from tests.gateway.helpers import GatewayThread, local, route_of, write_routes

KEY = "sk-ant-test-0123456789"
HI = [{"role": "user", "content": "Weather in Paris?"}]
ARGS = '{"city": "Paris", "unit": "celsius"}'
TOOLS = [{"type": "function", "function": {
    "name": "weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "unit": {"type": "string"}}},
}}]  # fmt: skip


@pytest.fixture
def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GatewayThread]:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    calls = [{"name": "weather", "arguments": ARGS}]
    with (
        OpenAIFake(tool_calls=calls) as oai,
        OpenAIFake(tool_calls=calls) as spare,
        AnthropicFake(api_key=KEY) as claude,
    ):
        cloud = TargetEntry("claude", "anthropic", "anthropic", claude.url, "claude-fake-1", False,
                            "ANTHROPIC_API_KEY")  # fmt: skip
        table = write_routes(
            tmp_path,
            route_of("mixed", cloud, local("oai", oai)),
            route_of("pair", local("oai", oai), local("spare", spare)),
            route_of("cloud", cloud),
        )
        with GatewayThread(table, keepalive=0.05) as gw:
            gw.fakes = (oai, spare, claude)  # type: ignore[attr-defined]
            yield gw


def sdk(gw: GatewayThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)


def test_blocking_tool_call_skips_the_target_that_cannot_call_tools(
    gateway: GatewayThread,
) -> None:
    oai, _, claude = gateway.fakes  # type: ignore[attr-defined]
    raw = sdk(gateway).chat.completions.with_raw_response.create(
        model="mixed", messages=HI, tools=TOOLS, tool_choice="auto", user="u-1",
        response_format={"type": "text"}, presence_penalty=0.25,
    )  # fmt: skip
    done = raw.parse()
    choice = done.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None and choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert (call.id, call.type, call.function.name) == ("call_fake0", "function", "weather")
    assert json.loads(call.function.arguments) == {"city": "Paris", "unit": "celsius"}
    assert raw.headers["x-batuta-target"] == "oai" and raw.headers["x-batuta-fallbacks"] == "1"
    assert claude.requests == []  # skipped, never called
    sent = oai.requests[-1]
    assert_valid("openai", sent)
    body = sent.json()
    assert body["tools"] == TOOLS and body["tool_choice"] == "auto" and body["user"] == "u-1"
    assert body["response_format"] == {"type": "text"} and body["presence_penalty"] == 0.25


def test_streamed_tool_call_deltas_reach_the_client_intact(gateway: GatewayThread) -> None:
    oai = gateway.fakes[0]  # type: ignore[attr-defined]
    chunks = list(
        sdk(gateway).chat.completions.create(model="mixed", messages=HI, tools=TOOLS, stream=True)
    )
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert deltas[0].id == "call_fake0" and deltas[0].function is not None
    assert deltas[0].function.name == "weather"
    assert "".join((d.function.arguments or "") for d in deltas if d.function) == ARGS
    assert {d.index for d in deltas} == {0}
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "tool_calls" and finishes.count("tool_calls") == 1
    assert_valid("openai", oai.requests[-1])


def test_a_tool_conversation_goes_upstream_as_the_client_wrote_it(
    gateway: GatewayThread,
) -> None:
    oai = gateway.fakes[0]  # type: ignore[attr-defined]
    messages = [
        *HI,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_fake0", "type": "function",
             "function": {"name": "weather", "arguments": ARGS}}]},
        {"role": "tool", "tool_call_id": "call_fake0", "content": "18 C and sunny"},
    ]  # fmt: skip
    done = sdk(gateway).chat.completions.create(model="pair", messages=messages)  # no tools
    assert done.choices[0].message.content and done.choices[0].finish_reason == "stop"
    sent = oai.requests[-1]
    assert_valid("openai", sent)
    assert sent.json()["messages"] == messages


def test_tools_on_a_route_without_a_tool_target_is_a_400_naming_field_and_route(
    gateway: GatewayThread,
) -> None:
    claude = gateway.fakes[2]  # type: ignore[attr-defined]
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(gateway).chat.completions.create(model="cloud", messages=HI, tools=TOOLS)
    assert caught.value.status_code == 400
    assert "tools" in caught.value.message and "'cloud'" in caught.value.message
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "tools"
    with pytest.raises(openai.BadRequestError, match="logprobs"):
        sdk(gateway).chat.completions.create(model="pair", messages=HI, logprobs=True)
    assert claude.requests == []


def test_a_stream_that_showed_tool_deltas_fails_in_band_instead_of_splicing(
    gateway: GatewayThread,
) -> None:
    oai, spare, _ = gateway.fakes  # type: ignore[attr-defined]
    oai.cut_after(2)  # the call's head and its first argument piece, then the target dies
    stream = sdk(gateway).chat.completions.create(
        model="pair", messages=HI, tools=TOOLS, stream=True
    )
    seen = []
    with pytest.raises(openai.APIError, match="oai"):
        for chunk in stream:
            if chunk.choices:
                seen += chunk.choices[0].delta.tool_calls or []
    assert len(seen) == 2
    assert spare.requests == []  # no failover: another target's deltas cannot be spliced


def test_a_failure_before_any_tool_delta_still_fails_over(gateway: GatewayThread) -> None:
    oai, spare, _ = gateway.fakes  # type: ignore[attr-defined]
    oai.fail_next(503)
    chunks = list(
        sdk(gateway).chat.completions.create(model="pair", messages=HI, tools=TOOLS, stream=True)
    )
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert "".join((d.function.arguments or "") for d in deltas if d.function) == ARGS
    assert chunks[-1].model_extra is not None
    assert chunks[-1].model_extra["x_batuta"]["target"] == "spare"
    assert len(spare.requests) == 1
