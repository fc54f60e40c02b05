"""Sending one request over either client, and the timeouts of a call.

The sending half of :mod:`batuta.backends._http` (which re-exports all of it, so adapters
keep one import): :func:`send` opens a streamed response over an ``httpx.AsyncClient`` or
an :class:`~batuta.backends._aio.AioClient` and classifies what goes wrong before a body is
read (transport failures, first-byte timeouts, non-2xx answers); :func:`probe` is the short
check behind every ``health()``; :func:`request_timeout` and the deadline helpers turn one
absolute ``time.monotonic()`` deadline into each step's budget.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from batuta._util.timeouts import within as _within
from batuta.backends._failures import error_from_response, transport_error
from batuta.errors import BackendError, FailureKind

if TYPE_CHECKING:
    from typing import TypeAlias

    from batuta.backends._aio import AioClient

    HttpClient: TypeAlias = httpx.AsyncClient | AioClient


class Response(Protocol):
    """What adapters use of a streamed answer: an ``httpx.Response`` or an
    :class:`~batuta.backends._aio.AioResponse`."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def is_success(self) -> bool: ...

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...

    async def aread(self) -> bytes: ...

    async def aclose(self) -> None: ...


CONNECT_TIMEOUT = 10.0  # seconds to open a TCP/TLS connection
READ_TIMEOUT = 600.0  # longest silence tolerated between two reads when nothing else is set


def request_timeout(
    connect: float | None = CONNECT_TIMEOUT,
    first_byte: float | None = None,
    total: float | None = None,
) -> httpx.Timeout:
    """An ``httpx.Timeout`` for one call: ``connect`` to open the socket, then each read may
    wait up to ``first_byte`` (or ``total``, or :data:`READ_TIMEOUT`). The overall deadline is
    enforced by :func:`send` and the body readers, which httpx cannot do by itself."""
    connect, read = _limits(connect, first_byte, total)
    return httpx.Timeout(connect=connect, read=read, write=read, pool=connect)


def _limits(
    connect: float | None, first_byte: float | None, total: float | None
) -> tuple[float | None, float]:
    """``(connect, read)`` seconds of :func:`request_timeout`."""
    read = first_byte or total or READ_TIMEOUT
    if total is not None:
        read = min(read, total)
        connect = total if connect is None else min(connect, total)
    return connect, read


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


def _budget(first: float | None, second: float | None) -> float | None:
    """The smaller of two limits (None: no limit), never below zero."""
    if first is None or (second is not None and second < first):
        first = second
    return None if first is None else max(0.0, first)


async def send(
    client: HttpClient,
    method: str,
    url: str,
    *,
    provider: str,
    headers: Mapping[str, str] | None = None,
    json_body: Any = None,
    content: bytes | None = None,
    params: Mapping[str, str] | None = None,
    first_byte_timeout: float | None = None,
    deadline: float | None = None,
    secret: str | None = None,
) -> Response:
    """Send one request and return the *streamed* 2xx response (close it when done).
    The body is ``json_body`` encoded as JSON, or ``content`` sent as is (signed bodies).

    Raises a classified BackendError on connection failure, on a non-2xx status (the body
    is read for the provider's message) and when no response arrives within
    ``first_byte_timeout`` or before ``deadline``."""
    left = _remaining(deadline)
    budget = _budget(first_byte_timeout, left)
    response: Response
    try:
        async with _within(budget):
            if isinstance(client, httpx.AsyncClient):
                request = client.build_request(
                    method,
                    url,
                    headers=dict(headers or {}),
                    json=json_body,
                    content=content,
                    params=params,
                    timeout=request_timeout(total=left),
                )
                response = await _send_resending_stale(client, request)
            else:
                connect, read = _limits(CONNECT_TIMEOUT, None, left)
                # Every wait on this answer is then bounded by the deadline (this timer,
                # the body readers'), so aiohttp's read timer would only repeat them.
                timed = deadline is not None and (read or READ_TIMEOUT) < READ_TIMEOUT
                response = await _aio_send(
                    client, method, url, headers, json_body, content, params, (connect, read),
                    timed,
                )  # fmt: skip
    except TimeoutError:
        raise _first_byte_timeout(provider, budget) from None
    except httpx.HTTPError as exc:
        raise transport_error(exc, provider=provider) from exc
    if response.is_success:
        return response
    try:
        async with _within(_budget(_remaining(deadline), 30.0)):
            body = await response.aread()
    except (httpx.HTTPError, TimeoutError):
        body = b""
    finally:
        await response.aclose()
    raise error_from_response(
        response.status_code, response.headers, body, provider=provider, secret=secret
    )


async def _aio_send(
    client: AioClient,
    method: str,
    url: str,
    headers: Mapping[str, str] | None,
    json_body: Any,
    content: bytes | None,
    params: Mapping[str, str] | None,
    timeout: tuple[float | None, float],
    timed: bool = False,
) -> Response:
    """Send over aiohttp; ``timeout`` is ``(connect, read)`` seconds."""
    from batuta.backends import _aio

    sent = dict(headers or {})
    if content is None and json_body is not None:
        content = _aio.encode_json(json_body)
        for name in sent:
            if name.lower() == "content-type":
                break
        else:
            sent["Content-Type"] = "application/json"
    for _ in range(STALE_RESENDS):
        try:
            return await _aio.send(
                client, method, url, headers=sent, body=content, params=params, timeout=timeout,
                timed=timed,
            )  # fmt: skip
        except httpx.RemoteProtocolError as exc:
            if not _stale(exc):
                raise
    return await _aio.send(
        client, method, url, headers=sent, body=content, params=params, timeout=timeout,
        timed=timed,
    )  # fmt: skip


# A keep-alive connection the server closed while it sat in the pool fails the next request
# on it before a byte of answer arrives. llama.cpp's llama-server does this after some
# streamed answers without saying `Connection: close`; browsers and urllib3 resend such a
# request on a new connection, since the server answered nothing. Bounded: a server that
# drops every request still fails after these.
STALE_RESENDS = 2


def _stale(exc: httpx.HTTPError) -> bool:
    return isinstance(exc, httpx.RemoteProtocolError) and str(exc).startswith(
        "Server disconnected without sending a response"
    )


async def _send_resending_stale(
    client: httpx.AsyncClient, request: httpx.Request
) -> httpx.Response:
    for _ in range(STALE_RESENDS):
        try:
            return await client.send(request, stream=True)
        except httpx.RemoteProtocolError as exc:
            if not _stale(exc):
                raise
    return await client.send(request, stream=True)


async def probe(
    client: HttpClient,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    json_body: Any = None,
) -> Response | None:
    """One short check (10 s in all): ``GET url``, or ``POST`` when ``json_body`` is given.
    None when the server cannot be reached; any answer is returned, read and closed."""
    method = "GET" if json_body is None else "POST"
    try:
        if isinstance(client, httpx.AsyncClient):
            return await client.request(
                method,
                url,
                headers=dict(headers or {}),
                json=json_body,
                timeout=request_timeout(total=10.0),
            )
        async with _within(10.0):
            limits = _limits(CONNECT_TIMEOUT, None, 10.0)
            response = await _aio_send(client, method, url, headers, json_body, None, None, limits)
            try:
                await response.aread()
            finally:
                await response.aclose()
        return response
    except (httpx.HTTPError, TimeoutError):
        return None


def _first_byte_timeout(provider: str, budget: float | None) -> BackendError:
    return BackendError(FailureKind.TIMEOUT, f"{provider}: no answer within {budget or 0:.3g} s")
