"""The ``openai`` SDK through the gateway to a REAL llama-server (SmolLM2-135M) started
with batuta's embeddings switch: embeddings, a ``response_format`` that reaches the
engine, and legacy completions on its own completions route.

The server runs with the flags ``embeddings: true`` adds (``--embeddings --pooling mean``),
which also shows chat completions still work on such a server in the vendored llama.cpp.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from batuta.catalogue import lookup
from tests.gateway.helpers import GatewayThread, write_routes
from tests.router.test_real_failover import LlamaServer, english, route

pytestmark = pytest.mark.engine

EMBEDDINGS_ARGV = lookup("llamacpp").launch[0].embeddings_argv  # llama-server's recipe
DIMS = 576  # SmolLM2-135M's embedding width


@pytest.fixture(scope="module")
def gateway(
    smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayThread]:
    folder = tmp_path_factory.mktemp("llama-embed")
    server = LlamaServer(
        smollm2_path, folder / "server.log", "server", ("-c", "1024", *EMBEDDINGS_ARGV)
    )
    try:
        table = write_routes(folder, route(server.entry("smol", embeddings=True)))
        with GatewayThread(table) as gw:
            yield gw
    finally:
        server.stop()


def sdk(gw: GatewayThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_real_embeddings_as_floats_and_base64(gateway: GatewayThread) -> None:
    texts = ["The cat sat on the mat.", "Stock markets fell sharply today."]
    floats = sdk(gateway).embeddings.create(model="local", input=texts, encoding_format="float")
    vectors = [d.embedding for d in floats.data]
    assert [len(v) for v in vectors] == [DIMS, DIMS] and vectors[0] != vectors[1]
    assert sum(x * x for x in vectors[0]) == pytest.approx(1.0, abs=1e-3)  # normalised
    assert floats.usage.prompt_tokens > 5  # the server's own count
    packed = sdk(gateway).embeddings.create(model="local", input=texts[0], encoding_format="base64")
    raw = packed.data[0].embedding
    assert isinstance(raw, str)
    decoded = struct.unpack(f"<{DIMS}f", base64.b64decode(raw))
    assert list(decoded) == pytest.approx(vectors[0], abs=1e-5)


def test_json_object_reaches_the_engine_and_the_answer_parses(gateway: GatewayThread) -> None:
    done = sdk(gateway).chat.completions.create(
        model="local", temperature=0, max_tokens=40, response_format={"type": "json_object"},
        messages=[{"role": "user", "content": 'Reply with exactly this JSON and nothing else: {"ok": true}'}],
    )  # fmt: skip
    content = done.choices[0].message.content or ""
    assert done.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(content), dict)


def test_real_text_completion_blocking_and_streamed(gateway: GatewayThread) -> None:
    prompt = "The capital of France is Paris. The capital of Italy is"
    blocking = sdk(gateway).completions.create(
        model="local", prompt=prompt, max_tokens=8, temperature=0
    )
    text = blocking.choices[0].text
    assert english(text) and blocking.choices[0].finish_reason == "length"
    assert blocking.usage is not None and blocking.usage.completion_tokens == 8
    streamed = sdk(gateway).completions.create(
        model="local", prompt=prompt, max_tokens=8, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == text  # greedy: the same
