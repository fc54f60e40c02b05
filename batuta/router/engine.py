"""The router: answer one request through a route, retrying and failing over.

For each target of the route, in order: skip it when its circuit breaker is open, when
the route's budget cannot hold the call's worst case (reserved before each call to a paid
target and settled to the actual cost after it), or when the deadline has passed; otherwise
call it through its adapter, streaming text to ``on_text`` as it arrives. A failure is
retried or passed to the next target as :mod:`batuta.router.failover` decides; a target
that cannot be used at all (its adapter raises a non-backend BatutaError, such as a
missing optional extra) is one failed attempt, never retried, and the route goes on. Every
failure is told once through ``on_event``. When a stream dies after text was shown, the
next target receives that text as ``assistant_prefix`` and continues it, so the user reads
one answer; ``failed_over_from`` and an ``on_event`` line say so.
``max_tokens`` is a total across targets: the tokens a failed target streamed (one per
streamed chunk, as llama.cpp and OpenAI-style servers send them) are taken off what the next
one may generate, and when none are left the shown text is the answer.

One shared HTTP client (connection pooling; httpx, or aiohttp with ``http="aiohttp"``)
serves every call; nothing is probed before a query, failures are handled as they come.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batuta.backends.types import Chunk, InferenceRequest, InferenceResponse, Target, Usage
from batuta.errors import (
    AllTargetsFailed,
    Attempt,
    BackendError,
    BatutaError,
    FailureKind,
)
from batuta.router import capable
from batuta.router.breaker import Breakers
from batuta.router.budget import (
    Pricing,
    SpendLedger,
    cost_usd,
    estimate_tokens,
    pricing_for,
    request_input_tokens,
)
from batuta.router.concurrency import Gates, visit_gated
from batuta.router.failover import (
    DEFAULT_BACKOFF,
    Action,
    Backoff,
    Splice,
    decide,
)
from batuta.router.ondemand import Wake, Waker, visit_held
from batuta.router.run import Run, TextSink, ToolSink, bookkeep, bounded
from batuta.router.strategy import Strategies
from batuta.router.targets import check_privacy, entry_for, target_of
from batuta.routing.table import RouteEntry, TargetEntry

if TYPE_CHECKING:
    from batuta.backends._http import HttpClient
    from batuta.backends.base import Adapter
    from batuta.router._client import ClientKind

AdapterFactory = Callable[[Target, "HttpClient"], "Adapter"]

BREAKERS_FILE = "breakers.json"
SPEND_FILE = "spend.json"
# A budget hold outlives its route's deadline by this much before it lapses unsettled.
HOLD_GRACE = 60.0
_RESOLVED_MAX = 4096  # cached entries before the caches start over (tables get reloaded)


class Router:
    """Answers requests through routes or single targets over one shared HTTP client.

    ``clock`` (seconds, monotonic), ``sleep`` and ``random`` are injectable for tests.
    ``state_dir`` keeps breakers and spend in ``breakers.json`` / ``spend.json`` so they
    hold across processes; without it both live in memory for the router's lifetime.
    ``recheck`` (seconds) lets a busy long-lived router look at the breakers file at most
    that often for what other processes changed (its own changes are seen at once).
    """

    def __init__(
        self,
        client: HttpClient | None = None,
        *,
        http: ClientKind = "httpx",
        state_dir: Path | None = None,
        breakers: Breakers | None = None,
        ledger: SpendLedger | None = None,
        adapter_factory: AdapterFactory | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Coroutine[Any, Any, None]] = asyncio.sleep,
        random: Callable[[], float] = random.random,
        backoff: Backoff = DEFAULT_BACKOFF,
        recheck: float = 0.0,
        wake: Wake | None = None,
    ) -> None:
        self._client = client
        self._own_client = client is None
        self._http: ClientKind = http
        self.breakers = breakers or Breakers(
            state_dir / BREAKERS_FILE if state_dir else None, recheck=recheck
        )
        self.ledger = ledger or SpendLedger(state_dir / SPEND_FILE if state_dir else None)
        self._factory = adapter_factory
        self._clock = clock
        self._sleep = sleep
        self._random = random
        self._backoff = backoff
        self._adapters: dict[tuple[Any, ...], Adapter] = {}
        self.inflight: dict[str, int] = {}  # calls in progress per target name (for metrics)
        # Per routing-table entry, its Target and that Target's adapter: a long-lived
        # gateway answers thousands of requests a second through the same few entries.
        # Keyed by identity, holding the key object so that its id cannot be reused.
        self._resolved: dict[int, tuple[TargetEntry, Target]] = {}
        self._by_target: dict[int, tuple[Target, Adapter]] = {}
        # On-demand servers are woken through ``wake`` (see batuta.router.ondemand).
        self.waker = Waker(state_dir, wake) if wake is not None and state_dir else None
        self.gates = Gates()  # max_concurrency and queues; in-flight counts per target
        self._strategies = Strategies()

    # ------------------------------------------------------------------ lifecycle

    @property
    def client(self) -> HttpClient:
        """The shared client, created on first use (see :mod:`batuta.router._client`): an
        ``httpx.AsyncClient``, or with ``http="aiohttp"`` an aiohttp session."""
        if self._client is None:
            from batuta.router._client import make_client

            self._client = make_client(self._http)
        return self._client

    async def aclose(self) -> None:
        """Close the client if this router created it."""
        if self.waker is not None:
            self.waker.close()
        if self._own_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> Router:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def adapter(self, target: Target) -> Adapter:
        """The (cached) adapter speaking to ``target``."""
        known = self._by_target.get(id(target))
        if known is not None and known[0] is target:
            return known[1]
        key = (target.name, target.backend, target.protocol, target.base_url, target.model,
               target.api_key_env, target.local, json.dumps(target.options, sort_keys=True))  # fmt: skip
        adapter = self._adapters.get(key)
        if adapter is None:
            if self._factory is not None:
                adapter = self._factory(target, self.client)
            else:
                from batuta.backends.registry import adapter_for

                adapter = adapter_for(target, self.client)
            self._adapters[key] = adapter
        if len(self._by_target) >= _RESOLVED_MAX:
            self._by_target.clear()
        self._by_target[id(target)] = (target, adapter)
        return adapter

    def _target(self, entry: TargetEntry) -> Target:
        """``entry``'s Target, made once per entry (a reloaded table brings new entries)."""
        known = self._resolved.get(id(entry))
        if known is not None and known[0] is entry:
            return known[1]
        if len(self._resolved) >= _RESOLVED_MAX:
            self._resolved.clear()
        target = target_of(entry)
        self._resolved[id(entry)] = (entry, target)
        return target

    # ------------------------------------------------------------------ public

    async def query(
        self,
        route: RouteEntry,
        request: InferenceRequest,
        *,
        on_text: TextSink | None = None,
        on_event: TextSink | None = None,
        on_tools: ToolSink | None = None,
    ) -> InferenceResponse:
        """Answer ``request`` through ``route``; raises AllTargetsFailed (with every
        attempt) when no target answers, RoutingError when the route breaks its privacy tier.
        ``on_tools`` receives streamed tool-call deltas (see ``Run.tools_shown``)."""
        check_privacy(route)
        return await self._route(route, request, on_text, on_event, managed=True, tools=on_tools)

    async def query_target(
        self,
        target: Target,
        request: InferenceRequest,
        *,
        on_text: TextSink | None = None,
        on_event: TextSink | None = None,
        timeout: float = 30.0,
        first_byte_timeout: float | None = None,
        retries: int = 1,
        on_tools: ToolSink | None = None,
    ) -> InferenceResponse:
        """Answer through one bare target. It was named explicitly, so its breaker is not
        consulted and no route budget applies (the cost is still reported)."""
        route = RouteEntry(
            name=target.name, latency="interactive", privacy="standard", cost="balanced",
            targets=(entry_for(target),), timeout=timeout,
            first_byte_timeout=first_byte_timeout, retries=retries,
        )  # fmt: skip
        return await self._route(route, request, on_text, on_event, managed=False, tools=on_tools)

    # ------------------------------------------------------------------ the chain

    async def _route(
        self,
        route: RouteEntry,
        request: InferenceRequest,
        on_text: TextSink | None,
        on_event: TextSink | None,
        *,
        managed: bool,
        tools: ToolSink | None = None,
    ) -> InferenceResponse:
        now = self._clock()
        run = Run(route, request, now, now + route.timeout, on_text, on_event, on_tools=tools)
        pricing: Pricing | None = None
        try:
            order = self._strategies.order(route, self.gates.busy)
            for index, entry in enumerate(order):
                run.left = len(order) - index - 1
                target = self._target(entry)
                pricing = pricing_for(entry)
                reason = self._skip_reason(run, entry, target, pricing, managed)
                if reason is not None:
                    run.attempts.append(Attempt(target.name, reason))
                    run.event(f"· {target.name} skipped: {reason}")
                    continue
                visit = functools.partial(self._visit, run, target, pricing, managed)
                held = functools.partial(visit_held, self.waker, run, entry, self._clock, visit)
                error = await visit_gated(self.gates, run, entry, self._clock, held)
                if error is None:
                    if managed:
                        bookkeep(run, self.breakers.record_success, target)
                    return self._answer(run, target, pricing, index, managed)
                if managed and error.kind is not FailureKind.CLIENT:
                    bookkeep(run, self.breakers.record_failure, target)
                if run.tools_shown:
                    break
                if run.spent():  # it died after its last token: nothing is left to ask for
                    run.event(f"{run.note}; the answer had reached max_tokens")
                    run.note, run.finish, run.untold = None, "length", None
                    return self._answer(run, target, None, index, managed)
        finally:
            if run.hold is not None:  # interrupted mid-call: bill what was generated
                inputs = request_input_tokens(run.next_request())
                self._settle(run, cost_usd(pricing, inputs, run.chunks))
        if run.untold is not None:  # every failure is told once, as an event
            run.event(run.untold)
        raise AllTargetsFailed(route.name, run.attempts, what="route" if managed else "endpoint")

    def _skip_reason(
        self, run: Run, entry: TargetEntry, target: Target, pricing: Pricing | None, managed: bool
    ) -> str | None:
        if self._clock() >= run.deadline:
            return f"the route's {run.route.timeout:g} s deadline has passed"
        refused = capable.skip_reason(run.request, target)
        if refused is not None:
            return refused
        if not managed:
            return None
        if bookkeep(run, self.breakers.allow, target) is False:
            return "circuit open"
        return self._reserve(run, pricing)

    def _reserve(self, run: Run, pricing: Pricing | None) -> str | None:
        """Set aside this call's worst case in the route's budget; why the target must be
        skipped when that does not fit. Free targets need nothing."""
        if pricing is None:
            return None
        request = run.next_request()
        ttl = max(0.0, run.deadline - self._clock()) + HOLD_GRACE
        held = bookkeep(run, lambda: self.ledger.reserve(run.route, pricing, request, ttl=ttl))
        if isinstance(held, str):
            return held
        run.hold = held
        return None

    def _settle(self, run: Run, usd: float) -> None:
        """Book what one call cost, in place of its hold (when the route has one)."""
        hold, run.hold = run.hold, None
        if hold is not None:
            bookkeep(run, self.ledger.settle, hold, usd)
        elif usd > 0:
            bookkeep(run, self.ledger.record, run.route.name, usd)

    async def _visit(
        self, run: Run, target: Target, pricing: Pricing | None, managed: bool
    ) -> BackendError | None:
        """Use one target, with its retries. None when it answered, else the last failure.
        Each try of a paid target is reserved in the route's budget and settled after it."""
        retries_done = 0
        while True:
            request = run.next_request()
            run.splice = Splice(request.assistant_prefix) if run.shown else None
            started = self._clock()
            run.tries += 1
            try:
                await self._call(run, target, request)
                return None
            except BackendError as exc:
                error = exc
            generated, shown_here = run.chunks, bool(run.text)
            run.attempts.append(
                Attempt(target.name, str(error), error.kind,
                        (self._clock() - started) * 1000.0, generated, error.retry_after)
            )  # fmt: skip
            # The provider billed what it streamed before dying; a refusal before any
            # output (429, 5xx, auth) is not billed.
            billed = cost_usd(pricing, request_input_tokens(request), generated) if generated else 0
            run.cost += billed
            if managed:
                self._settle(run, billed)
            if shown_here:
                run.shown += run.text
                run.shown_tokens += generated
                run.note = f"↪ {target.name} failed after {generated} tokens ({error.kind.value})"
                run.untold = f"✗ {target.name}: {error} (after {generated} tokens)"
            run.text, run.chunks, run.finish, run.usage = [], 0, None, Usage()
            decision = decide(
                error, retries_done=retries_done, max_retries=run.route.retries,
                output_shown=shown_here or run.tools_shown, now=self._clock(), deadline=run.deadline,
                rnd=self._random(), backoff=self._backoff, local_with_next=target.local and run.left > 0,
            )  # fmt: skip
            if decision.action is Action.RETRY:
                retries_done += 1
                run.event(
                    f"↻ {target.name}: {error}; retry {retries_done}/{run.route.retries} "
                    f"in {decision.wait:.1f} s ({decision.reason})"
                )
                await self._sleep(decision.wait)
                # The retry is a call of its own: it must fit what is left of the budget
                # now (other queries may have spent or reserved it meanwhile).
                over = self._reserve(run, pricing) if managed else None
                if over is None:
                    continue
                run.event(f"· {target.name}: no retry, {over}")
                run.failed_over_from.append(target.name)
                return error
            if not shown_here:
                run.event(f"✗ {target.name}: {error}")
            run.failed_over_from.append(target.name)
            return error

    async def _call(self, run: Run, target: Target, request: InferenceRequest) -> None:
        """One request to one target; fills ``run``'s answer fields or raises BackendError."""
        import httpx

        self.inflight[target.name] = self.inflight.get(target.name, 0) + 1
        try:
            await self._exchange(run, target, request)
        except BackendError:
            raise
        except httpx.TransportError as exc:  # an adapter that let one slip through
            raise BackendError(FailureKind.CONNECT, f"{target.name}: {exc}") from exc
        except BatutaError as exc:
            # The target cannot be used from here (an optional extra or a credential helper
            # missing, settings it refuses): no retry can fix that, the next target may.
            raise BackendError(FailureKind.CLIENT, f"{target.name} cannot be used: {exc}") from exc
        finally:
            self.inflight[target.name] -= 1

    async def _exchange(self, run: Run, target: Target, request: InferenceRequest) -> None:
        """The call itself: build (or reuse) the adapter, then complete or stream."""
        adapter = self.adapter(target)
        if run.splice is not None and adapter.continues(request):
            # A true continuation; holding back text that happens to repeat the shown
            # text would cut a greedy answer that loops.
            run.splice = None
        remaining = run.deadline - self._clock()
        first_byte = min(run.route.first_byte_timeout or run.route.timeout, remaining)
        # An adapter that does not enforce these itself is bounded step by step below.
        own_deadlines = adapter.enforces_deadlines
        deadline = time.monotonic() + remaining
        if not request.stream:
            work = adapter.complete(request, first_byte_timeout=first_byte, deadline=deadline)
            done = await (work if own_deadlines else bounded(work, first_byte, "no answer"))
            if done.text:
                run.take(done.text, self._clock(), target.name)
            run.finish, run.usage, run.tool_calls = done.finish_reason, done.usage, done.tool_calls
            return
        chunks = adapter.stream(request, first_byte_timeout=first_byte, deadline=deadline)
        try:
            limit = first_byte
            while True:
                step = chunks.__anext__()
                try:
                    chunk: Chunk = await (
                        step if own_deadlines else bounded(step, limit, "no text")
                    )
                except StopAsyncIteration:
                    break
                limit = run.deadline - self._clock()
                if chunk.text:
                    run.take(chunk.text, self._clock(), target.name)
                if chunk.tool_calls and run.on_tools is not None:
                    run.tools_shown = True
                    run.on_tools(chunk.tool_calls)
                run.finish = chunk.finish_reason or run.finish
                run.usage = chunk.usage or run.usage
        finally:
            await chunks.aclose()

    # ------------------------------------------------------------------ the answer

    def _answer(
        self, run: Run, target: Target, pricing: Pricing | None, index: int, managed: bool
    ) -> InferenceResponse:
        end = self._clock()
        if run.note is not None:  # the continuation added no text of its own
            run.event(f"{run.note}; continued on {target.name}")
        text = "".join(run.text)
        request = run.next_request()
        streamed_estimate = run.chunks if run.request.stream else estimate_tokens(text)
        server_out = run.usage.output_tokens
        own = server_out if server_out is not None else streamed_estimate
        server_in = run.usage.input_tokens
        inputs = server_in if server_in is not None else request_input_tokens(request)
        tokens = run.shown_tokens + own
        exact = server_out is not None and not run.shown_tokens
        own_cost = cost_usd(pricing, inputs, own)
        cost = run.cost + own_cost
        if managed:
            self._settle(run, own_cost)
        latency = end - run.started
        # A blocking answer arrives whole: its "first token" would only be the total again.
        first = run.first_text_at if run.request.stream else None
        if first is not None and tokens > 1 and end > first:
            rate = (tokens - 1) / (end - first)
        else:
            rate = tokens / latency if latency > 0 else 0.0
        return InferenceResponse(
            text=run.shown_text() + text,
            tokens_generated=tokens,
            latency_ms=latency * 1000.0,
            tokens_per_second=rate,
            target=target.name,
            ttft_ms=(first - run.started) * 1000.0 if first is not None else None,
            attempts=run.tries,
            fallbacks=index,
            failed_over_from=list(run.failed_over_from),
            tried=list(run.attempts),
            finish_reason=run.finish,
            input_tokens=inputs,
            usage_source="server" if exact else "estimate",
            cost_usd=cost,
            tool_calls=run.tool_calls,
        )


def run_query(
    route: RouteEntry | Target,
    request: InferenceRequest,
    *,
    state_dir: Path | None = None,
    on_text: TextSink | None = None,
    on_event: TextSink | None = None,
    **target_options: Any,
) -> InferenceResponse:
    """Synchronous convenience: answer through a route (or one bare target) and return.

    ``target_options`` (timeout, first_byte_timeout, retries) apply to a bare target.
    """
    if target_options and not isinstance(route, Target):
        raise TypeError("timeout/first_byte_timeout/retries apply to a bare target only")

    async def main() -> InferenceResponse:
        async with Router(state_dir=state_dir) as router:
            if isinstance(route, Target):
                return await router.query_target(
                    route, request, on_text=on_text, on_event=on_event, **target_options
                )
            return await router.query(route, request, on_text=on_text, on_event=on_event)

    return asyncio.run(main())
