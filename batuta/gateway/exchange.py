"""One HTTP exchange of the gateway: what the client sent, and how the answer goes out.

:class:`Exchange` wraps the ASGI ``send`` (start, body, a JSON answer, an error in the
dialect the client spoke) and carries what the records need (:class:`Outcome`);
:exc:`Gone` is the client having disconnected, :class:`Departure` watches for that.
"""

from __future__ import annotations

import asyncio
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
        length = (b"content-length", b"%d" % len(body))
        await self.start(status, [*_JSON, length, *(headers or [])])
        await self.body(body)

    async def error(self, error: GatewayError) -> None:
        body = anthropic_body(error) if self.anthropic else openai_body(error)
        await self.json(error.status, body, error.headers())


async def disconnected(receive: Receive) -> None:
    """Returns when the client has gone away."""
    while (await receive())["type"] != "http.disconnect":
        pass


# Seconds a call runs before its client is watched. Most answers from a fast upstream are
# done by then, and a watching task (created, run once, cancelled) was 6 % of what the
# gateway spends on such a request; a client that leaves is still noticed well within
# 100 ms of leaving, since ``receive`` reports a disconnect that happened before it was
# called at once.
WATCH_AFTER = 0.05


class Departure:
    """Calls ``on_gone`` once the client has disconnected, watching from
    :data:`WATCH_AFTER` seconds on; ``close`` ends the watch. ``left``: the client left
    while watched (a disconnect seen after ``close`` is not told)."""

    __slots__ = ("_closed", "_on_gone", "_receive", "_task", "_timer", "left")

    def __init__(self, receive: Receive, on_gone: Callable[[], object]) -> None:
        self._receive, self._on_gone = receive, on_gone
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.left = False
        self._timer = asyncio.get_running_loop().call_later(WATCH_AFTER, self._watch)

    def _watch(self) -> None:
        self._task = asyncio.ensure_future(disconnected(self._receive))
        self._task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        task.exception()  # a receive that failed: the connection is gone all the same
        if not self._closed:  # its callback may run after the call it watched has ended
            self.left = True
            self._on_gone()

    def close(self) -> None:
        self._closed = True
        self._timer.cancel()
        if self._task is not None:
            self._task.cancel()


def routing_headers(resp: InferenceResponse, started: float) -> list[tuple[bytes, bytes]]:
    overhead = max(0.0, (time.monotonic() - started) * 1000.0 - resp.latency_ms)
    return [
        (b"x-batuta-target", resp.target.encode()),
        (b"x-batuta-attempts", b"%d" % resp.attempts),
        (b"x-batuta-fallbacks", b"%d" % resp.fallbacks),
        (b"x-batuta-overhead-ms", b"%.2f" % overhead),
    ]
