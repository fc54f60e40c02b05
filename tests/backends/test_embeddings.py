"""The embeddings call (batuta.backends.embeddings) against loopback servers: answers in
either encoding, out of order, and the answers it refuses as MALFORMED."""

from __future__ import annotations

import asyncio
import base64
import struct
from typing import Any

import httpx
import pytest

from batuta.backends.embeddings import EmbeddingRequest, Embeddings, embed
from batuta.backends.types import Target
from batuta.errors import BackendError, FailureKind
from tests.fakes.base import FakeServer, Request, Responder


def serve(answer: Any) -> FakeServer:
    fake = FakeServer()
    fake.route("POST", "/v1/embeddings", lambda q, r: r.send_json(200, answer))
    return fake


def call(fake: FakeServer, request: EmbeddingRequest | None = None) -> Embeddings:
    target = Target("vllm", "vllm", "openai", fake.url, "bge", local=True)

    async def main() -> Embeddings:
        async with httpx.AsyncClient() as client:
            return await embed(target, client, request or EmbeddingRequest(["a", "b"]))

    return asyncio.run(main())


def test_base64_answers_are_decoded_and_data_is_put_in_input_order() -> None:
    packed = base64.b64encode(struct.pack("<2f", 0.5, -0.25)).decode()
    data = [{"index": 1, "embedding": [1, 2]}, {"index": 0, "embedding": packed}]
    with serve({"data": data, "usage": {"prompt_tokens": 3}}) as fake:
        done = call(fake, EmbeddingRequest(["a", "b"], {"dimensions": 2}))
        sent: Request = fake.requests[-1]
    assert done.vectors == [[0.5, -0.25], [1.0, 2.0]] and done.input_tokens == 3
    assert sent.json() == {"model": "bge", "input": ["a", "b"], "dimensions": 2}


@pytest.mark.parametrize(
    "answer",
    [
        {"data": {"x": 1}},
        {"data": [{"embedding": ["x"]}]},
        {"data": [{"embedding": True}]},
        {"data": [{"embedding": [[0.1, 0.2], [0.3, 0.4]]}]},  # per token: no pooling
    ],
)
def test_answers_that_are_not_embeddings_are_malformed(answer: Any) -> None:
    with serve(answer) as fake, pytest.raises(BackendError) as caught:
        call(fake)
    assert caught.value.kind is FailureKind.MALFORMED


def test_an_error_status_is_classified() -> None:
    fake = FakeServer()
    fake.route("POST", "/v1/embeddings", lambda q, r: _refuse(r))
    with fake, pytest.raises(BackendError) as caught:
        call(fake)
    assert caught.value.kind is FailureKind.CLIENT and "not an embedding model" in str(caught.value)


def _refuse(resp: Responder) -> None:
    error = {"message": "not an embedding model", "type": "invalid_request_error"}
    resp.send_json(400, {"error": error})
