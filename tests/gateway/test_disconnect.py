"""A client that goes away cancels its upstream request: the upstream sees its connection
closed within 100 ms, whether the answer was streaming or not yet begun."""

from __future__ import annotations

import json
import select
import socket
import time
from pathlib import Path

import pytest

from batuta.routing.table import TargetEntry
from tests.fakes.base import FakeServer, Request, Responder, sse
from tests.gateway.helpers import GatewayThread, route_of, write_routes


class HangingUpstream(FakeServer):
    """An OpenAI-style server that sends one token (when streaming) and then waits,
    noting when its client closes the connection."""

    def __init__(self) -> None:
        super().__init__()
        self.closed_at: list[float] = []
        self.route("POST", "/v1/chat/completions", self._chat)

    def _chat(self, req: Request, resp: Responder) -> None:
        h = resp._h
        if req.json().get("stream"):
            h.send_response(200)
            h.send_header("Content-Type", "text/event-stream")
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            delta = {
                "choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": None}]
            }
            piece = sse({"id": "c", "object": "chat.completion.chunk", **delta})
            h.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            h.wfile.flush()
        conn = h.connection
        end = time.monotonic() + 20
        while time.monotonic() < end:
            ready, _, _ = select.select([conn], [], [], 0.005)
            if ready and conn.recv(1, socket.MSG_PEEK) == b"":
                self.closed_at.append(time.monotonic())
                break
        h.close_connection = True


def _request(port: int, stream: bool) -> socket.socket:
    body = json.dumps({"model": "r", "messages": [{"role": "user", "content": "Hi"}],
                       "stream": stream}).encode()  # fmt: skip
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    return sock


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("pause", [0.0, 0.05])  # at once (before the watch begins), or later
def test_client_going_away_closes_the_upstream_connection(
    tmp_path: Path, stream: bool, pause: float
) -> None:
    with HangingUpstream() as upstream:
        entry = TargetEntry("u", "llamacpp", "openai", upstream.url, "m", True)
        table = write_routes(tmp_path, route_of("r", entry, timeout=30.0))
        with GatewayThread(table) as gw:
            sock = _request(gw.port, stream)
            seen = b""
            if stream:
                while b"Hello" not in seen:
                    piece = sock.recv(4096)
                    assert piece, seen
                    seen += piece
            else:
                end = time.monotonic() + 10
                while not upstream.requests and time.monotonic() < end:
                    time.sleep(0.005)
                assert upstream.requests
            time.sleep(pause)  # the upstream is waiting on its connection
            sock.close()
            gone = time.monotonic()
            end = gone + 5
            while not upstream.closed_at and time.monotonic() < end:
                time.sleep(0.002)
    assert upstream.closed_at, "the upstream connection stayed open"
    assert upstream.closed_at[0] - gone < 0.1
