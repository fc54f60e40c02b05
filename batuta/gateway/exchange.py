"""One HTTP exchange of the gateway: what the client sent, and how the answer goes out.

:class:`Exchange` wraps the ASGI ``send`` (start, body, a JSON answer, an error in the
dialect the client spoke) and carries what the records need (:class:`Outcome`);
:exc:`Gone` is the client having disconnected, :func:`disconnected` waits for that.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from batuta._util import fastjson
from batuta.gateway.errors import GatewayError, anthropic_body, openai_body
from batuta.gateway.observe import Outcome

if TYPE_CHECKING:
    from batuta.backends.types import InferenceResponse

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON = [(b"content-type", b"application/json")]


class Gone(Exception):
    """The client disconnected: nothing more is to be sent."""


@dataclass(slots=True)
class Exchange:
    """One HTTP exchange: what the client sent, and whether the response has begun."""

    scope: Scope
    receive: Receive
    send: Send
    anthropic: bool
    started: float
    begun: bool = False
    key: str = ""  # the API key's name once authenticated ("" without one)
    status: int = 0
    outcome: Outcome = field(default_factory=Outcome)  # recorded when ``api`` is set

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.begun = True
        self.status = status
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def body(self, data: bytes, more: bool = False) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": more})

    async def json(
        self, status: int, data: Any, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        body = fastjson.dumps(data)
        length = (b"content-length", str(len(body)).encode())
        await self.start(status, [*_JSON, length, *(headers or [])])
        await self.body(body)

    async def error(self, error: GatewayError) -> None:
        body = anthropic_body(error) if self.anthropic else openai_body(error)
        await self.json(error.status, body, error.headers())


async def disconnected(receive: Receive) -> None:
    """Returns when the client has gone away."""
    while (await receive())["type"] != "http.disconnect":
        pass


def routing_headers(resp: InferenceResponse, started: float) -> list[tuple[bytes, bytes]]:
    overhead = max(0.0, (time.monotonic() - started) * 1000.0 - resp.latency_ms)
    return [
        (b"x-batuta-target", resp.target.encode()),
        (b"x-batuta-attempts", str(resp.attempts).encode()),
        (b"x-batuta-fallbacks", str(resp.fallbacks).encode()),
        (b"x-batuta-overhead-ms", f"{overhead:.2f}".encode()),
    ]
