"""Helpers for driving an adapter against a loopback server from synchronous tests."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from batuta.backends.registry import adapter_for
from batuta.backends.types import Chunk, Completion, InferenceRequest, Target
from batuta.errors import BackendError

SECRET = "sk-test-0123456789abcdef"  # the value tests put in key variables
KIND = "httpx"  # the client the helpers send with; test_over_aiohttp.py sets "aiohttp"


def new_client() -> Any:
    """A fresh client of :data:`KIND` (use as ``async with``)."""
    if KIND == "aiohttp":
        from batuta.backends._aio import AioClient

        return AioClient()
    return httpx.AsyncClient()


async def _drain(target: Target, request: InferenceRequest, **kw: Any):
    got: list[Chunk] = []
    async with new_client() as client:
        try:
            async for chunk in adapter_for(target, client).stream(request, **kw):
                got.append(chunk)
        except BackendError as exc:
            return got, exc
    return got, None


def drain(
    target: Target, request: InferenceRequest | None = None, **kw: Any
) -> tuple[list[Chunk], BackendError | None]:
    """Stream ``request``; the chunks received and the error that ended it (if any)."""
    return asyncio.run(_drain(target, request or InferenceRequest(prompt="Hi"), **kw))


def complete(target: Target, request: InferenceRequest | None = None, **kw: Any) -> Completion:
    async def go() -> Completion:
        async with new_client() as client:
            adapter = adapter_for(target, client)
            return await adapter.complete(request or InferenceRequest(prompt="Hi"), **kw)

    return asyncio.run(go())


def complete_error(
    target: Target, request: InferenceRequest | None = None, **kw: Any
) -> BackendError:
    try:
        complete(target, request, **kw)
    except BackendError as exc:
        return exc
    raise AssertionError("expected a BackendError")


def health(target: Target) -> bool:
    async def go() -> bool:
        async with new_client() as client:
            return await adapter_for(target, client).health()

    return asyncio.run(go())


def text_of(chunks: list[Chunk]) -> str:
    return "".join(c.text for c in chunks)


def odd_server(path: str, body: object, *, stream: bool = False, headers: dict | None = None):
    """A server answering ``POST path`` with 200 and an unusual (but possible) body:
    JSON ``body``, or with ``stream`` a list of raw pieces sent chunked (``None`` cuts)."""
    import json

    from tests.fakes.scripted import QuietFake as FakeServer

    server = FakeServer()

    def handler(req, resp):
        if stream:
            resp.stream(200, body, headers=headers)
        else:
            resp.send_bytes(200, json.dumps(body).encode(), "application/json", headers)

    server.route("POST", path, handler)
    return server
