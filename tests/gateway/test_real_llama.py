"""The ``openai`` SDK through the gateway to REAL llama.cpp servers (SmolLM2-135M).

The failover test kills the first server (SIGKILL to its process group, by pid) while the
SDK reads its stream; the route's second server continues the answer (the router splices
it, see tests/router/test_real_continuation.py), and the SDK reads one stream, no error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from batuta.routing.build import template_options
from batuta.runtime.sources import _gguf_metadata
from tests.gateway.helpers import GatewayThread, write_routes
from tests.router.test_real_continuation import ENGINES, KILL_AFTER, MAX_TOKENS, PROMPT, one_answer
from tests.router.test_real_failover import LlamaServer, english, route

pytestmark = pytest.mark.engine

ENGINE = "server"  # llama.cpp's own llama-server, the engine batuta runs by default


@pytest.fixture(scope="module")
def template(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    options = template_options(_gguf_metadata(smollm2_path, tmp_path_factory.mktemp("cache")))
    return {**options, "param.repeat_penalty": "1.0"}


@pytest.fixture(scope="module")
def second(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    server = LlamaServer(smollm2_path, tmp_path_factory.mktemp("llama") / "b.log", ENGINE,
                         ENGINES[ENGINE])  # fmt: skip
    yield server
    server.stop()


@pytest.fixture
def first(smollm2_path: Path, tmp_path: Path) -> Iterator[LlamaServer]:
    server = LlamaServer(smollm2_path, tmp_path / "a.log", ENGINE, ENGINES[ENGINE])
    yield server
    server.stop()


def ask(gw: GatewayThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)


def greedy() -> dict[str, object]:
    return {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": MAX_TOKENS,
            "temperature": 0.0}  # fmt: skip


def test_sdk_against_a_real_server(
    second: LlamaServer, template: dict[str, str], tmp_path: Path
) -> None:
    table = write_routes(tmp_path, route(second.entry("b", **template)))
    with GatewayThread(table) as gw:
        blocking = ask(gw).chat.completions.create(model="local", **greedy())
        chunks = list(
            ask(gw).chat.completions.create(model="b", stream=True,  # the server by name
                                            stream_options={"include_usage": True}, **greedy())
        )  # fmt: skip
    text = blocking.choices[0].message.content or ""
    assert english(text) and blocking.choices[0].finish_reason == "length"
    assert blocking.usage is not None and blocking.usage.completion_tokens == MAX_TOKENS
    assert blocking.usage.prompt_tokens > 5  # the server's own count
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text  # greedy: the same answer
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == MAX_TOKENS


def test_server_killed_mid_stream_reads_as_one_stream(
    first: LlamaServer, second: LlamaServer, template: dict[str, str], tmp_path: Path
) -> None:
    chain = route(first.entry("a", **template), second.entry("b", **template))
    alone = dataclasses.replace(route(second.entry("b", **template)), name="reference")
    table = write_routes(tmp_path, chain, alone)
    with GatewayThread(table) as gw:
        reference = ask(gw).chat.completions.create(model="reference", **greedy())
        pieces: list[str] = []
        last = None
        for chunk in ask(gw).chat.completions.create(model="local", stream=True, **greedy()):
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
                if len(pieces) == KILL_AFTER:
                    first.kill()
            if chunk.choices and chunk.choices[0].finish_reason:
                last = chunk
    assert len(pieces) > KILL_AFTER and last is not None
    assert last.model_extra is not None
    assert last.model_extra["x_batuta"]["target"] == "b"
    assert last.model_extra["x_batuta"]["failed_over_from"] == ["a"]
    joined, expected = "".join(pieces), reference.choices[0].message.content or ""
    shown = "".join(pieces[:KILL_AFTER])
    assert one_answer(joined, expected, shown), (joined, expected)
    assert last.choices[0].finish_reason == "length"
