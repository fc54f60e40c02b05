"""Readiness: ask a server's own readiness endpoint whether it can answer yet.

``ready``: 2xx (or 401/403: it is up and enforcing a key); ``loading``: 503, which
llama.cpp, vLLM, TGI and TabbyAPI answer while the model loads; ``down``: anything else,
including refused connections and timeouts. Probes never use proxy settings from the
environment (a loopback probe sent to a corporate proxy would always fail) and never
follow redirects.

A plain ``http://`` URL (every local server's readiness URL) is probed over a socket:
one request, and the status line of the answer. The supervisor probes a server it has
just spawned, and importing httpx (or even ``http.client``) first would cost a good part
of what a small model takes to load. ``https://`` URLs (remote APIs) go through httpx,
for its certificate handling.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import httpx

Health = Literal["ready", "loading", "down"]

_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})[ \r]")
_MAX_ANSWER = 1 << 16  # a readiness answer is a few bytes; stop reading beyond this

_client: httpx.Client | None = None
_client_lock = threading.Lock()


def _shared_client() -> httpx.Client:
    # One client for every probe: creating one per call costs an SSL context each time.
    global _client
    with _client_lock:
        if _client is None:
            import httpx

            _client = httpx.Client(trust_env=False, follow_redirects=False)
        return _client


def classify(status_code: int) -> Health:
    """Readiness from the status code of a readiness endpoint."""
    if 200 <= status_code < 300 or status_code in (401, 403):
        return "ready"
    if status_code == 503:
        return "loading"
    return "down"


def probe(url: str, timeout: float = 1.0) -> Health:
    """GET ``url`` once: ``ready`` | ``loading`` | ``down``."""
    if url.lower().startswith("http://"):
        return _probe_plain(url, timeout)
    import httpx

    try:
        response = _shared_client().get(url, timeout=timeout)
    except httpx.HTTPError:
        return "down"
    return classify(response.status_code)


def _probe_plain(url: str, timeout: float) -> Health:
    """One HTTP/1.1 GET over a socket of its own; the answer is read to its end (the
    server closes it), so the server never writes into a connection reset under it."""
    parts = urlsplit(url)
    try:
        address = (parts.hostname or "", parts.port or 80)
    except ValueError:  # a port that is not a number
        return "down"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.netloc.rpartition("@")[2]
    request = f"GET {target} HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    deadline = time.monotonic() + timeout
    try:
        conn = socket.create_connection(address, timeout=timeout)
    except (OSError, UnicodeError):  # refused, timed out; a host name idna rejects
        return "down"
    head = b""
    with conn:
        try:
            conn.sendall(request.encode("latin-1"))
            while len(head) < _MAX_ANSWER:
                conn.settimeout(max(0.001, deadline - time.monotonic()))
                chunk = conn.recv(4096)
                if not chunk:
                    break
                head += chunk
        except OSError:  # reset or timed out: a status line that arrived still counts
            pass
    match = _STATUS_LINE.match(head)
    return classify(int(match.group(1))) if match else "down"


def wait_ready(url: str, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``url`` until it is ready (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if probe(url, timeout=max(0.2, min(1.0, timeout))) == "ready":
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
