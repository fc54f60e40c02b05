"""How a backend call failed, read from whatever the server sent back.

Every provider words its errors differently (OpenAI ``{"error": {...}}``, flat vLLM/MLC
objects, Ollama/TGI strings, Anthropic typed errors, Gemini ``status`` + ``RetryInfo``,
RFC 7807 problems, Bedrock's ``x-amzn-ErrorType`` header); this module turns each into one
:class:`~batuta.errors.BackendError` with a :class:`~batuta.errors.FailureKind`, the
provider's own message, the request id and any retry delay. Messages never carry request
headers, and a key the provider echoes back is masked.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping
from typing import Any

import httpx

from batuta.errors import BackendError, FailureKind

MAX_MESSAGE = 500  # characters of a provider's error message we keep
_CUT = (httpx.RemoteProtocolError, httpx.ReadError)


def parse_retry_after(headers: Mapping[str, str] | httpx.Headers) -> float | None:
    """Seconds the server asked us to wait: ``retry-after-ms``, then ``Retry-After`` (delta
    seconds or an HTTP date). Never negative; None when absent or unreadable."""
    lowered = {k.lower(): v for k, v in headers.items()}
    ms = lowered.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _duration(text: object) -> float | None:
    """A protobuf duration such as ``"30s"`` or ``"1.5s"`` in seconds."""
    if isinstance(text, str) and text.endswith("s"):
        try:
            return max(0.0, float(text[:-1]))
        except ValueError:
            return None
    return None


def _status_kind(status: int) -> FailureKind:
    if status in (503, 529):
        return FailureKind.OVERLOADED
    if status == 429:
        return FailureKind.RATE_LIMIT
    if status in (401, 403):
        return FailureKind.AUTH
    if status == 402:
        return FailureKind.QUOTA
    if status in (408, 409, 424, 499) or status >= 500:
        return FailureKind.SERVER
    return FailureKind.CLIENT


# Provider error types that change the class a status code alone would give.
_TYPE_KINDS = {
    "insufficient_quota": FailureKind.QUOTA,
    "billing_error": FailureKind.QUOTA,
    "overloaded_error": FailureKind.OVERLOADED,
    "overloaded": FailureKind.OVERLOADED,
    "servicequotaexceededexception": FailureKind.QUOTA,
    "modelnotreadyexception": FailureKind.OVERLOADED,
    "serviceunavailableexception": FailureKind.OVERLOADED,
    "throttlingexception": FailureKind.RATE_LIMIT,
    "rate_limit_error": FailureKind.RATE_LIMIT,
    "rate_limit_exceeded": FailureKind.RATE_LIMIT,
    "resource_exhausted": FailureKind.RATE_LIMIT,
    "unavailable": FailureKind.OVERLOADED,
    "authentication_error": FailureKind.AUTH,
    "permission_error": FailureKind.AUTH,
    "invalid_request_error": FailureKind.CLIENT,
    "validation": FailureKind.CLIENT,
    "content_filter": FailureKind.CLIENT,
    "api_error": FailureKind.SERVER,
    "server_error": FailureKind.SERVER,
    "internal": FailureKind.SERVER,
    "generation": FailureKind.SERVER,
    "incomplete_generation": FailureKind.SERVER,
}


def describe_error(body: Any) -> tuple[str | None, list[str], float | None]:
    """Pull ``(message, type/code names, retry delay)`` out of any provider's error body:
    OpenAI ``{"error": {...}}``, flat ``{"object": "error", "message"}``, Ollama/TGI
    ``{"error": "..."}``, Anthropic ``{"type": "error", "error": {...}}``, Gemini
    ``{"error": {"code", "message", "status", "details"}}``, RFC 7807 and Bedrock bodies."""
    if not isinstance(body, dict):
        return None, [], None
    names: list[str] = []
    delay: float | None = None
    message: Any = None
    err = body.get("error")
    if isinstance(err, str):
        message = err
        names.append(str(body.get("error_type") or ""))
    elif isinstance(err, dict):
        message = err.get("message")
        names += [str(err.get(k) or "") for k in ("type", "code", "status")]
        for detail in err.get("details") or []:
            if isinstance(detail, dict) and "retryDelay" in detail:
                delay = _duration(detail["retryDelay"])
    if message is None:
        message = body.get("message") or body.get("detail") or body.get("title")
        names += [str(body.get(k) or "") for k in ("type", "code", "__type")]
    if message is not None and not isinstance(message, str):
        message = json.dumps(message)[:MAX_MESSAGE]
    return message, [n for n in names if n and n != "error"], delay


def _redact(text: str, secret: str | None) -> str:
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
    return text[:MAX_MESSAGE]


def error_from_body(
    body: Any,
    *,
    provider: str,
    default: FailureKind = FailureKind.SERVER,
    secret: str | None = None,
) -> BackendError:
    """The failure an in-stream error event describes (after a 200 was already sent)."""
    message, names, delay = describe_error(body)
    kind = next((_TYPE_KINDS[n.lower()] for n in names if n.lower() in _TYPE_KINDS), default)
    label = f" [{names[0]}]" if names else ""
    text = _redact(f"{provider}: {message or 'error in stream'}{label}", secret)
    return BackendError(kind, text, retry_after=delay)


def error_from_response(
    status: int,
    headers: Mapping[str, str] | httpx.Headers,
    body: bytes,
    *,
    provider: str,
    secret: str | None = None,
) -> BackendError:
    """Classify a non-2xx answer and keep the provider's own message and request id.

    ``secret`` (the key sent, if any) is masked should the provider echo it back."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        parsed: Any = json.loads(body) if body else None
    except ValueError:
        parsed = None
    message, names, delay = describe_error(parsed)
    amzn = lowered.get("x-amzn-errortype")
    if amzn:
        names.insert(0, amzn.split(":")[0])
    kind = _status_kind(status)
    for name in names:
        special = _TYPE_KINDS.get(name.lower())
        if special in (FailureKind.QUOTA, FailureKind.OVERLOADED) or (
            special is FailureKind.RATE_LIMIT and kind is FailureKind.SERVER
        ):
            kind = special
            break
    should_retry = lowered.get("x-should-retry", "").lower()
    if should_retry == "false" and kind.retryable:
        kind = FailureKind.QUOTA if status == 429 else FailureKind.CLIENT
    elif should_retry == "true" and kind is FailureKind.CLIENT:
        kind = FailureKind.SERVER
    if message is None:
        text = body.decode("utf-8", "replace").strip() if parsed is None else ""
        message = text or httpx.codes.get_reason_phrase(status) or "error"
    label = f" [{names[0]}]" if names else ""
    request_id = lowered.get("x-request-id") or lowered.get("request-id")
    request_id = request_id or lowered.get("x-amzn-requestid")
    if (
        request_id is None
        and isinstance(parsed, dict)
        and isinstance(parsed.get("request_id"), str)
    ):
        request_id = parsed["request_id"]
    retry_after = parse_retry_after(lowered)
    return BackendError(
        kind,
        _redact(f"{provider}: {message}{label}", secret),
        status=status,
        retry_after=retry_after if retry_after is not None else delay,
        request_id=request_id,
    )


def _where(exc: httpx.HTTPError) -> str:
    try:
        url = exc.request.url
    except RuntimeError:
        return ""
    return f" {url.scheme}://{url.netloc.decode()}{url.path}"  # no query: it may hold a key


def transport_error(
    exc: httpx.HTTPError, *, provider: str = "", received: bool = False
) -> BackendError:
    """Classify an httpx failure. ``received`` says whether body bytes had already arrived:
    a drop before that is CONNECT (safe to retry), after it STREAM_CUT."""
    who = f"{provider}: " if provider else ""
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        kind = FailureKind.TIMEOUT
        text = f"timed out ({type(exc).__name__}) talking to{_where(exc)}"
    elif isinstance(exc, _CUT) and received:
        kind, text = FailureKind.STREAM_CUT, f"connection dropped mid-answer: {detail}"
    elif isinstance(exc, (httpx.TransportError,)) and not isinstance(
        exc, (httpx.UnsupportedProtocol, httpx.ProxyError)
    ):
        kind, text = FailureKind.CONNECT, f"cannot reach{_where(exc)}: {detail}"
    elif isinstance(exc, httpx.DecodingError):
        kind, text = FailureKind.MALFORMED, f"undecodable body: {detail}"
    elif isinstance(exc, httpx.TooManyRedirects):
        kind, text = FailureKind.SERVER, "too many redirects"
    else:
        kind, text = FailureKind.CLIENT, f"bad request setup: {detail}"
    return BackendError(kind, (who + text)[:MAX_MESSAGE])


def malformed(provider: str, what: str, sample: str | bytes = "") -> BackendError:
    """A body or event that does not parse as the protocol says."""
    if isinstance(sample, bytes):
        sample = sample.decode("utf-8", "replace")
    tail = f": {sample[:120]!r}" if sample else ""
    return BackendError(FailureKind.MALFORMED, f"{provider}: {what}{tail}")


def parse_json(data: str | bytes, *, provider: str) -> Any:
    """``json.loads`` that fails as MALFORMED."""
    from batuta._util import fastjson  # orjson: not loaded by commands that never parse

    try:
        return fastjson.loads(data)
    except ValueError:
        raise malformed(provider, "invalid JSON", data) from None


def parse_object(data: str | bytes, *, provider: str, what: str = "event") -> dict[str, Any]:
    """:func:`parse_json` for protocols whose every event is a JSON object (MALFORMED when
    it is another JSON value)."""
    value = parse_json(data, provider=provider)
    if not isinstance(value, dict):
        raise malformed(provider, f"{what} is not a JSON object", data)
    return value
