"""Errors the gateway answers with, in the shape each client SDK parses.

:class:`GatewayError` carries an HTTP status and an OpenAI-style ``type``/``param``/``code``;
:func:`openai_body` and :func:`anthropic_body` render it for ``/v1/chat/completions`` and
``/v1/messages``. :func:`from_routing` maps what the router raised: every attempt's failure
kind decides the status (429 keeps the upstream's ``Retry-After``; timeouts are 504,
overloaded upstreams 503, other upstream failures 502), so an SDK's retry logic reacts to a
failed route the way it would to the provider itself. Messages are the router's, which
never contain a key's value.
"""

from __future__ import annotations

import math
from typing import Any

from batuta.errors import AllTargetsFailed, BatutaError, FailureKind, RoutingError

# Anthropic's error type for each status it uses (its SDK picks the exception by status).
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}
_STATUS_OF_KIND = {
    FailureKind.RATE_LIMIT: (429, "rate_limit_error"),
    FailureKind.QUOTA: (429, "insufficient_quota"),
    FailureKind.TIMEOUT: (504, "timeout"),
    FailureKind.OVERLOADED: (503, "overloaded"),
    FailureKind.CLIENT: (400, "invalid_request_error"),
}


class GatewayError(BatutaError):
    """A request the gateway answers with an error status instead of an answer."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        retry: bool | None = None,
    ) -> None:
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.retry_after = retry_after
        self.retry = retry  # False: tell the SDKs not to retry (x-should-retry: false)
        super().__init__(message)

    def headers(self) -> list[tuple[bytes, bytes]]:
        """Extra response headers: ``Retry-After`` in whole seconds when there is one, and
        ``x-should-retry`` when the retry decision is not the SDK's to make."""
        headers = []
        if self.retry_after is not None:
            headers.append((b"retry-after", str(max(1, math.ceil(self.retry_after))).encode()))
        if self.retry is not None:
            headers.append((b"x-should-retry", b"true" if self.retry else b"false"))
        return headers


class GatewaySetupError(BatutaError):
    """The gateway cannot start: no routing table, an address it may not listen on, or
    keys it cannot use."""


def bad_field(param: str, message: str) -> GatewayError:
    """A 400 naming the request field that is wrong."""
    return GatewayError(400, f"{param}: {message}", param=param, code="invalid_value")


def openai_body(error: GatewayError) -> dict[str, Any]:
    """``{"error": {"message", "type", "param", "code"}}`` as OpenAI sends it."""
    return {
        "error": {
            "message": error.message,
            "type": error.type,
            "param": error.param,
            "code": error.code,
        }
    }


def anthropic_body(error: GatewayError) -> dict[str, Any]:
    """``{"type": "error", "error": {"type", "message"}}`` as Anthropic sends it."""
    kind = _ANTHROPIC_TYPES.get(error.status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": error.message}}


def from_routing(exc: RoutingError) -> GatewayError:
    """The answer for a route that could not answer (see the module docstring)."""
    if not isinstance(exc, AllTargetsFailed):
        # The routing table breaks the route's privacy tier (or names nothing usable):
        # the gateway refuses to send the prompt anywhere.
        return GatewayError(403, str(exc), type_="permission_error", code="route_refused")
    message = str(exc)
    kinds = [a.kind for a in exc.attempts if a.kind is not None]
    if not kinds:  # every target was skipped before any call
        skipped = " ".join(a.error or "" for a in exc.attempts)
        if "deadline" in skipped:
            return GatewayError(504, message, type_="timeout", code="route_timeout")
        if "budget: shared state" in skipped:  # gateway.state unreachable: fail closed
            return GatewayError(503, message, type_="server_error", code="budget_unrecorded")
        if "budget" in skipped:
            return GatewayError(429, message, type_="insufficient_quota", code="route_budget")
        return GatewayError(503, message, type_="overloaded", code="circuit_open")
    last = kinds[-1]
    status, type_ = _STATUS_OF_KIND.get(last, (502, "upstream_error"))
    retry_after = None
    if status == 429:
        waits = [a.retry_after for a in exc.attempts if a.retry_after is not None]
        retry_after = min(waits) if waits else 1.0
    return GatewayError(status, message, type_=type_, code=last.value, retry_after=retry_after)
