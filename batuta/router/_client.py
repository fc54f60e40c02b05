"""The one ``httpx.AsyncClient`` a router shares between every target.

Two choices keep it fast and private. A TLS context (loading the CA bundle costs ~40 ms,
a sixth of a CLI query) is built only when the first ``https://`` request goes out, so
queries to local servers never pay for it. And loopback never goes through a proxy, so
a proxy set in the environment cannot carry a sovereign route's prompt off the machine.
"""

from __future__ import annotations

import urllib.request

import httpx

_LIMITS = httpx.Limits(max_connections=256, max_keepalive_connections=64)
_TIMEOUT = httpx.Timeout(None, connect=10.0)  # the router and adapters bound each call
_LOOPBACK = ("all://127.0.0.1", "all://localhost", "all://[::1]")


class _SchemeTransport(httpx.AsyncBaseTransport):
    """Plain HTTP at once; the TLS transport on the first https request."""

    def __init__(self) -> None:
        # verify=False only skips loading CAs: this transport never speaks TLS.
        self._plain = httpx.AsyncHTTPTransport(verify=False, limits=_LIMITS)
        self._tls: httpx.AsyncHTTPTransport | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme == "https":
            if self._tls is None:
                self._tls = httpx.AsyncHTTPTransport(limits=_LIMITS)
            return await self._tls.handle_async_request(request)
        return await self._plain.handle_async_request(request)

    async def aclose(self) -> None:
        await self._plain.aclose()
        if self._tls is not None:
            await self._tls.aclose()


def make_client() -> httpx.AsyncClient:
    """A pooled client; with proxies in the environment, httpx's own transports honour them
    (except for loopback)."""
    if any(k != "no" for k in urllib.request.getproxies()):
        return httpx.AsyncClient(timeout=_TIMEOUT, limits=_LIMITS, mounts=dict.fromkeys(_LOOPBACK))
    return httpx.AsyncClient(timeout=_TIMEOUT, transport=_SchemeTransport())
