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

With ``keys`` (:mod:`batuta.gateway.keys`), every request but ``GET /health`` must present
one: it is checked, and its rate taken, before anything else; the route it selects must be
in its scope, and a key with a budget pays for paid targets (:mod:`batuta.gateway.keyspend`).
"""

from __future__ import annotations

import asyncio
import functools
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from batuta._util import fastjson
from batuta._util.timeouts import within
from batuta.errors import RoutingError
from batuta.gateway import anthropic, completions, openai
from batuta.gateway.errors import GatewayError, from_routing
from batuta.gateway.exchange import (
    Departure,
    Exchange,
    Gone,
    Receive,
    Scope,
    Send,
    routing_headers,
)
from batuta.gateway.inbox import Inbox
from batuta.gateway.keys import Keyring
from batuta.gateway.observe import Observer, ObserveSettings
from batuta.gateway.select import Selected, model_ids, require_fields, select
from batuta.gateway.streaming import Frames, stream
from batuta.gateway.tablefile import TableFile
from batuta.router.targets import target_of

if TYPE_CHECKING:
    from batuta.backends.types import InferenceRequest, InferenceResponse, ToolCall
    from batuta.gateway.keyspend import KeySpend
    from batuta.router.engine import Router
    from batuta.router.redisstate import SharedState

T = TypeVar("T")

KEEPALIVE_SECONDS = 15.0
BODY_TIMEOUT = 30.0  # seconds a client may take to send its request body (then 408)
MAX_BODY = 16 * 2**20
# Seconds between looks at the breakers file for what ``serve query`` beside the gateway
# changed: stat-ing it twice per request would be a tenth of the gateway's own time.
BREAKER_RECHECK = 0.05


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
        keys: Keyring | None = None,
        observe: ObserveSettings = ObserveSettings(),  # noqa: B008 - frozen, shared safely
        shared: SharedState | None = None,  # gateway.state: replicas' spend, rates, breakers
    ) -> None:
        self.table = TableFile(table)
        self._shared = shared
        self._state_dir = state_dir
        self._router = router
        self.keys = keys
        self._key_spend: KeySpend | None = None
        self.keepalive = keepalive
        self.body_timeout = body_timeout
        self.observer: Observer | None = observe.observer(
            state_dir, router=lambda: self.router, table=self.table.maybe
        )

    @property
    def router(self) -> Router:
        if self._router is None:
            from batuta.router.engine import Router
            from batuta.runtime.ondemand import waker

            # aiohttp upstream: httpx's per-request cost would be most of the gateway's.
            wake = waker(self._state_dir) if self._state_dir is not None else None
            shared = self._shared
            self._router = Router(
                state_dir=self._state_dir, http="aiohttp", recheck=BREAKER_RECHECK, wake=wake,
                breakers=shared.breakers(recheck=BREAKER_RECHECK) if shared else None,
                ledger=shared.ledger("route") if shared else None,
            )  # fmt: skip
        return self._router

    @property
    def key_spend(self) -> KeySpend:
        if self._key_spend is None:
            from batuta.gateway.keyspend import KeySpend

            ledger = self._shared.ledger("key") if self._shared else None
            self._key_spend = KeySpend(self._state_dir, ledger=ledger)
        return self._key_spend

    async def aclose(self) -> None:
        if self._router is not None:
            await self._router.aclose()
        if self.observer is not None:
            self.observer.close()

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        ex = Exchange(scope, receive, send, path == "/v1/messages", time.monotonic())
        try:
            if self.keys is not None and path != "/health" and not _local_operator(scope):
                ex.key = self.keys.admit(scope["headers"]).name
            await self._dispatch(ex, method, path)
        except GatewayError as exc:
            if not ex.begun:
                await ex.error(exc)
            ex.outcome.error = exc.message
        except Gone:
            ex.status = 499  # the client closed the request (nginx's code for it)
        finally:
            if ex.outcome.api and self.observer is not None:
                ex.outcome.status, ex.outcome.key = ex.status or 500, ex.key
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

    async def _dispatch(self, ex: Exchange, method: str, path: str) -> None:
        post = _POSTS.get(path)
        if post is not None:
            if method != "POST":
                raise GatewayError(405, f"{path} takes POST", code="method_not_allowed")
            ex.outcome.started = ex.started  # an inference request: recorded once it ends
            ex.outcome.api = "anthropic" if ex.anthropic else "openai"
            await post(self, ex)
            return
        if method not in ("GET", "HEAD"):
            raise GatewayError(404 if path not in _GETS else 405, f"no {method} {path}")
        if path == "/health":
            await ex.json(200, {"status": "ok"})
        elif path == "/ready":
            await self._ready(ex)
        elif path == "/v1/models":
            await ex.json(200, {"object": "list", "data": self._models(ex)})
        elif path.startswith("/v1/models/"):
            await self._model(ex, path.removeprefix("/v1/models/"))
        elif path in ("/", "/status.json", "/metrics"):
            from batuta.gateway.status import response

            headers, body = response(path, table=self.table.maybe(), router=self.router,
                                     observer=self.observer, state_dir=self._state_dir)  # fmt: skip
            await ex.start(200, [*headers, (b"content-length", b"%d" % len(body))])
            await ex.body(body)
        else:
            raise GatewayError(404, f"no such endpoint: {path}", code="unknown_url")

    # ------------------------------------------------------------------ GET

    def _models(self, ex: Exchange) -> list[dict[str, Any]]:
        """What the request's key may use (everything, without keys)."""
        scope = self.keys.by_name[ex.key].routes if self.keys is not None else None
        return [
            {"id": m.id, "object": "model", "created": 0, "owned_by": m.owned_by, "batuta": m.kind}
            for m in model_ids(self.table.current())
            if scope is None or (m.kind in ("route", "alias") and m.owned_by in scope)
        ]

    async def _model(self, ex: Exchange, name: str) -> None:
        found = [m for m in self._models(ex) if m["id"] == name]
        if not found:
            self._select(ex, name, None)  # raises the 404 with its "did you mean", or the 403
        await ex.json(200, found[0])

    async def _ready(self, ex: Exchange) -> None:
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

    async def _read_json(self, ex: Exchange) -> Any:
        pieces: list[bytes] = []
        size = 0
        try:
            async with within(self.body_timeout):  # no task per request, as wait_for makes
                while True:
                    message = await ex.receive()
                    if message["type"] == "http.disconnect":
                        raise Gone
                    piece = message.get("body", b"")
                    size += len(piece)
                    if size > MAX_BODY:
                        raise GatewayError(413, f"the request body exceeds {MAX_BODY} bytes")
                    pieces.append(piece)
                    if not message.get("more_body"):
                        break
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

    async def _chat(self, ex: Exchange) -> None:
        call = openai.parse_chat(await self._read_json(ex))
        selected = self._select(ex, call.model, call.request)
        require_fields(selected, call.request)
        if call.request.stream:
            frames = openai.ChatStream(call.model, call.include_usage)
            await self._stream(ex, selected, call.request, frames)
            return
        resp = await self._answer(ex, selected, call.request)
        await ex.json(200, openai.completion(call.model, resp), routing_headers(resp, ex.started))

    async def _completions(self, ex: Exchange) -> None:
        call = completions.parse_completion(await self._read_json(ex))
        selected = self._select(ex, call.model, call.request)
        require_fields(selected, call.request)
        if call.request.stream:
            frames = completions.TextStream(call.model, call.include_usage)
            await self._stream(ex, selected, call.request, frames)
            return
        resp = await self._answer(ex, selected, call.request)
        body = completions.text_completion(call.model, resp)
        await ex.json(200, body, routing_headers(resp, ex.started))

    async def _embeddings(self, ex: Exchange) -> None:
        from batuta.gateway import embeddings
        from batuta.router.embed import embed_route

        call = embeddings.parse_embeddings(await self._read_json(ex))
        selected = self._select(ex, call.model, None)
        embeddings.require_embedder(selected)
        work = embed_route(self.router, selected.route, call.request, managed=not selected.bare)
        done = await self._until_gone(ex, work)
        headers = [
            (b"x-batuta-target", done.target.encode()),
            (b"x-batuta-attempts", str(done.attempts).encode()),
            (b"x-batuta-fallbacks", str(done.fallbacks).encode()),
        ]
        await ex.json(200, embeddings.response(call, done), headers)

    async def _messages(self, ex: Exchange) -> None:
        call = anthropic.parse_messages(await self._read_json(ex))
        selected = self._select(ex, call.model, call.request)
        if call.request.stream:
            await self._stream(ex, selected, call.request, anthropic.MessageStream(call.model))
            return
        resp = await self._answer(ex, selected, call.request)
        await ex.json(200, anthropic.message(call.model, resp), routing_headers(resp, ex.started))

    # ------------------------------------------------------------------ routing

    def _select(self, ex: Exchange, model: str, request: InferenceRequest | None) -> Selected:
        """The route for ``model``; a 403 when it is outside the key's scope."""
        ex.outcome.model, ex.outcome.request = model, request
        ex.outcome.stream = request is not None and request.stream
        selected = select(self.table.current(), model)
        ex.outcome.route = selected.route.name
        if self.keys is not None:
            self.keys.allow(self.keys.by_name[ex.key], selected)
        return selected

    def _route(
        self,
        ex: Exchange,
        selected: Selected,
        request: InferenceRequest,
        on_text: Callable[[str], None] | None,
        on_tools: Callable[[tuple[ToolCall, ...]], None] | None = None,
    ) -> Awaitable[InferenceResponse]:
        if self.keys is not None and (key := self.keys.by_name[ex.key]).budgeted:
            # A 429 here, before any task starts; a route of free targets holds nothing.
            selected, booking = self.key_spend.reserve(key, selected, request)
            if booking is not None:
                call = functools.partial(self._call, on_tools=on_tools)
                return self.key_spend.settled(booking, selected, request, on_text, call)
        return self._call(selected, on_text, request, on_tools=on_tools)

    def _call(
        self,
        selected: Selected,
        on_text: Callable[[str], None] | None,
        request: InferenceRequest,
        *,
        on_tools: Callable[[tuple[ToolCall, ...]], None] | None = None,
    ) -> Awaitable[InferenceResponse]:
        route = selected.route
        if selected.bare:
            target = target_of(route.targets[0])
            return self.router.query_target(
                target, request, on_text=on_text, timeout=route.timeout, retries=route.retries,
                on_tools=on_tools,
            )  # fmt: skip
        return self.router.query(route, request, on_text=on_text, on_tools=on_tools)

    async def _answer(
        self, ex: Exchange, selected: Selected, request: InferenceRequest
    ) -> InferenceResponse:
        """A blocking answer; cancelled when the client goes away first."""
        resp = await self._until_gone(ex, self._route(ex, selected, request, None))
        ex.outcome.resp = resp
        return resp

    async def _until_gone(self, ex: Exchange, call: Awaitable[T]) -> T:
        """``call``'s result; cancelled when the client goes away first.

        ``call`` runs in this task, which the watch cancels (a task of its own for the
        call cost a task creation and two loop steps per request)."""
        task = asyncio.current_task()
        assert task is not None
        watch = Departure(ex.receive, task.cancel)
        try:
            return await call
        except RoutingError as exc:
            ex.outcome.failure = exc
            raise from_routing(exc) from None
        except asyncio.CancelledError:
            if watch.left:  # the client left, not a shutdown
                raise Gone from None
            raise
        finally:
            watch.close()
            if watch.left and sys.version_info >= (3, 11):
                task.uncancel()  # this task goes on: the cancel was ours, and is spent

    async def _stream(
        self,
        ex: Exchange,
        selected: Selected,
        request: InferenceRequest,
        frames: Frames,
    ) -> None:
        inbox = Inbox()
        tools = inbox.put if isinstance(frames, openai.ChatStream) else None  # tool-call deltas
        work = self._route(ex, selected, request, inbox.put, tools)
        await stream(ex, work, inbox, frames, route=selected.route.name, keepalive=self.keepalive)


# The inference endpoints, each a POST handled by one method.
_POSTS: dict[str, Callable[[Gateway, Exchange], Awaitable[None]]] = {
    "/v1/chat/completions": Gateway._chat,
    "/v1/messages": Gateway._messages,
    "/v1/completions": Gateway._completions,
    "/v1/embeddings": Gateway._embeddings,
}

# The status page and metrics answer a client on this machine without a key (a browser
# cannot send one; a remote one, or a Prometheus elsewhere, presents a key as any client).
_OPERATOR = frozenset({"/", "/status.json", "/metrics"})


def _local_operator(scope: Scope) -> bool:
    from batuta._util.net import is_loopback

    client = scope.get("client")
    return scope["path"] in _OPERATOR and client is not None and is_loopback(str(client[0]))


_GETS = frozenset({"/", "/status.json", "/metrics", "/health", "/ready", "/v1/models"})
