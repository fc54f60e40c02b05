"""Sending over an ``aiohttp.ClientSession``: the fast client of a long-lived gateway.

httpx's own per-request machinery caps a proxy in front of a fast server at ~700 req/s on
two cores; aiohttp does ~9,000. :mod:`batuta.backends._http` sends over either, picking by
the client's type, and this module is the aiohttp half. Its answer is an
:class:`AioResponse` with the few members the adapters use of an ``httpx.Response``
(``status_code``, ``headers``, ``is_success``, ``aiter_bytes``, ``aread``, ``aclose``).

Failures are translated into the httpx exception that the same failure raises there, so one
classification (:func:`batuta.backends._failures.transport_error`, the stale kept-alive
resend rule) holds for both clients. The loopback rule is applied per request: sessions are
made with ``trust_env=False`` and each origin's proxy (never one for loopback) comes from
:func:`batuta._util.net.proxy_for`, decided once per origin.

Imported only when an aiohttp session is in use: the CLI never loads aiohttp.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx
import yarl

from batuta._util import fastjson
from batuta._util.net import environment_proxies, proxy_for

CONNECTOR_LIMIT = 256
KEEPALIVE_SECONDS = 15.0
CACHED_URLS = 4096  # per client: the routing table's targets and their few routes each


class AioResponse:
    """A streamed aiohttp response seen through the members adapters use of httpx's."""

    __slots__ = ("_done", "_request", "_response", "headers", "status_code")

    def __init__(self, response: aiohttp.ClientResponse, request: tuple[str, str]) -> None:
        self._response = response
        self._request = request
        self._done = False
        self.status_code = response.status
        self.headers: Mapping[str, str] = response.headers

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def buffered(self) -> bool:
        """Whether the whole body has arrived (a small answer comes with its headers), so
        reading it cannot wait and needs no timer."""
        return self._response.content.is_eof()

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body as it arrives; a drop mid-body raises the httpx error it would there."""
        content = self._response.content
        while True:
            try:
                chunk = await content.readany()
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                raise translate(exc, self._request, sent=True) from exc
            if not chunk:
                self._done = True
                return
            yield chunk

    async def aread(self) -> bytes:
        try:
            body = await self._response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise translate(exc, self._request, sent=True) from exc
        self._done = True
        return body

    async def aclose(self) -> None:
        # A body read to its end gives the connection back to the pool; one abandoned
        # midway must not be reused (the rest of the old answer would be read as the next).
        if self._done:
            self._response.release()
        else:
            self._response.close()


class AioClient:
    """An ``aiohttp.ClientSession`` made on first use (it needs the running loop), with the
    proxy each origin goes through decided once. Closed like an ``httpx.AsyncClient``."""

    def __init__(self, proxies: Mapping[str, str] | None = None) -> None:
        self._proxies = environment_proxies() if proxies is None else dict(proxies)
        self._routes: dict[str, str | None] = {}
        self._urls: dict[str, yarl.URL | str] = {}
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=CONNECTOR_LIMIT, keepalive_timeout=KEEPALIVE_SECONDS, ttl_dns_cache=300
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                trust_env=False,  # the loopback rule decides (route)
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10.0),
            )
        return self._session

    def route(self, url: str) -> str | None:
        """The proxy ``url`` goes through, or None when it is sent directly."""
        try:  # keyed by the whole URL: a gateway sends to a few, and a split costs more
            return self._routes[url]
        except KeyError:
            pass
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        if origin not in self._routes:
            self._routes[origin] = proxy_for(url, self._proxies)
        proxy = self._routes[origin]
        if len(self._routes) < CACHED_URLS:
            self._routes[url] = proxy
        return proxy

    def parsed(self, url: str) -> yarl.URL | str:
        """``url`` parsed once (aiohttp parses a str per request); the str itself when it
        does not parse, so aiohttp raises its own error for it."""
        try:
            return self._urls[url]
        except KeyError:
            pass
        try:
            value: yarl.URL | str = yarl.URL(url)
        except ValueError:
            value = url
        if len(self._urls) < CACHED_URLS:
            self._urls[url] = value
        return value

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __aenter__(self) -> AioClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def send(
    client: AioClient,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    body: bytes | None,
    params: Mapping[str, str] | None,
    timeout: tuple[float | None, float | None],
    timed: bool = False,
) -> AioResponse:
    """Open one streamed response; failures raise the httpx error of the same failure.
    ``timeout`` is ``(connect, read)`` seconds. ``timed``: the caller bounds every wait on
    the answer by its deadline, so aiohttp's read timer (rescheduled on every read) is left
    off."""
    connect, read = timeout
    request = (method, url)
    try:
        response = await client.session.request(
            method,
            client.parsed(url),
            headers=headers,
            data=body,
            params=params,
            proxy=client.route(url),
            timeout=_client_timeout(connect, None if timed else read),
            allow_redirects=True,
        )
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise translate(exc, request, sent=False) from exc
    return AioResponse(response, request)


_TIMEOUTS: dict[tuple[float | None, float | None], aiohttp.ClientTimeout] = {}


def _client_timeout(connect: float | None, read: float | None) -> aiohttp.ClientTimeout:
    """The aiohttp timeout for these limits, made once (most requests share one)."""
    key = (connect, read)
    found = _TIMEOUTS.get(key)
    if found is None:
        found = aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)
        if len(_TIMEOUTS) < CACHED_URLS:
            _TIMEOUTS[key] = found
    return found


def translate(exc: BaseException, request: tuple[str, str], *, sent: bool) -> httpx.HTTPError:
    """The httpx exception for an aiohttp failure. ``sent`` says whether response headers
    had arrived (a disconnect before them is a stale kept-alive connection)."""
    method, url = request
    req = httpx.Request(method, url)
    if isinstance(exc, aiohttp.ClientResponseError):  # its str() quotes the URL and query
        detail = f"{exc.status} {exc.message}".strip()
    elif isinstance(exc, aiohttp.InvalidURL):  # so does this one's
        detail = "invalid URL"
    else:
        detail = str(exc) or type(exc).__name__
    error: httpx.HTTPError
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        error = httpx.ProxyError(detail, request=req)
    elif isinstance(exc, aiohttp.ClientConnectorError):
        error = httpx.ConnectError(detail, request=req)
    elif isinstance(exc, (aiohttp.ConnectionTimeoutError, asyncio.TimeoutError)) and not sent:
        is_connect = isinstance(exc, aiohttp.ConnectionTimeoutError)
        error = (httpx.ConnectTimeout if is_connect else httpx.ReadTimeout)(detail, request=req)
    elif isinstance(exc, asyncio.TimeoutError):
        error = httpx.ReadTimeout(detail, request=req)
    elif isinstance(exc, aiohttp.ServerDisconnectedError) and not sent:
        error = httpx.RemoteProtocolError(
            "Server disconnected without sending a response.", request=req
        )
    elif isinstance(exc, aiohttp.InvalidURL):
        error = httpx.UnsupportedProtocol(detail, request=req)
    elif isinstance(exc, aiohttp.TooManyRedirects):
        error = httpx.TooManyRedirects(detail, request=req)
    elif isinstance(exc, (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError)):
        error = httpx.RemoteProtocolError(detail, request=req)
    elif isinstance(exc, aiohttp.ClientOSError):
        error = (httpx.ReadError if sent else httpx.ConnectError)(detail, request=req)
    else:
        error = httpx.RemoteProtocolError(detail, request=req)
    return error


def encode_json(value: Any) -> bytes:
    """A JSON body as httpx writes one: compact UTF-8 (keys that are not strings, like a
    ``logit_bias`` token id, written as strings as ``json.dumps`` does)."""
    return fastjson.dumps(value)


__all__ = ["AioClient", "AioResponse", "encode_json", "send", "translate"]
