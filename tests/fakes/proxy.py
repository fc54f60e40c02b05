"""A forward HTTP proxy on 127.0.0.1 that records what reaches it and forwards nothing.

Clients configured with ``HTTP_PROXY``/``HTTPS_PROXY`` pointing here send it either an
absolute-form request (``GET http://host/path``) or a ``CONNECT host:443`` tunnel request.
Each is recorded (method and target) and answered ``502 Bad Gateway``, as a proxy that
cannot reach the destination would: a request that went through the proxy shows up in
``seen`` and never reaches its server.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class RecordingProxy:
    """``with RecordingProxy() as proxy:`` ... ``proxy.url``, ``proxy.seen``."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def install(self, monkeypatch: Any) -> None:
        """Make this the proxy of every scheme for the test (``*_PROXY`` upper and lower
        case), with no ``NO_PROXY`` exception: only the loopback rule may bypass it."""
        for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            monkeypatch.setenv(var, self.url)
            monkeypatch.setenv(var.lower(), self.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)

    def start(self) -> RecordingProxy:
        proxy = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def _refuse(self) -> None:
                proxy.seen.append(f"{self.command} {self.path}")
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                body = b"proxy: destination unreachable"
                self.send_response(502)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            do_GET = do_POST = do_CONNECT = do_HEAD = do_PUT = do_DELETE = _refuse

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _H)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> RecordingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
