"""The official ``anthropic`` SDK against ``/v1/messages``, over any route: an OpenAI-style
local server and Anthropic's own API (both faked strictly)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import pytest

from batuta.routing.table import TargetEntry
from tests.fakes.anthropic_server import AnthropicFake
from tests.fakes.openai_server import OpenAIFake
from tests.fakes.scripted import DEFAULT_TEXT, tokenize
from tests.gateway.helpers import GatewayThread, local, route_of, write_routes

KEY = "sk-ant-test-key"
HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture
def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GatewayThread]:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    with OpenAIFake() as oai, AnthropicFake(api_key=KEY) as claude:
        cloud = TargetEntry("claude", "anthropic", "anthropic", claude.url, "claude-fake-1", False,
                            "ANTHROPIC_API_KEY")  # fmt: skip
        table = write_routes(
            tmp_path,
            route_of("default", local("local", oai), aliases=("claude-sonnet",)),
            route_of("cloud", cloud),
        )
        with GatewayThread(table, keepalive=0.05) as gw:
            gw.fakes = (oai, claude)
            yield gw


def sdk(gw: GatewayThread) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key="client-key", max_retries=0)


@pytest.mark.parametrize("model", ["claude-sonnet", "cloud"])
def test_blocking_message(gateway: GatewayThread, model: str) -> None:
    raw = sdk(gateway).messages.with_raw_response.create(model=model, max_tokens=64, messages=HI)
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text" and message.content[0].text == DEFAULT_TEXT
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens == len(tokenize(DEFAULT_TEXT))
    assert raw.headers["x-batuta-target"] == ("local" if model != "cloud" else "claude")


@pytest.mark.parametrize("model", ["claude-sonnet", "cloud"])
def test_streamed_message_events(gateway: GatewayThread, model: str) -> None:
    with sdk(gateway).messages.stream(model=model, max_tokens=64, messages=HI) as stream:
        events = list(stream)
        final = stream.get_final_message()
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[1] == "content_block_start"
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert final.content[0].type == "text" and final.content[0].text == DEFAULT_TEXT
    assert final.stop_reason == "end_turn"


def test_max_tokens_stops_with_max_tokens(gateway: GatewayThread) -> None:
    message = sdk(gateway).messages.create(model="default", max_tokens=3, messages=HI)
    assert message.stop_reason == "max_tokens"
    assert message.content[0].type == "text"
    assert message.content[0].text == "".join(tokenize(DEFAULT_TEXT)[:3])


def test_system_and_prefill_reach_the_upstream(gateway: GatewayThread) -> None:
    oai, _ = gateway.fakes
    turns = [*HI, {"role": "assistant", "content": "Sure:"}]
    sdk(gateway).messages.create(model="default", max_tokens=8, system="Be brief.", messages=turns)
    sent = oai.requests[-1].json()["messages"]
    assert sent[0] == {"role": "system", "content": "Be brief."}
    assert sent[-1] == {"role": "assistant", "content": "Sure:"}


def test_errors_in_anthropic_shape(gateway: GatewayThread) -> None:
    client = sdk(gateway)
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="claude-sonet", max_tokens=8, messages=HI)
    assert "did you mean 'claude-sonnet'?" in str(missing.value)
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        client.messages.create(model="default", max_tokens=0, messages=HI)
    r = httpx.post(gateway.url + "/v1/messages", json={"model": "default", "messages": HI})
    assert r.status_code == 400
    assert r.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: is required"},
    }


def test_upstream_overload_is_an_sdk_error(gateway: GatewayThread) -> None:
    _, claude = gateway.fakes
    claude.fail_next(429, retry_after="3")
    with pytest.raises(anthropic.RateLimitError) as caught:
        sdk(gateway).messages.create(model="cloud", max_tokens=8, messages=HI)
    assert caught.value.response.headers["retry-after"] == "3"
    assert caught.value.body["error"]["type"] == "rate_limit_error"


def test_a_route_failing_mid_stream_is_an_error_event(gateway: GatewayThread) -> None:
    oai, _ = gateway.fakes
    oai.cut_after(3)
    seen: list[str] = []
    with pytest.raises(anthropic.APIError, match="every target failed"):  # noqa: SIM117
        with sdk(gateway).messages.stream(model="default", max_tokens=64, messages=HI) as stream:
            seen.extend(stream.text_stream)
    assert "".join(seen) == "".join(tokenize(DEFAULT_TEXT)[:3])


def test_x_api_key_and_version_headers_are_accepted(gateway: GatewayThread) -> None:
    body = {"model": "default", "max_tokens": 8, "messages": HI}
    headers = {"x-api-key": "whatever", "anthropic-version": "2023-06-01"}
    r = httpx.post(gateway.url + "/v1/messages", json=body, headers=headers, timeout=10)
    assert r.status_code == 200 and r.json()["type"] == "message"
