"""A loopback HTTP server for faking one provider's protocol faithfully.

Each fake is a real server on 127.0.0.1 (port 0) running in a thread. A fake registers
handlers per (method, path-regex); a handler gets a :class:`Request` and writes the
response with the helpers here, including streamed bodies (SSE, NDJSON, binary frames)
sent chunk by chunk with real delays and real cuts. Every request is recorded so tests
can assert on what the adapter sent (headers, body) and validate it against a spec.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    match: re.Match[str] | None = None
    client: tuple[str, int] = ("", 0)  # the peer's address: a reused connection keeps its port

    def json(self) -> Any:
        return json.loads(self.body or b"null")


class Responder:
    """Writes one response; handlers call exactly one of its send methods."""

    def __init__(self, handler: BaseHTTPRequestHandler) -> None:
        self._h = handler

    def send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.send_bytes(status, json.dumps(body).encode(), "application/json", headers)

    def send_bytes(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        h = self._h
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)
        h.wfile.flush()

    def stream(
        self,
        status: int,
        pieces: Iterable[bytes | float | None],
        content_type: str = "text/event-stream",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Send a chunked body. A float item sleeps that many seconds; ``None`` cuts the
        connection abruptly (no terminating chunk), as a dying server would."""
        h = self._h
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Transfer-Encoding", "chunked")
        h.send_header("Cache-Control", "no-cache")
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        for piece in pieces:
            if piece is None:
                h.wfile.flush()
                h.close_connection = True
                with contextlib.suppress(OSError):
                    h.connection.shutdown(socket.SHUT_RDWR)
                return
            if isinstance(piece, float):
                time.sleep(piece)
                continue
            if not piece:
                continue
            h.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            h.wfile.flush()
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event; ``data`` is JSON-encoded unless it is already a string."""
    text = data if isinstance(data, str) else json.dumps(data)
    head = f"event: {event}\n" if event else ""
    return (head + "".join(f"data: {line}\n" for line in text.split("\n")) + "\n").encode()


def ndjson(obj: Any) -> bytes:
    """One NDJSON line."""
    return (json.dumps(obj) + "\n").encode()


Handler = Callable[[Request, Responder], None]


@dataclass
class FakeServer:
    """Base for protocol fakes: ``route()`` handlers, then ``start()`` / ``stop()``."""

    routes: list[tuple[str, re.Pattern[str], Handler]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 0
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        self.routes.append((method.upper(), re.compile(f"^{pattern}$"), handler))

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> FakeServer:
        fake = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # TCP_NODELAY, as real servers set it: without it a reused keep-alive connection
            # waits ~40 ms for the client's delayed ACK before each small streamed write.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def _dispatch(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                req = Request(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                    client=(str(self.client_address[0]), int(self.client_address[1])),
                )
                fake.requests.append(req)
                for method, pattern, handler in fake.routes:
                    m = pattern.match(parts.path)
                    if m and method == self.command:
                        req.match = m
                        handler(req, Responder(self))
                        return
                Responder(self).send_json(404, {"error": f"no route for {parts.path}"})

            do_GET = do_POST = do_DELETE = do_HEAD = do_PUT = _dispatch

        class _Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                # A client hanging up mid-response is what failover tests do on purpose.
                import sys

                if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
                    super().handle_error(request, client_address)

        self._server = _Server((self.host, self.port), _H)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
