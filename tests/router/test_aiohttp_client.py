"""The router over the gateway's aiohttp client (``Router(http="aiohttp")``): the same
answers, failover and loopback-never-through-a-proxy rule as over httpx."""

from __future__ import annotations

import pytest

from batuta.backends._aio import AioClient
from batuta.backends.types import InferenceRequest
from batuta.errors import AllTargetsFailed, FailureKind
from batuta.router.engine import Router
from batuta.routing.table import TargetEntry
from tests.fakes.openai_server import OpenAIFake
from tests.fakes.proxy import RecordingProxy
from tests.router.test_engine import (  # noqa: F401
    ALPHA,
    Sleeps,
    ask,
    fakes,
    local,
    route_of,
    servers,
)


def test_the_router_makes_an_aiohttp_client_when_asked() -> None:
    assert isinstance(Router(http="aiohttp").client, AioClient)
    assert not isinstance(Router().client, AioClient)


def test_a_stream_and_a_failover_over_aiohttp(fakes, free_port) -> None:  # noqa: F811
    a, b = fakes
    shown: list[str] = []
    resp = ask(Router(http="aiohttp"), route_of(local("a", a)), on_text=shown.append)
    assert resp.text == a.text == "".join(shown)
    dead = TargetEntry("dead", "llamacpp", "openai", f"http://127.0.0.1:{free_port}", "m", True)
    a.cut_after(2)
    resp = ask(Router(sleep=Sleeps(), http="aiohttp"), route_of(dead, local("a", a), local("b", b), retries=0),
               InferenceRequest("Hi", stream=True))  # fmt: skip
    assert resp.target == "b" and resp.failed_over_from == ["dead", "a"]
    assert resp.text.startswith(ALPHA[:5])  # a's streamed text, continued by b


def test_a_sovereign_route_on_any_loopback_address_never_reaches_the_proxy(monkeypatch) -> None:
    near = OpenAIFake(text=ALPHA)
    near.host = "127.0.0.2"
    with RecordingProxy() as proxy, near:
        proxy.install(monkeypatch)
        other = TargetEntry("other", "llamacpp", "openai", "http://127.0.0.2:9", "m", True)
        named = TargetEntry(
            "named", "llamacpp", "openai", f"http://batuta-test.localhost:{near.port}", "m", True
        )
        there = TargetEntry("there", "llamacpp", "openai", near.url, "fake-model", True)
        route = route_of(other, named, there, privacy="sovereign", retries=0)
        resp = ask(Router(sleep=Sleeps(), http="aiohttp"), route)
        assert resp.target == "there" and resp.text == ALPHA
        assert resp.failed_over_from == ["other", "named"]
        assert proxy.seen == []
        # The proxy is live: a target elsewhere does go through it.
        away = TargetEntry("away", "llamacpp", "openai", "http://192.0.2.1:9", "m", False)
        with pytest.raises(AllTargetsFailed) as failed:
            ask(Router(sleep=Sleeps(), http="aiohttp"), route_of(away, retries=0))
        assert proxy.seen == ["POST http://192.0.2.1:9/v1/chat/completions"]
        assert failed.value.attempts[0].kind is FailureKind.SERVER  # the proxy's 502
