"""Readiness probes against loopback servers answering what real engines answer."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
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


class RawServer:
    """A TCP listener that answers every connection with ``reply`` and then keeps it
    open (``linger``) or closes it: what a server that is not plain HTTP does."""

    def __init__(self, reply: bytes, linger: float = 0.0) -> None:
        self.reply, self.linger = reply, linger
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                with conn:
                    self.requests.append(conn.recv(4096))
                    conn.sendall(self.reply)
                    time.sleep(self.linger)

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize(
    "reply, expected",
    [(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "ready"),
     (b"HTTP/1.0 503 Service Unavailable\r\n\r\n", "loading"),
     (b"SSH-2.0-OpenSSH_9.6\r\n", "down"), (b"", "down"), (b"HTTP/1.1 2000 OK\r\n", "down")],
)  # fmt: skip
def test_plain_probe_reads_the_status_line(reply, expected) -> None:
    server = RawServer(reply)
    try:
        assert probe(server.url + "/health?x=1") == expected
        assert server.requests[0].startswith(b"GET /health?x=1 HTTP/1.1\r\n")
        assert b"\r\nHost: 127.0.0.1:" in server.requests[0]
    finally:
        server.close()


def test_plain_probe_takes_a_status_even_when_the_server_keeps_the_connection() -> None:
    server = RawServer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", linger=2.0)
    try:
        assert probe(server.url + "/health", timeout=0.2) == "ready"
    finally:
        server.close()


def test_probe_of_a_bad_url_or_nothing_listening_is_down(free_port) -> None:
    assert probe("http://127.0.0.1:notaport/health") == "down"
    assert probe(f"http://[::1]:{free_port}/health") == "down"
    assert probe(f"https://127.0.0.1:{free_port}/health") == "down"  # through httpx


def test_probing_a_plain_url_does_not_import_httpx(free_port) -> None:
    # The supervisor probes a server it has just spawned: an import of httpx there
    # would delay the first probe by more than a small model takes to load.
    code = (
        "import sys; from batuta.runtime.health import probe; "
        f"assert probe('http://127.0.0.1:{free_port}/health') == 'down'; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('httpx', 'http')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
