"""Readiness: ask a server's own readiness endpoint whether it can answer yet.

``ready``: 2xx (or 401/403: it is up and enforcing a key); ``loading``: 503, which
llama.cpp, vLLM, TGI and TabbyAPI answer while the model loads; ``down``: anything else,
including refused connections and timeouts. Probes never use proxy settings from the
environment: a loopback probe sent to a corporate proxy would always fail.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import httpx

Health = Literal["ready", "loading", "down"]

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
    import httpx

    try:
        response = _shared_client().get(url, timeout=timeout)
    except httpx.HTTPError:
        return "down"
    return classify(response.status_code)


def wait_ready(url: str, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``url`` until it is ready (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if probe(url, timeout=max(0.2, min(1.0, timeout))) == "ready":
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
