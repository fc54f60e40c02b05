"""The gateway's ASGI application: OpenAI- and Anthropic-compatible endpoints over the router.

One :class:`Gateway` holds one :class:`~batuta.router.engine.Router` (one pooled HTTP
client, the breakers and spend files of the state directory) and the routing table, which
it reads again whenever the file changes (inode, mtime or size, checked per request:
``apply`` replaces it by rename); a request in flight keeps the route it started with, so
a reload never fails it. A table that cannot be read keeps the last good one in use.

Streams send their headers only when the first text arrives or the first keep-alive is
due, so a route that fails at once is an ordinary HTTP error the client's SDK maps to its
exception classes; after that, a failure is an in-band error event. Text reaches the client
as the router releases it, so a failover mid-answer (which the router splices) reads as one
uninterrupted stream. A client that goes away cancels the routed call, which closes the
upstream connection.

Each inference exchange ends in one :class:`~batuta.gateway.observe.Outcome`, recorded once
the response is complete (metrics, request log, status page: :mod:`batuta.gateway.observe`);
``GET /``, ``/status.json`` and ``/metrics`` are answered by :mod:`batuta.gateway.status`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batuta._util import fastjson
from batuta._util.timeouts import within
from batuta.errors import RoutingError
from batuta.gateway import anthropic, openai
from batuta.gateway.errors import GatewayError, anthropic_body, from_routing, openai_body
from batuta.gateway.inbox import Inbox
from batuta.gateway.observe import Observer, ObserveSettings, Outcome
from batuta.gateway.select import Selected, model_ids, select
from batuta.router.targets import target_of
from batuta.routing.table import RoutingTable, read_table

if TYPE_CHECKING:
    from batuta.backends.types import InferenceRequest, InferenceResponse
    from batuta.router.engine import Router

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

KEEPALIVE_SECONDS = 15.0
BODY_TIMEOUT = 30.0  # seconds a client may take to send its request body (then 408)
MAX_BODY = 16 * 2**20
# Seconds between looks at the breakers file for what ``serve query`` beside the gateway
# changed: stat-ing it twice per request would be a tenth of the gateway's own time.
BREAKER_RECHECK = 0.05
_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


class _Gone(Exception):
    """The client disconnected: nothing more is to be sent."""


class TableFile:
    """The routing table, read again when its file changes (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._signature: tuple[int, int, int] | None = None
        self._table: RoutingTable | None = None
        self._error = ""

    def current(self) -> RoutingTable:
        """The table in force; a 503 when no readable table was ever found."""
        try:
            st = os.stat(self.path)
            signature: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            signature = None
        if signature != self._signature or self._table is None:
            self._signature = signature
            try:
                self._table = read_table(self.path)
                self._error = ""
            except RoutingError as exc:
                self._error = str(exc)  # the last good table, if any, stays in use
        if self._table is None:
            raise GatewayError(503, self._error, type_="service_unavailable", code="no_table")
        return self._table


@dataclass
class _Exchange:
    """One HTTP exchange: what the client sent, and whether the response has begun."""

    scope: Scope
    receive: Receive
    send: Send
    anthropic: bool
    started: float
    begun: bool = False
    key: str = ""  # the API key's name once authenticated ("" without one)
    status: int = 0
    outcome: Outcome | None = None  # what an inference request ended with, for the records

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


async def _disconnect(receive: Receive) -> None:
    """Returns when the client has gone away."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _routing_headers(resp: InferenceResponse, started: float) -> list[tuple[bytes, bytes]]:
    overhead = max(0.0, (time.monotonic() - started) * 1000.0 - resp.latency_ms)
    return [
        (b"x-batuta-target", resp.target.encode()),
        (b"x-batuta-attempts", str(resp.attempts).encode()),
        (b"x-batuta-fallbacks", str(resp.fallbacks).encode()),
        (b"x-batuta-overhead-ms", f"{overhead:.2f}".encode()),
    ]


class Gateway:
    """The ASGI app. ``table`` is the routing table's path; ``state_dir`` keeps breakers and
    spend (shared with ``serve query``); ``keepalive`` is the seconds between keep-alive
    lines while a stream waits for its first text."""

    def __init__(
        self,
        table: Path,
        *,
        state_dir: Path | None = None,
        router: Router | None = None,
        keepalive: float = KEEPALIVE_SECONDS,
        body_timeout: float = BODY_TIMEOUT,
        observe: ObserveSettings = ObserveSettings(),  # noqa: B008 - frozen, shared safely
    ) -> None:
        self.table = TableFile(table)
        self._state_dir = state_dir
        self._router = router
        self.keepalive = keepalive
        self.body_timeout = body_timeout
        self.observer: Observer | None = observe.observer(
            state_dir, router=lambda: self.router, table=self._table_or_none
        )

    @property
    def router(self) -> Router:
        if self._router is None:
            from batuta.router.engine import Router

            # aiohttp upstream: httpx's per-request cost would be most of the gateway's.
            self._router = Router(
                state_dir=self._state_dir, http="aiohttp", recheck=BREAKER_RECHECK
            )
        return self._router

    async def aclose(self) -> None:
        if self._router is not None:
            await self._router.aclose()
        if self.observer is not None:
            self.observer.close()

    def _table_or_none(self) -> RoutingTable | None:
        try:
            return self.table.current()
        except GatewayError:
            return None

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        ex = _Exchange(scope, receive, send, path == "/v1/messages", time.monotonic())
        try:
            await self._dispatch(ex, method, path)
        except GatewayError as exc:
            if not ex.begun:
                await ex.error(exc)
            if ex.outcome is not None:
                ex.outcome.error = exc.message
        except _Gone:
            ex.status = 499  # the client closed the request (nginx's code for it)
        finally:
            if ex.outcome is not None and self.observer is not None:
                ex.outcome.status = ex.status or 500
                self.observer.finish(ex.outcome)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _dispatch(self, ex: _Exchange, method: str, path: str) -> None:
        posts = {"/v1/chat/completions": self._chat, "/v1/messages": self._messages}
        if path in posts:
            if method != "POST":
                raise GatewayError(405, f"{path} takes POST", code="method_not_allowed")
            api = "anthropic" if ex.anthropic else "openai"
            ex.outcome = Outcome(api, ex.started, key=ex.key)
            await posts[path](ex)
            return
        if method not in ("GET", "HEAD"):
            raise GatewayError(404 if path not in _GETS else 405, f"no {method} {path}")
        if path == "/health":
            await ex.json(200, {"status": "ok"})
        elif path == "/ready":
            await self._ready(ex)
        elif path == "/v1/models":
            await ex.json(200, {"object": "list", "data": self._models()})
        elif path.startswith("/v1/models/"):
            await self._model(ex, path.removeprefix("/v1/models/"))
        elif path in ("/", "/status.json", "/metrics"):
            from batuta.gateway.status import response

            headers, body = response(path, table=self._table_or_none(), router=self.router,
                                     observer=self.observer, state_dir=self._state_dir)  # fmt: skip
            await ex.start(200, [*headers, (b"content-length", str(len(body)).encode())])
            await ex.body(body)
        else:
            raise GatewayError(404, f"no such endpoint: {path}", code="unknown_url")

    # ------------------------------------------------------------------ GET

    def _models(self) -> list[dict[str, Any]]:
        return [
            {"id": m.id, "object": "model", "created": 0, "owned_by": m.owned_by, "batuta": m.kind}
            for m in model_ids(self.table.current())
        ]

    async def _model(self, ex: _Exchange, name: str) -> None:
        found = [m for m in self._models() if m["id"] == name]
        if not found:
            select(self.table.current(), name)  # raises the 404 with its "did you mean"
        await ex.json(200, found[0])

    async def _ready(self, ex: _Exchange) -> None:
        from batuta.router.breaker import BreakerState

        try:
            table = self.table.current()
        except GatewayError as exc:
            await ex.json(503, {"status": "not ready", "reason": exc.message})
            return
        closed = {
            name: [
                e.name
                for e in route.targets
                if self.router.breakers.state(target_of(e)) is not BreakerState.OPEN
            ]
            for name, route in table.routes.items()
        }
        down = sorted(name for name, usable in closed.items() if not usable)
        if down:
            reason = f"every target's circuit is open on route(s): {', '.join(down)}"
            await ex.json(503, {"status": "not ready", "reason": reason})
            return
        await ex.json(200, {"status": "ready", "routes": sorted(table.routes)})

    # ------------------------------------------------------------------ POST

    async def _read_json(self, ex: _Exchange) -> Any:
        pieces: list[bytes] = []
        size = 0

        async def read() -> None:
            nonlocal size
            while True:
                message = await ex.receive()
                if message["type"] == "http.disconnect":
                    raise _Gone
                piece = message.get("body", b"")
                size += len(piece)
                if size > MAX_BODY:
                    raise GatewayError(413, f"the request body exceeds {MAX_BODY} bytes")
                pieces.append(piece)
                if not message.get("more_body"):
                    return

        try:
            async with within(self.body_timeout):  # no task per request, as wait_for makes
                await read()
        except TimeoutError:
            raise GatewayError(
                408, f"the request body did not arrive within {self.body_timeout:g} s",
                type_="timeout", code="request_timeout",
            ) from None  # fmt: skip
        try:
            return fastjson.loads(b"".join(pieces))
        except ValueError as exc:
            raise GatewayError(400, f"the request body is not valid JSON: {exc}",
                               code="invalid_json") from None  # fmt: skip

    async def _chat(self, ex: _Exchange) -> None:
        call = openai.parse_chat(await self._read_json(ex))
        selected = self._select(ex, call.model, call.request)
        if call.request.stream:
            frames = openai.ChatStream(call.model, call.include_usage)
            await self._stream(ex, selected, call.request, frames)
            return
        resp = await self._answer(ex, selected, call.request)
        await ex.json(200, openai.completion(call.model, resp), _routing_headers(resp, ex.started))

    async def _messages(self, ex: _Exchange) -> None:
        call = anthropic.parse_messages(await self._read_json(ex))
        selected = self._select(ex, call.model, call.request)
        if call.request.stream:
            await self._stream(ex, selected, call.request, anthropic.MessageStream(call.model))
            return
        resp = await self._answer(ex, selected, call.request)
        await ex.json(200, anthropic.message(call.model, resp), _routing_headers(resp, ex.started))

    # ------------------------------------------------------------------ routing

    def _select(self, ex: _Exchange, model: str, request: InferenceRequest) -> Selected:
        if ex.outcome is None:
            return select(self.table.current(), model)
        ex.outcome.model, ex.outcome.stream, ex.outcome.request = model, request.stream, request
        selected = select(self.table.current(), model)
        ex.outcome.route = selected.route.name
        return selected

    def _route(
        self, selected: Selected, request: InferenceRequest, on_text: Callable[[str], None] | None
    ) -> Awaitable[InferenceResponse]:
        route = selected.route
        if selected.bare:
            target = target_of(route.targets[0])
            return self.router.query_target(
                target, request, on_text=on_text, timeout=route.timeout, retries=route.retries
            )
        return self.router.query(route, request, on_text=on_text)

    async def _answer(
        self, ex: _Exchange, selected: Selected, request: InferenceRequest
    ) -> InferenceResponse:
        """A blocking answer; cancelled when the client goes away first."""
        work = asyncio.ensure_future(self._route(selected, request, None))
        gone = asyncio.ensure_future(_disconnect(ex.receive))
        gone.add_done_callback(lambda _: work.cancel())
        try:
            resp: InferenceResponse = await work
        except RoutingError as exc:
            if ex.outcome is not None:
                ex.outcome.failure = exc
            raise from_routing(exc) from None
        except asyncio.CancelledError:
            if gone.done() and not gone.cancelled():  # the client left, not a shutdown
                raise _Gone from None
            raise
        finally:
            gone.cancel()
        if ex.outcome is not None:
            ex.outcome.resp = resp
        return resp

    async def _stream(
        self,
        ex: _Exchange,
        selected: Selected,
        request: InferenceRequest,
        frames: openai.ChatStream | anthropic.MessageStream,
    ) -> None:
        inbox = Inbox()
        work = asyncio.ensure_future(self._route(selected, request, inbox.put))
        gone = asyncio.ensure_future(_disconnect(ex.receive))
        work.add_done_callback(inbox.wake)
        gone.add_done_callback(inbox.wake)
        headers = [*_SSE, (b"x-batuta-route", selected.route.name.encode())]

        async def begin(data: bytes) -> None:
            """Send ``data``; first the headers and the opening frame, when not yet sent
            (in one body message with ``data``)."""
            if not ex.begun:
                await ex.start(200, headers)
                data = frames.start() + data
            await ex.body(data, more=True)

        shown = False
        try:
            while True:
                if gone.done():
                    raise _Gone
                pieces = inbox.take()
                if pieces:
                    await begin(b"".join([frames.text(piece) for piece in pieces]))
                    shown = True
                    continue
                if work.done():
                    break
                if not await inbox.wait(None if shown else self.keepalive):
                    await begin(frames.KEEPALIVE)  # no text yet: proxies and clients wait on
            try:
                resp = work.result()
            except RoutingError as exc:
                error = from_routing(exc)
                if ex.outcome is not None:
                    ex.outcome.failure = exc
                if not ex.begun:
                    raise error from None
                ex.status = error.status  # in-band, after a 200: the records say what it was
                if ex.outcome is not None:
                    ex.outcome.error = error.message
                await ex.body(frames.error(error))
                return
            if ex.outcome is not None:
                ex.outcome.resp = resp
            if not ex.begun:
                await begin(b"")
            await ex.body(frames.end(resp))
        finally:
            for task in (work, gone):
                if not task.done():
                    task.cancel()
            await asyncio.gather(work, gone, return_exceptions=True)


_GETS = frozenset({"/", "/status.json", "/metrics", "/health", "/ready", "/v1/models"})
