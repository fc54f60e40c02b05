"""An httpx transport that applies the loopback rule to every request.

httpx's ``mounts`` match exact hosts only, so ``127.0.0.2`` or ``foo.localhost`` would go
through ``HTTP_PROXY`` while the privacy check counts them as this machine. This
transport decides per request instead (:func:`batuta._util.net.proxy_for`): loopback is
sent directly, anything else through the environment's proxy when one applies. Each kind
of connection pool (direct plain, direct TLS, one per proxy) is created on first use, so
a run that only talks to local servers never loads the CA bundle (~40 ms).

Clients using it are built with ``trust_env=False``: the proxy choice is made here.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from batuta._util.net import environment_proxies, proxy_for


class LoopbackDirectTransport(httpx.AsyncBaseTransport):
    """Loopback direct, everything else as the environment's proxy settings say."""

    def __init__(self, limits: httpx.Limits, proxies: Mapping[str, str] | None = None) -> None:
        self._limits = limits
        self._proxies = environment_proxies() if proxies is None else dict(proxies)
        self._pools: dict[tuple[str | None, bool], httpx.AsyncHTTPTransport] = {}
        self._routes: dict[tuple[str, str, int | None], str | None] = {}

    def route(self, url: httpx.URL) -> str | None:
        """The proxy ``url`` goes through, or None when it is sent directly."""
        origin = (url.scheme, url.host, url.port)
        if origin not in self._routes:  # decided once per origin: a benchmark sends many
            self._routes[origin] = proxy_for(str(url), self._proxies)
        return self._routes[origin]

    def _pool(self, url: httpx.URL) -> httpx.AsyncHTTPTransport:
        proxy = self.route(url)
        tls = url.scheme == "https" or (proxy or "").lower().startswith("https:")
        pool = self._pools.get((proxy, tls))
        if pool is None:
            if tls:
                pool = httpx.AsyncHTTPTransport(limits=self._limits, proxy=proxy)
            else:
                # verify=False only skips loading CAs: this pool never speaks TLS.
                pool = httpx.AsyncHTTPTransport(limits=self._limits, proxy=proxy, verify=False)
            self._pools[(proxy, tls)] = pool
        return pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._pool(request.url).handle_async_request(request)

    async def aclose(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()
