"""The manifest's ``gateway:`` block: where ``batuta gateway`` listens, and its API keys.

Each key is declared by the *name* of the variable that holds it (``key_env``), never by
its value, with what it may use (``routes``), what it may spend (``budget``) and how fast
it may ask (``rate``: ``60/min``, ``10/s``, ``1000/h``). Cross-field rules (routes that
exist, a non-loopback address only with keys) live in :mod:`batuta.manifest.gateway_rules`.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from batuta._util.redisurl import parse_state_url
from batuta.manifest.units import Size

_LISTEN = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-_]+):(\d{1,5})$")
RATE_PATTERN = r"^\s*\d+(\.\d+)?\s*/\s*(s|sec|second|min|minute|h|hour)\s*$"
_RATE = re.compile(RATE_PATTERN)
_PER = {"s": 1.0, "sec": 1.0, "second": 1.0, "min": 60.0, "minute": 60.0, "h": 3600.0,
        "hour": 3600.0}  # fmt: skip
RATE_HINT = "is not a rate; use e.g. 60/min, 10/s or 1000/h"


def parse_listen(value: object) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) → (host, port)."""
    if not isinstance(value, str):
        raise ValueError("expected HOST:PORT, such as 127.0.0.1:8080")
    match = _LISTEN.match(value.strip())
    if not match:
        raise ValueError(f"{value!r} is not HOST:PORT (such as 127.0.0.1:8080)")
    port = int(match.group(2))
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range (1-65535)")
    return match.group(1).strip("[]"), port


def parse_rate(value: str) -> tuple[float, float]:
    """``60/min`` → (60 requests, per 60 seconds)."""
    match = _RATE.match(value)
    if not match:
        raise ValueError(f"{value!r} {RATE_HINT}")
    count = float(value.split("/")[0])
    if count <= 0:
        raise ValueError(f"{value!r} allows no request at all; use e.g. 60/min")
    return count, _PER[match.group(2)]


def _state_url(value: str) -> str:
    parse_state_url(value)
    return value


def _listen(value: str) -> str:
    parse_listen(value)
    return value


def _rate(value: str) -> str:
    parse_rate(value)
    return value


Listen = Annotated[
    str,
    AfterValidator(_listen),
    WithJsonSchema({"type": "string", "description": "HOST:PORT, such as 127.0.0.1:8080"}),
]
Rate = Annotated[
    str,
    AfterValidator(_rate),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": RATE_PATTERN,
            "description": "requests per second, minute or hour: 10/s, 60/min, 1000/h",
        }
    ),
]
StateUrl = Annotated[
    str,
    AfterValidator(_state_url),
    # No pattern: the schema's message would repeat the value, which may hold a password.
    WithJsonSchema(
        {"type": "string", "description": "redis://HOST:PORT/DB or rediss://HOST:PORT/DB"}
    ),
]
KeyName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeyBudget(_Strict):
    """What one key may spend on paid targets, per UTC day and per request."""

    daily_usd: float | None = Field(default=None, gt=0)
    per_request_usd: float | None = Field(default=None, gt=0)


class GatewayKey(_Strict):
    """One API key clients present to the gateway, and what it allows."""

    key_env: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="name of the variable holding the key (read when the gateway starts;"
        " the key itself never appears in the manifest, state or logs)",
    )
    routes: list[KeyName] | None = Field(
        default=None,
        description="the routes this key may use (their aliases included); default: all,"
        " and servers or endpoints by name too",
    )
    budget: KeyBudget | None = None
    rate: Rate | None = Field(
        default=None, description="requests allowed, as a token bucket: 60/min, 10/s, 1000/h"
    )


class Gateway(_Strict):
    """The HTTP gateway ``batuta gateway`` runs in front of the routes."""

    listen: Listen = Field(
        default="127.0.0.1:8080",
        description="HOST:PORT; an address other than loopback only when keys are declared",
    )
    keys: dict[KeyName, GatewayKey] = Field(
        default_factory=dict,
        description="API keys clients must send (Authorization: Bearer or x-api-key);"
        " with none, the gateway is open and listens on loopback only",
    )
    metrics: bool = Field(default=True, description="serve Prometheus metrics on GET /metrics")
    request_log: bool = Field(
        default=True, description="write one JSON line per request to .batuta/requests.log"
    )
    log_content: bool = Field(
        default=False, description="also log each request's prompt and answer text"
    )
    request_log_max_size: Size = Field(
        default=10 * 2**20, description="rotate the request log past this size"
    )
    request_log_files: int = Field(
        default=3, ge=1, le=100, description="request log files kept, the current one included"
    )
    traces: bool = Field(
        default=False,
        description="export OpenTelemetry traces over OTLP/HTTP (the otel extra; OTEL_* variables)",
    )
    state: StateUrl | None = Field(
        default=None,
        description="redis://HOST:PORT/DB (rediss:// for TLS): keep spend, rate buckets and"
        " breakers in Redis, shared by every gateway replica; default: this machine's"
        " .batuta/ files and memory",
    )
    state_password_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="name of the variable holding the Redis password (never the URL)",
    )
