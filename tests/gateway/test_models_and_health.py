"""``/v1/models``, ``/health``, ``/ready``, and the routing table read again when it changes."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from batuta.backends.types import Target
from batuta.router.breaker import Breakers
from batuta.router.targets import target_of
from batuta.routing.table import TargetEntry
from tests.fakes.openai_server import OpenAIFake
from tests.gateway.helpers import GatewayThread, local, route_of, write_routes


def test_models_lists_routes_aliases_and_targets(tmp_path: Path) -> None:
    with OpenAIFake() as fake:
        groq = TargetEntry("groq", "groq", "openai", fake.url, "llama", False, "GROQ_API_KEY")
        table = write_routes(
            tmp_path,
            route_of("default", local("local", fake), groq, aliases=("gpt-4o-mini",)),
            route_of("fast", groq),
        )
        with GatewayThread(table) as gw:
            sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
            listed = {m.id: m.owned_by for m in sdk.models.list()}
            one = sdk.models.retrieve("gpt-4o-mini")
            with pytest.raises(openai.NotFoundError, match="did you mean 'fast'"):
                sdk.models.retrieve("fats")
    assert listed == {"default": "default", "fast": "fast", "gpt-4o-mini": "default",
                      "local": "llamacpp", "groq": "groq"}  # fmt: skip
    assert one.id == "gpt-4o-mini" and one.object == "model"
    assert fake.requests == []  # listing never calls an upstream


def test_health_never_calls_upstream_and_ready_reads_breakers(tmp_path: Path) -> None:
    dead = TargetEntry("dead", "llamacpp", "openai", "http://127.0.0.1:9", "m", True)
    table = write_routes(tmp_path, route_of("default", dead))
    with GatewayThread(table) as gw:
        assert gw.get("/health").json() == {"status": "ok"}
        assert gw.get("/ready").status_code == 200
        breakers = Breakers(tmp_path / "breakers.json")
        target: Target = target_of(dead)
        for _ in range(10):
            breakers.record_failure(target)
        # The gateway looks at the breakers file again after at most BREAKER_RECHECK.
        end = time.monotonic() + 2.0
        while (ready := gw.get("/ready")).status_code == 200 and time.monotonic() < end:
            time.sleep(0.01)
    assert ready.status_code == 503 and "default" in ready.json()["reason"]


def test_ready_and_queries_without_a_table_are_503(tmp_path: Path) -> None:
    with GatewayThread(tmp_path / "routes.json") as gw:
        assert gw.get("/health").status_code == 200
        ready = gw.get("/ready")
        r = httpx.post(
            gw.url + "/v1/chat/completions",
            json={"model": "x", "messages": [{"role": "user", "content": "Hi"}]},
        )
    assert ready.status_code == 503 and "batuta apply" in ready.json()["reason"]
    assert r.status_code == 503 and "batuta apply" in r.json()["error"]["message"]


def test_unknown_paths_and_methods(tmp_path: Path) -> None:
    with GatewayThread(write_routes(tmp_path)) as gw:
        assert gw.get("/v2/nothing").status_code == 404
        assert gw.get("/v1/chat/completions").status_code == 405
        assert httpx.post(gw.url + "/health").status_code == 405


def test_table_change_is_picked_up_without_failing_requests_in_flight(tmp_path: Path) -> None:
    with OpenAIFake(text="old answer") as old, OpenAIFake(text="new answer") as new:
        old.chunk_delay = 0.05
        table = write_routes(tmp_path, route_of("default", local("a", old)))
        with GatewayThread(table) as gw:
            sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
            hi = [{"role": "user", "content": "Hi"}]
            stream = sdk.chat.completions.create(model="default", messages=hi, stream=True)
            first = next(iter(stream))
            write_routes(tmp_path, route_of("default", local("b", new)), route_of("extra"))
            rest = "".join(c.choices[0].delta.content or "" for c in stream)
            after = sdk.chat.completions.create(model="default", messages=hi)
            ids = [m.id for m in sdk.models.list()]
    assert (first.choices[0].delta.content or "") + rest == "old answer"
    assert after.choices[0].message.content == "new answer"
    assert "extra" in ids


def test_a_broken_table_keeps_the_last_good_one(tmp_path: Path) -> None:
    with OpenAIFake(text="still here") as fake:
        table = write_routes(tmp_path, route_of("default", local("a", fake)))
        with GatewayThread(table) as gw:
            sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
            hi = [{"role": "user", "content": "Hi"}]
            assert sdk.chat.completions.create(model="default", messages=hi).choices
            table.write_text("{broken")
            done = sdk.chat.completions.create(model="default", messages=hi)
    assert done.choices[0].message.content == "still here"


def test_concurrent_requests_share_one_gateway(tmp_path: Path) -> None:
    with OpenAIFake(text="same answer") as fake:
        fake.chunk_delay = 0.01
        table = write_routes(tmp_path, route_of("default", local("a", fake)))
        with GatewayThread(table) as gw:
            sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0)
            out: list[str] = []

            def ask() -> None:
                hi = [{"role": "user", "content": "Hi"}]
                stream = sdk.chat.completions.create(model="default", messages=hi, stream=True)
                out.append("".join(c.choices[0].delta.content or "" for c in stream))

            threads = [threading.Thread(target=ask) for _ in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
    assert out == ["same answer"] * 6


def test_a_body_that_does_not_arrive_is_408(tmp_path: Path) -> None:
    with (
        GatewayThread(write_routes(tmp_path), body_timeout=0.2) as gw,
        socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock,
    ):
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: gw\r\nContent-Length: 100\r\n\r\n{")
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            piece = sock.recv(4096)
            if not piece:
                break
            answer += piece
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 408 ")
    assert json.loads(body)["error"]["type"] == "timeout_error"  # Anthropic's shape there


def test_a_body_too_large_is_413(tmp_path: Path) -> None:
    from batuta.gateway.app import MAX_BODY

    with GatewayThread(write_routes(tmp_path)) as gw:
        r = httpx.post(gw.url + "/v1/chat/completions", content=b" " * (MAX_BODY + 1), timeout=30)
    assert r.status_code == 413 and r.json()["error"]["type"] == "invalid_request_error"
