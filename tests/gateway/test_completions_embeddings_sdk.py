"""``POST /v1/completions`` and ``POST /v1/embeddings`` with the official ``openai`` SDK.

A llama.cpp-like target (an OpenAI fake on loopback) gets a completion's prompt on its
own completions route, as sent; a chat-only target (the Anthropic fake) gets it as one
user message. Embeddings go to targets that embed (here, OpenAI-backend fakes, which check
every embeddings request against OpenAI's official spec), with failover between them.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from batuta.routing.table import TargetEntry
from tests.fakes.anthropic_server import AnthropicFake
from tests.fakes.openai_extras import vector
from tests.fakes.openai_server import OpenAIFake
from tests.fakes.scripted import DEFAULT_TEXT
from tests.fakes.specs import assert_valid
from tests.gateway.helpers import GatewayThread, local, route_of, write_routes

KEY = "sk-test-0123456789"
PROMPT = "Once upon a time"


def remote(name: str, fake: OpenAIFake) -> TargetEntry:
    return TargetEntry(name, "openai", "openai", fake.url, "text-embedding-3-small", False,
                       "OPENAI_API_KEY")  # fmt: skip


@pytest.fixture
def gateway(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GatewayThread]:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    with (
        OpenAIFake() as llama,
        OpenAIFake(api_key=KEY) as first,
        OpenAIFake(api_key=KEY) as second,
        AnthropicFake(api_key=KEY) as claude,
    ):
        cloud = TargetEntry("claude", "anthropic", "anthropic", claude.url, "claude-fake-1", False,
                            "ANTHROPIC_API_KEY")  # fmt: skip
        table = write_routes(
            tmp_path,
            route_of("text", local("llama", llama)),
            route_of("chat-only", cloud),
            route_of("embed", local("llama", llama), remote("first", first),
                     remote("second", second), retries=0),
        )  # fmt: skip
        with GatewayThread(table, keepalive=0.05) as gw:
            gw.fakes = (llama, first, second, claude)  # type: ignore[attr-defined]
            yield gw


def sdk(gw: GatewayThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)


def test_blocking_completion_is_a_raw_prompt_on_a_local_server(gateway: GatewayThread) -> None:
    llama = gateway.fakes[0]  # type: ignore[attr-defined]
    raw = sdk(gateway).completions.with_raw_response.create(
        model="text", prompt=PROMPT, max_tokens=50, temperature=0, user="u-1"
    )
    done = raw.parse()
    assert done.object == "text_completion" and done.id.startswith("cmpl-")
    assert done.choices[0].text == DEFAULT_TEXT and done.choices[0].finish_reason == "stop"
    assert done.usage is not None and done.usage.completion_tokens > 0
    assert raw.headers["x-batuta-target"] == "llama"
    sent = llama.requests[-1]
    assert sent.path == "/v1/completions"
    assert_valid("openai", sent)
    assert sent.json()["prompt"] == PROMPT and sent.json()["user"] == "u-1"
    single = sdk(gateway).completions.create(model="text", prompt=[PROMPT])  # a list of one
    assert single.choices[0].text == DEFAULT_TEXT


def test_streamed_completion_in_openai_framing(gateway: GatewayThread) -> None:
    chunks = list(
        sdk(gateway).completions.create(
            model="text", prompt=PROMPT, stream=True, stream_options={"include_usage": True}
        )
    )
    assert all(c.object == "text_completion" for c in chunks)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == DEFAULT_TEXT
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    with httpx.stream("POST", gateway.url + "/v1/completions", timeout=10,
                      json={"model": "text", "prompt": PROMPT, "stream": True}) as r:  # fmt: skip
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"


def test_a_chat_only_target_gets_the_prompt_as_one_user_message(gateway: GatewayThread) -> None:
    claude = gateway.fakes[3]  # type: ignore[attr-defined]
    done = sdk(gateway).completions.create(model="chat-only", prompt=PROMPT, max_tokens=64)
    assert done.choices[0].text and done.choices[0].finish_reason == "stop"
    assert claude.requests[-1].json()["messages"] == [{"role": "user", "content": PROMPT}]
    streamed = sdk(gateway).completions.create(model="chat-only", prompt=PROMPT, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == done.choices[0].text


def test_completion_prompt_errors(gateway: GatewayThread) -> None:
    with pytest.raises(openai.BadRequestError, match="one prompt per request") as many:
        sdk(gateway).completions.create(model="text", prompt=["a", "b"])
    assert isinstance(many.value.body, dict) and many.value.body["param"] == "prompt"
    with pytest.raises(openai.BadRequestError, match="token arrays"):
        sdk(gateway).completions.create(model="text", prompt=[1, 2, 3])
    with pytest.raises(openai.BadRequestError, match="logprobs"):
        sdk(gateway).completions.create(model="text", prompt=PROMPT, logprobs=2)


def test_embeddings_as_floats_fail_over_between_targets_that_embed(
    gateway: GatewayThread,
) -> None:
    llama, first, second, _ = gateway.fakes  # type: ignore[attr-defined]
    first.fail_next(503)
    raw = sdk(gateway).embeddings.with_raw_response.create(
        model="embed", input="hello", encoding_format="float", dimensions=6
    )
    done = raw.parse()
    assert done.object == "list" and done.model == "embed"
    assert done.data[0].embedding == pytest.approx(vector("hello", 6))
    assert done.usage.prompt_tokens == 1 and done.usage.total_tokens == 1
    assert raw.headers["x-batuta-target"] == "second" and raw.headers["x-batuta-fallbacks"] == "2"
    assert llama.requests == []  # a llama.cpp server without `embeddings: true` is skipped
    for fake in (first, second):
        assert_valid("openai", fake.requests[-1])
    sent = second.requests[-1].json()
    assert sent == {"model": "text-embedding-3-small", "input": "hello", "dimensions": 6}


def test_embeddings_as_base64_and_the_sdk_default(gateway: GatewayThread) -> None:
    texts = ["a cat", "a dog"]
    as_b64 = sdk(gateway).embeddings.create(model="embed", input=texts, encoding_format="base64")
    for item, text in zip(as_b64.data, texts, strict=True):
        assert isinstance(item.embedding, str)
        packed = base64.b64decode(item.embedding)
        assert list(struct.unpack("<8f", packed)) == pytest.approx(vector(text, 8))
    # Without encoding_format the SDK asks for base64 itself and decodes it.
    plain = sdk(gateway).embeddings.create(model="embed", input=texts)
    assert [d.index for d in plain.data] == [0, 1]
    assert plain.data[1].embedding == pytest.approx(vector("a dog", 8))


def test_embeddings_errors(gateway: GatewayThread) -> None:
    with pytest.raises(openai.BadRequestError, match="'text'") as none:
        sdk(gateway).embeddings.create(model="text", input="hello")
    assert "serves embeddings" in none.value.message
    with pytest.raises(openai.BadRequestError, match="encoding_format"):
        sdk(gateway).embeddings.create(model="embed", input="x", encoding_format="int8")  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError, match="input"):
        sdk(gateway).embeddings.create(model="embed", input=[])


def test_the_fake_refuses_what_the_spec_refuses(gateway: GatewayThread) -> None:
    first = gateway.fakes[1]  # type: ignore[attr-defined]
    bad = httpx.post(first.url + "/v1/embeddings", headers={"authorization": f"Bearer {KEY}"},
                     json={"model": "m", "input": "x", "encoding_format": "int8"})  # fmt: skip
    assert bad.status_code == 400 and "encoding_format" in bad.text


def test_a_completion_cut_mid_stream_continues_its_text_on_the_next_server(
    tmp_path: Path,
) -> None:
    with OpenAIFake() as a, OpenAIFake() as b:
        a.cut_after(3)
        table = write_routes(tmp_path, route_of("text", local("a", a), local("b", b)))
        with GatewayThread(table, keepalive=0.05) as gw:
            chunks = list(sdk(gw).completions.create(model="text", prompt=PROMPT, stream=True))
    shown = "".join(c.choices[0].text for c in chunks[:3])  # what a streamed before dying
    assert shown and DEFAULT_TEXT.startswith(shown)
    continued = b.requests[-1].json()["prompt"]
    assert continued == PROMPT + shown  # the text so far, continued as it is: no splice
    assert chunks[-1].model_extra is not None
    assert chunks[-1].model_extra["x_batuta"]["failed_over_from"] == ["a"]
    assert "".join(c.choices[0].text for c in chunks if c.choices).startswith(shown)
