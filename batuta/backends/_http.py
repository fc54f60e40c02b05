"""HTTP plumbing every adapter shares: URLs, auth headers, timeouts, sending, body readers.

Adapters build a request body and parse their protocol's answer; *how* a call fails is
decided here and in :mod:`batuta.backends._failures`, so every backend reports failures the
same way:

- :func:`send` opens a streamed response and raises a classified
  :class:`~batuta.errors.BackendError` for transport failures, first-byte timeouts and
  non-2xx answers (via :func:`error_from_response`).
- :func:`iter_bytes`, :func:`iter_lines`, :func:`iter_ndjson`, :func:`iter_sse`
  (:func:`sse_stream`: with the stream skeleton around it), :func:`read_json` read the
  body under the same first-byte timeout and overall deadline, turning a dropped connection into ``STREAM_CUT`` and bad JSON into ``MALFORMED``.

- :func:`probe` is the short readiness or credentials check behind every ``health()``.

Both sending functions take either client (:data:`HttpClient`): an ``httpx.AsyncClient``
(the CLI's, health checks', downloads') or an :class:`~batuta.backends._aio.AioClient`
(the gateway's: httpx's per-request cost caps a proxy near 700 req/s on two cores). The
answer is a :class:`Response` either way, and failures classify alike: the aiohttp half
raises the httpx error of the same failure.

The sending half (:func:`send`, :func:`probe`, the timeouts) lives in
:mod:`batuta.backends._send`. This module is the one import adapters need: it re-exports
that, the error helpers of :mod:`~batuta.backends._failures`, the payload helpers of
:mod:`~batuta.backends._payload`, the stream-ending rules of
:mod:`~batuta.backends._stream` and :class:`~batuta.backends._sse.SSEEvent`.

Deadlines are absolute ``time.monotonic()`` values so a router can give one budget to a
whole fallback chain. Messages never contain request headers, keys or query strings.
"""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncGenerator, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import httpx

from batuta._util.options import text
from batuta._util.timeouts import within as _within
from batuta.backends._failures import (
    MAX_MESSAGE,
    describe_error,
    error_from_body,
    error_from_response,
    malformed,
    parse_json,
    parse_object,
    parse_retry_after,
    transport_error,
)
from batuta.backends._lines import LineSplitter
from batuta.backends._payload import (
    StopFilter,
    body_extras,
    claude_sampling,
    continuation_chat,
    finish_reason,
    int_or_none,
    plain_prompt,
    refuses_prefill,
    split_stops,
)
from batuta.backends._send import (
    CONNECT_TIMEOUT,
    READ_TIMEOUT,
    STALE_RESENDS,
    Response,
    _budget,
    _first_byte_timeout,
    _remaining,
    probe,
    request_timeout,
    send,
)
from batuta.backends._sse import SSEEvent, SSEParser
from batuta.backends._stream import cut, drain, forgive_late_cut, opened
from batuta.catalogue import lookup
from batuta.errors import BackendError, FailureKind

if TYPE_CHECKING:
    from batuta.backends._send import HttpClient as HttpClient
    from batuta.backends.types import Target


_VERSIONED = re.compile(r"/v\d+(?:(?:alpha|beta)\d*)?$")


# ---------------------------------------------------------------------------- URLs, auth


@functools.lru_cache(maxsize=1024)  # parsing the URL is most of a proxy's per-request cost
def api_url(base_url: str, path: str, *, prefix: str = "/v1") -> str:
    """Join ``base_url`` and ``path``, inserting ``prefix`` unless the base already ends in a
    version segment: ``http://h:8080`` + ``/chat/completions`` → ``.../v1/chat/completions``,
    but ``https://api.groq.com/openai/v1`` keeps its own ``/v1``."""
    base = base_url.rstrip("/")
    if not path.startswith("/"):
        path = "/" + path
    if prefix and not _VERSIONED.search(httpx.URL(base).path.rstrip("/")):
        base += prefix
    return base + path


@functools.lru_cache(maxsize=256)
def origin(base_url: str) -> str:
    """``base_url`` without a trailing version segment, for server routes outside the API
    (``http://h:8000/v1`` → ``http://h:8000`` so ``/health`` lands where vLLM serves it)."""
    base = base_url.rstrip("/")
    path = httpx.URL(base).path.rstrip("/")
    match = _VERSIONED.search(path)
    return base[: len(base) - len(path) + match.start()] if match else base


def auth_headers(
    target: Target, api_key: str | None, style: str = "authorization"
) -> dict[str, str]:
    """The header carrying ``api_key`` in ``style`` (``authorization`` → Bearer, ``api-key``,
    ``x-api-key``); ``target.options["auth_header"]`` overrides the style. When the backend
    requires a key and none is set, raise AUTH naming the variable to set."""
    if not api_key:
        record = lookup(target.backend)
        if record is not None and record.key_required and target.api_key_env:
            raise BackendError(
                FailureKind.AUTH, f"{target.name}: set {target.api_key_env} to the API key"
            )
        return {}
    style = text(target.options, "auth_header", style).lower()
    if style == "authorization":
        return {"Authorization": f"Bearer {api_key}"}
    if style in ("api-key", "x-api-key"):
        return {style: api_key}
    raise BackendError(FailureKind.CLIENT, f"{target.name}: unknown auth header style {style!r}")


async def iter_bytes(
    response: Response,
    *,
    provider: str,
    first_byte_timeout: float | None = None,
    deadline: float | None = None,
) -> AsyncGenerator[bytes, None]:
    """The raw body, chunk by chunk. The first chunk must come within ``first_byte_timeout``;
    every chunk before ``deadline``. A connection dropped mid-body raises STREAM_CUT, a
    silent server TIMEOUT. Closes the response in every case."""
    chunks = response.aiter_bytes()
    received = False
    try:
        while True:
            limit = (
                _remaining(deadline)
                if received
                else _budget(first_byte_timeout, _remaining(deadline))
            )
            try:
                async with _within(limit):
                    chunk = await chunks.__anext__()
            except StopAsyncIteration:
                return
            except TimeoutError:
                if not received:
                    raise _first_byte_timeout(provider, limit) from None
                raise BackendError(
                    FailureKind.TIMEOUT, f"{provider}: deadline passed mid-answer"
                ) from None
            except httpx.HTTPError as exc:
                raise transport_error(exc, provider=provider, received=True) from exc
            received = True
            yield chunk
    finally:
        await response.aclose()


async def read_json(
    response: Response,
    *,
    provider: str,
    first_byte_timeout: float | None = None,
    deadline: float | None = None,
) -> Any:
    """The whole body parsed as JSON (MALFORMED when it is not)."""
    if first_byte_timeout is None:  # one read under one timer: every blocking answer
        try:
            if getattr(response, "buffered", False):  # an aiohttp body read to its end
                body = await response.aread()  # cannot wait: a timer would cost, not guard
            else:
                async with _within(_remaining(deadline)):
                    body = await response.aread()
        except TimeoutError:
            raise BackendError(
                FailureKind.TIMEOUT, f"{provider}: deadline passed mid-answer"
            ) from None
        except httpx.HTTPError as exc:
            raise transport_error(exc, provider=provider, received=True) from exc
        finally:
            await response.aclose()
        return parse_json(body, provider=provider)
    parts = [
        c
        async for c in iter_bytes(
            response, provider=provider, first_byte_timeout=first_byte_timeout, deadline=deadline
        )
    ]
    return parse_json(b"".join(parts), provider=provider)


async def read_answer(
    response: Response,
    *,
    provider: str,
    deadline: float | None = None,
    in_band: Callable[[dict[str, Any]], BackendError | None] | None = None,
) -> dict[str, Any]:
    """The skeleton of every blocking ``complete()``: the whole answer as a JSON object
    (MALFORMED when it is not one), its in-band error raised. ``in_band`` says what the
    protocol's error is (default: a non-empty ``error`` key, read by
    :func:`error_from_body`); the caller then reads its own fields."""
    body = await read_json(response, provider=provider, deadline=deadline)
    if not isinstance(body, dict):
        raise malformed(provider, "answer is not a JSON object")
    if in_band is not None:
        error = in_band(body)
    else:
        error = error_from_body(body, provider=provider) if body.get("error") else None
    if error is not None:
        raise error
    return body


async def iter_lines(
    response: Response,
    *,
    provider: str,
    first_byte_timeout: float | None = None,
    deadline: float | None = None,
) -> AsyncGenerator[str, None]:
    """Body lines split on CRLF, CR or LF only (:class:`~batuta.backends._lines.LineSplitter`:
    a U+2028 inside a JSON string stays put). A final line without a newline is still
    yielded."""
    lines = LineSplitter()
    async for chunk in iter_bytes(
        response, provider=provider, first_byte_timeout=first_byte_timeout, deadline=deadline
    ):
        for line in lines.feed(chunk):
            yield line
    for line in lines.close():
        yield line


async def iter_ndjson(
    response: Response,
    *,
    provider: str,
    first_byte_timeout: float | None = None,
    deadline: float | None = None,
) -> AsyncGenerator[Any, None]:
    """One parsed JSON value per non-blank line (MALFORMED on a line that is not JSON)."""
    async for line in iter_lines(
        response, provider=provider, first_byte_timeout=first_byte_timeout, deadline=deadline
    ):
        if line.strip():
            yield parse_json(line, provider=provider)


async def iter_sse(
    response: Response,
    *,
    provider: str,
    first_byte_timeout: float | None = None,
    deadline: float | None = None,
) -> AsyncGenerator[SSEEvent, None]:
    """Server-sent events of the body (see :class:`batuta.backends._sse.SSEParser`); a drop
    mid-body raises STREAM_CUT. Decoding each event's ``data`` is the caller's job
    (:func:`parse_json` fails as MALFORMED)."""
    # Lines and events split by plain calls per chunk: a generator per layer cost more.
    lines, parser = LineSplitter(), SSEParser()
    async for chunk in iter_bytes(
        response, provider=provider, first_byte_timeout=first_byte_timeout, deadline=deadline
    ):
        for event in parser.feed(lines.feed(chunk)):
            yield event
    for event in parser.feed(lines.close()):
        yield event
    last = parser.close()
    if last is not None:
        yield last


def sse_stream(
    response: Response,
    *,
    provider: str,
    first_byte_timeout: float | None = None,
    deadline: float | None = None,
    answered: Callable[[], bool] | None = None,
) -> AbstractAsyncContextManager[AsyncGenerator[SSEEvent, None]]:
    """``async with sse_stream(...) as events``: the body's server-sent events, the stream
    skeleton of :func:`batuta.backends._stream.opened` around :func:`iter_sse`."""
    events = iter_sse(
        response, provider=provider, first_byte_timeout=first_byte_timeout, deadline=deadline
    )
    return opened(events, response=response, answered=answered)


__all__ = [
    "CONNECT_TIMEOUT",
    "MAX_MESSAGE",
    "READ_TIMEOUT",
    "STALE_RESENDS",
    "Response",
    "SSEEvent",
    "StopFilter",
    "api_url",
    "auth_headers",
    "body_extras",
    "claude_sampling",
    "continuation_chat",
    "cut",
    "describe_error",
    "drain",
    "error_from_body",
    "error_from_response",
    "finish_reason",
    "forgive_late_cut",
    "int_or_none",
    "iter_bytes",
    "iter_lines",
    "iter_ndjson",
    "iter_sse",
    "malformed",
    "opened",
    "origin",
    "parse_json",
    "parse_object",
    "parse_retry_after",
    "plain_prompt",
    "probe",
    "read_answer",
    "read_json",
    "refuses_prefill",
    "request_timeout",
    "send",
    "split_stops",
    "sse_stream",
    "transport_error",
]
