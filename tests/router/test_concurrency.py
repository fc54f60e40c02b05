"""Per-target slots and their FIFO queue; the strategies' order."""

from __future__ import annotations

import asyncio

import pytest

from batuta.router.concurrency import Gate, Gates, Refused
from batuta.router.strategy import Strategies
from batuta.routing.table import RouteEntry, TargetEntry


async def _hold(gate: Gate, log: list[str], name: str, release: asyncio.Event) -> None:
    await gate.acquire()
    log.append(name)
    await release.wait()
    gate.release()


def test_waiters_get_slots_in_arrival_order() -> None:
    async def main() -> list[str]:
        gate = Gate(1, 10, 5.0)
        log: list[str] = []
        go = asyncio.Event()
        first = asyncio.create_task(_hold(gate, log, "first", go))
        await asyncio.sleep(0)
        rest = []
        for name in ("a", "b", "c"):
            rest.append(asyncio.create_task(_hold(gate, log, name, go)))
            await asyncio.sleep(0)
        assert gate.in_flight == 1 and gate.waiting == 3
        go.set()
        await asyncio.gather(first, *rest)
        assert gate.in_flight == 0 and gate.waiting == 0
        return log

    assert asyncio.run(main()) == ["first", "a", "b", "c"]


def test_full_queue_and_timeout_are_refused() -> None:
    async def main() -> None:
        gate = Gate(1, 1, 0.1)
        await gate.acquire()
        waiter = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0)
        with pytest.raises(Refused, match="1 requests already wait"):
            await gate.acquire()
        with pytest.raises(Refused, match=r"queue timeout of 0\.1s"):
            await waiter
        assert gate.waiting == 0 and gate.in_flight == 1
        gate.release()
        assert gate.in_flight == 0

    asyncio.run(main())


def test_a_cancelled_waiter_leaves_the_line() -> None:
    async def main() -> None:
        gate = Gate(1, 5, 5.0)
        await gate.acquire()
        waiter = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert gate.waiting == 0
        gate.release()
        assert gate.in_flight == 0
        await gate.acquire()  # the slot is free again

    asyncio.run(main())


def test_a_slot_handed_over_as_the_wait_is_cancelled_is_passed_on() -> None:
    async def main() -> None:
        gate = Gate(1, 5, 5.0)
        await gate.acquire()
        doomed = asyncio.create_task(gate.acquire())
        later = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0)
        gate.release()  # the slot goes to `doomed`...
        doomed.cancel()  # ...which is cancelled before it runs
        try:
            await doomed
        except asyncio.CancelledError:
            pass  # it passed the slot on
        else:
            gate.release()  # it kept the slot (asyncio let the result win): it gives it back
        await asyncio.wait_for(later, 1.0)  # either way the slot is not lost
        assert gate.in_flight == 1 and gate.waiting == 0

    asyncio.run(main())


def entry(name: str, limit: int | None = None) -> TargetEntry:
    return TargetEntry(name, "llamacpp", "openai", "http://127.0.0.1:1", "m", True,
                       max_concurrency=limit)  # fmt: skip


def route(strategy: str, *names: str) -> RouteEntry:
    return RouteEntry("r", "interactive", "standard", "balanced",
                      tuple(entry(n) for n in names), strategy=strategy)  # fmt: skip


def test_gates_follow_the_table() -> None:
    gates = Gates()
    assert gates.gate(entry("a")) is None
    first = gates.gate(entry("a", 2))
    assert first is not None and first.limit == 2
    assert gates.gate(entry("a", 2)) is first
    second = gates.gate(entry("a", 3))
    assert second is not None and second.limit == 3


def test_strategies() -> None:
    strategies = Strategies()
    names = lambda r: [t.name for t in r]  # noqa: E731
    assert names(strategies.order(route("fallback", "a", "b"), {})) == ["a", "b"]
    rr = route("round-robin", "a", "b", "c")
    seen = [names(strategies.order(rr, {})) for _ in range(4)]
    assert seen == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]
    lb = route("least-busy", "a", "b", "c")
    assert names(strategies.order(lb, {"a": 2, "b": 1, "c": 1})) == ["b", "c", "a"]
    assert names(strategies.order(lb, {})) == ["a", "b", "c"]


def test_a_refused_request_is_a_clear_rate_limited_attempt() -> None:
    from batuta.backends.types import InferenceRequest
    from batuta.errors import AllTargetsFailed, FailureKind
    from batuta.router.engine import Router
    from tests.fakes.openai_server import OpenAIFake

    fake = OpenAIFake(first_byte_delay=0.5).start()
    try:
        target = TargetEntry("s", "llamacpp", "openai", fake.url, "fake-model", True,
                             max_concurrency=1, queue_max=0)  # fmt: skip
        one = RouteEntry("r", "interactive", "standard", "balanced", (target,), retries=0)

        async def main() -> AllTargetsFailed:
            async with Router() as router:
                first = asyncio.create_task(router.query(one, InferenceRequest(prompt="hi")))
                while not router.gates.busy.get("s"):
                    await asyncio.sleep(0.01)
                with pytest.raises(AllTargetsFailed) as caught:
                    await router.query(one, InferenceRequest(prompt="hi"))
                assert (await first).target == "s"
                return caught.value

        failed = asyncio.run(main())
    finally:
        fake.stop()
    (attempt,) = failed.attempts
    assert attempt.kind is FailureKind.RATE_LIMIT and attempt.retry_after == 1.0
    assert "s is at its max_concurrency of 1" in str(attempt.error)
    assert "limits hold per process" in str(attempt.error)
