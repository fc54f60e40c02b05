"""Run a benchmark: send prompts on schedule, time every request, summarize the run.

A :data:`Transport` sends one request and calls ``on_text`` for each piece of text as it
arrives; the runner timestamps those calls, so the same measurement serves a bare adapter
(``--endpoint``) and a routed query with failover (``--route``). Requests are dispatched
on the :mod:`~batuta.benchmark.arrivals` schedule; with a concurrency cap a request waits
for a free slot before it is sent, and that wait is kept apart from its latency (as vLLM
does). One request failing is recorded with its failure kind; it never stops the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import math
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx

from batuta._util.http import LoopbackDirectTransport
from batuta.backends.types import InferenceRequest, Target, Usage
from batuta.benchmark.arrivals import Clock, Sleep, arrival_offsets, check_rate, open_offsets, paced
from batuta.benchmark.metrics import BenchOptionError, RequestRecord, summarize
from batuta.benchmark.prompts import BenchPrompt
from batuta.errors import BackendError, BatutaError

if TYPE_CHECKING:
    from batuta.backends.base import Adapter
    from batuta.router.engine import Router
    from batuta.routing.table import RouteEntry

OnText = Callable[[str], None]
Transport = Callable[[InferenceRequest, OnText], Awaitable[Usage | None]]
Progress = Callable[[int, int | None], None]

_DONE = b"data: [DONE]"
_FINAL_USAGE = re.compile(rb'"choices":\s*\[\]\s*,.*"usage":\s*\{|"usage":\s*\{.*"choices":\s*\[\]')
_DRAIN_SECONDS = 0.02  # how long the end of a body may take to follow its [DONE]
_DRAIN_BYTES = 65536  # and how much may follow


@dataclass(frozen=True)
class RunSpec:
    """How one run sends its prompts (one ``--concurrency`` value is one run)."""

    num_prompts: int | None = None  # None: every prompt once, or as many as --duration allows
    request_rate: float = math.inf
    burstiness: float = 1.0
    max_concurrency: int | None = None
    duration: float | None = None  # stop sending new requests after this many seconds
    warmup: int = 0
    max_tokens: int | None = 128
    temperature: float | None = None
    model: str | None = None
    seed: int = 0
    percentiles: tuple[float, ...] = (99.0,)
    goodput: dict[str, float] = field(default_factory=dict)
    detailed: bool = False

    def check(self) -> None:
        """Reject combinations that cannot run."""
        check_rate(self.request_rate, self.burstiness)
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise BenchOptionError("concurrency must be at least 1")
        if self.num_prompts is not None and self.num_prompts < 1:
            raise BenchOptionError("--num-prompts must be at least 1")
        if self.warmup < 0:
            raise BenchOptionError("--warmup must not be negative")
        if self.duration is not None:
            if self.duration <= 0:
                raise BenchOptionError("--duration must be positive")
            if math.isinf(self.request_rate) and self.max_concurrency is None:
                raise BenchOptionError(
                    "--duration needs --request-rate or a concurrency cap: "
                    "otherwise it would send without limit"
                )


@dataclass
class RunResult:
    """One finished run: its spec, every request's record and the vLLM-shaped metrics."""

    spec: RunSpec
    records: list[RequestRecord]
    duration: float
    metrics: dict[str, Any]


def adapter_transport(adapter: Adapter) -> Transport:
    """A transport that streams straight from one adapter."""

    async def send(request: InferenceRequest, on_text: OnText) -> Usage | None:
        usage: Usage | None = None
        async for chunk in adapter.stream(request):
            if chunk.text:
                on_text(chunk.text)
            if chunk.usage is not None:
                usage = chunk.usage
        return usage

    return send


async def measure(
    transport: Transport,
    request: InferenceRequest,
    record: RequestRecord,
    *,
    clock: Clock = time.perf_counter,
    origin: float = 0.0,
) -> RequestRecord:
    """Send ``request`` and fill ``record`` with its timings, counts and outcome."""
    sent = clock()
    last = sent
    record.start = sent - origin

    def on_text(text: str) -> None:
        nonlocal last
        now = clock()
        if record.chunks == 0:
            record.ttft = now - sent
        else:
            record.itl.append(now - last)
        last = now
        record.chunks += 1

    try:
        usage = await transport(request, on_text)
    except BackendError as exc:
        record.error, record.error_kind = str(exc), exc.kind.value
        return record
    except BatutaError as exc:  # a routed query that failed on every target, say
        record.error, record.error_kind = str(exc), type(exc).__name__
        return record
    if record.chunks == 0:
        record.error, record.error_kind = "the answer carried no text", "empty"
        return record
    record.latency = last - sent
    record.success = True
    if usage is not None:
        record.usage_output_tokens = usage.output_tokens
        record.usage_input_tokens = usage.input_tokens
    return record


async def _warm_up(
    transport: Transport, request: InferenceRequest, spec: RunSpec, clock: Clock
) -> None:
    # As vLLM: the first prompt, `warmup` times, under the same concurrency cap; untimed.
    gate = asyncio.Semaphore(spec.max_concurrency or max(spec.warmup, 1))

    async def one(i: int) -> None:
        async with gate:
            await measure(transport, request, RequestRecord(i), clock=clock)

    await asyncio.gather(*(one(i) for i in range(spec.warmup)))


async def run(
    transport: Transport,
    prompts: Sequence[BenchPrompt],
    spec: RunSpec,
    *,
    clock: Clock = time.perf_counter,
    sleep: Sleep = asyncio.sleep,
    on_progress: Progress | None = None,
) -> RunResult:
    """Send the prompts as ``spec`` says and return the measured run."""
    spec.check()
    if not prompts:
        raise BenchOptionError("no prompts to send")
    rng = random.Random(spec.seed)

    def request_for(i: int) -> InferenceRequest:
        prompt = prompts[i % len(prompts)]
        return prompt.request(spec.max_tokens, model=spec.model, temperature=spec.temperature)

    if spec.warmup:
        await _warm_up(transport, request_for(0), spec, clock)

    total: int | None
    offsets: Iterable[float]
    if spec.duration is None:
        total = spec.num_prompts or len(prompts)
        offsets = arrival_offsets(total, spec.request_rate, spec.burstiness, rng)
    else:
        total = spec.num_prompts
        offsets = open_offsets(spec.request_rate, spec.burstiness, rng)
    gate = asyncio.Semaphore(spec.max_concurrency) if spec.max_concurrency else None
    records: list[RequestRecord] = []
    tasks: list[asyncio.Task[None]] = []
    finished = 0

    async def one(record: RequestRecord, request: InferenceRequest, due: float) -> None:
        nonlocal finished
        try:
            await measure(transport, request, record, clock=clock, origin=start)
            # Time spent waiting for a free slot after the schedule said "send" (vLLM's
            # client_queue_time); it is not part of any latency.
            record.queue_time = max(0.0, start + record.start - due)
        finally:
            if gate is not None:
                gate.release()
            finished += 1
            if on_progress is not None:
                on_progress(finished, total)

    # As vLLM: move what exists now out of the collector's sight, so a full collection
    # during the run does not pause the client over objects that cannot be garbage.
    gc.collect()
    gc.freeze()
    start = clock()
    schedule = paced(offsets, clock=clock, sleep=sleep, until=spec.duration)
    try:
        async with contextlib.aclosing(schedule):
            async for i, due in schedule:
                if gate is not None:
                    await gate.acquire()
                record = RequestRecord(i)
                record.estimated_input_tokens = prompts[i % len(prompts)].estimated_tokens()
                records.append(record)
                tasks.append(asyncio.create_task(one(record, request_for(i), due)))
                if total is not None and len(tasks) >= total:
                    break
        await asyncio.gather(*tasks)
    finally:
        gc.unfreeze()
        for task in tasks:
            task.cancel()
    duration = clock() - start
    metrics = summarize(
        records, duration, spec.percentiles, spec.goodput or None, detailed=spec.detailed
    )
    return RunResult(spec, records, duration, metrics)


# ---------------------------------------------------------------------------- sessions


def route_transport(router: Router, route: RouteEntry) -> Transport:
    """A transport that answers through a route, with its retries and failover."""

    async def send(request: InferenceRequest, on_text: OnText) -> Usage | None:
        answer = await router.query(route, request, on_text=on_text)
        if answer.usage_source != "server":
            return None
        return Usage(answer.input_tokens, answer.tokens_generated)

    return send


class _ReadAhead(httpx.AsyncByteStream):
    """A response body that, once the last event of an OpenAI-style stream has arrived
    (``data: [DONE]``, or the usage chunk with ``"choices": []`` that precedes it), reads on
    to the end of the body and hands the connection back before passing that event on.

    Adapters stop reading at that event, one step before the chunked terminator that lets
    HTTP/1.1 reuse the connection, and leave closing the response to their generators'
    finalizers. Each request would then hold its connection until a later loop iteration
    and often open a new one: about 0.5 ms of client CPU more per request, and at a few
    hundred requests a second a pool that grows faster than it drains (see
    bench/bench_capacity.py). No text still to be timed is held back: both events come
    after the last token."""

    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        parts = self._inner.__aiter__()
        async for part in parts:
            if _DONE in part or _FINAL_USAGE.search(part):
                tail, ended = await _rest(parts)
                if ended:
                    await self._inner.aclose()  # the body is complete: release it now
                yield part + tail
                if ended:
                    return
                continue
            yield part
        await self._inner.aclose()

    async def aclose(self) -> None:
        await self._inner.aclose()


async def _rest(parts: AsyncIterator[bytes]) -> tuple[bytes, bool]:
    """What follows in the body if it comes at once (normally just the terminator), and
    whether that was the end of it."""
    tail = b""
    with anyio.move_on_after(_DRAIN_SECONDS), contextlib.suppress(httpx.HTTPError):
        async for more in parts:
            tail += more
            if len(tail) > _DRAIN_BYTES:
                return tail, False
        return tail, True
    return tail, False


class _KeepAliveTransport(httpx.AsyncBaseTransport):
    """The default transport, with :class:`_ReadAhead` response bodies."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=_ReadAhead(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


def _client() -> httpx.AsyncClient:
    # No pool limit: the benchmark's own cap is the only one (vLLM's connector does the
    # same). Loopback (as the privacy check defines it) never goes through a proxy.
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(None, connect=10.0),
        transport=_KeepAliveTransport(LoopbackDirectTransport(limits)),
        trust_env=False,
    )


async def discover_model(adapter: Adapter) -> str:
    """The target's model, or the first one the server lists (as vLLM does without
    --model); a benchmark cannot go on without one."""
    from batuta.router.targets import served_model

    model = await served_model(adapter)
    if not model:
        raise BenchOptionError(f"{adapter.target.name}: the server lists no model; pass --model")
    return model


async def run_all(
    transport: Transport,
    prompts: Sequence[BenchPrompt],
    specs: Sequence[RunSpec],
    *,
    on_run: Callable[[int, RunSpec], Progress | None] | None = None,
) -> list[RunResult]:
    """Run each spec in turn (one per --concurrency value); ``on_run`` may hand back a
    progress callback for that run."""
    results = []
    for i, spec in enumerate(specs):
        progress = on_run(i, spec) if on_run is not None else None
        results.append(await run(transport, prompts, spec, on_progress=progress))
    return results


async def bench_target(
    target: Target,
    prompts: Sequence[BenchPrompt],
    specs: Sequence[RunSpec],
    *,
    on_run: Callable[[int, RunSpec], Progress | None] | None = None,
) -> tuple[str, list[RunResult]]:
    """Benchmark one target straight through its adapter (no retries: a benchmark counts
    failures, it does not hide them). Returns the model id used and the runs."""
    from batuta.backends.registry import adapter_for

    async with _client() as client:
        adapter = adapter_for(target, client)
        model = await discover_model(adapter)
        if model != target.model:
            adapter = adapter_for(dataclasses.replace(target, model=model), client)
        return model, await run_all(adapter_transport(adapter), prompts, specs, on_run=on_run)


async def bench_route(
    route: RouteEntry,
    prompts: Sequence[BenchPrompt],
    specs: Sequence[RunSpec],
    *,
    state_dir: Path | None = None,
    on_run: Callable[[int, RunSpec], Progress | None] | None = None,
) -> list[RunResult]:
    """Benchmark a route through the router: its order, retries, failover, breakers and
    budget all apply, exactly as for ``batuta serve query``."""
    from batuta.router.engine import Router
    from batuta.runtime.ondemand import waker

    wake = waker(state_dir) if state_dir is not None else None  # on-demand targets wake
    async with _client() as client, Router(client, state_dir=state_dir, wake=wake) as router:
        return await run_all(route_transport(router, route), prompts, specs, on_run=on_run)
