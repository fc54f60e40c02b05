"""Readiness probes against loopback servers answering what real engines answer."""

from __future__ import annotations

import time

import pytest

from batuta.runtime.health import classify, probe, wait_ready
from tests.fakes.base import FakeServer


@pytest.fixture
def server():
    fake = FakeServer()
    fake.route("GET", "/health", lambda q, r: r.send_json(200, {"status": "ok"}))
    fake.route(
        "GET",
        "/loading",
        lambda q, r: r.send_json(
            503, {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
        ),
    )
    fake.route("GET", "/locked", lambda q, r: r.send_json(401, {"error": "unauthorized"}))
    fake.route("GET", "/broken", lambda q, r: r.send_json(500, {"error": "boom"}))
    fake.route("GET", "/slow", lambda q, r: (time.sleep(1.0), r.send_json(200, {}))[1])
    with fake:
        yield fake


@pytest.mark.parametrize(
    "path, expected",
    [("/health", "ready"), ("/loading", "loading"), ("/locked", "ready"), ("/broken", "down"),
     ("/missing", "down")],
)  # fmt: skip
def test_probe(server, path, expected) -> None:
    assert probe(server.url + path) == expected


def test_probe_refused_and_timeout(server, free_port) -> None:
    assert probe(f"http://127.0.0.1:{free_port}/health") == "down"
    assert probe(server.url + "/slow", timeout=0.2) == "down"


def test_probe_ignores_proxy_settings(server, monkeypatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    assert probe(server.url + "/health") == "ready"


def test_classify() -> None:
    assert [classify(c) for c in (200, 204, 403, 503, 404, 502)] == [
        "ready", "ready", "ready", "loading", "down", "down"
    ]  # fmt: skip


def test_wait_ready(server, free_port) -> None:
    assert wait_ready(server.url + "/health", timeout=1.0)
    began = time.monotonic()
    assert not wait_ready(server.url + "/loading", timeout=0.3, interval=0.05)
    assert 0.3 <= time.monotonic() - began < 2.0
    assert not wait_ready(f"http://127.0.0.1:{free_port}/", timeout=0.1)
