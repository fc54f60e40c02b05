"""The router and on-demand targets: woken before the call, once per process, inside the
lease; a target that cannot be started is a failed attempt and the route fails over.

The servers are loopback OpenAI fakes; ``wake`` stands for the runtime's (it is what the
gateway hands the router), recording what was asked of it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from batuta._util.lease import lease_path, take_exclusive
from batuta.backends.types import InferenceRequest
from batuta.errors import AllTargetsFailed, RuntimeStartError
from batuta.router.engine import Router
from batuta.router.ondemand import Waker
from batuta.routing.table import RouteEntry, TargetEntry
from tests.fakes.openai_server import OpenAIFake


@pytest.fixture(scope="module")
def fake() -> Iterator[OpenAIFake]:
    server = OpenAIFake().start()
    yield server
    server.stop()


class Wakes:
    """A stand-in for the runtime's wake: counts, takes ``delay``, may refuse."""

    def __init__(self, delay: float = 0.0, refuse: set[str] | None = None) -> None:
        self.delay, self.refuse = delay, refuse or set()
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, name: str, timeout: float | None) -> tuple[None, bool]:
        with self._lock:
            self.calls.append(name)
        time.sleep(self.delay)
        if name in self.refuse:
            raise RuntimeStartError(f"server {name!r} did not start: exit code 1")
        return None, True


def entry(name: str, fake: OpenAIFake, on_demand: bool = True) -> TargetEntry:
    return TargetEntry(
        name, "llamacpp", "openai", fake.url, "fake-model", True, on_demand=on_demand
    )


def route(*entries: TargetEntry, timeout: float = 10.0) -> RouteEntry:
    return RouteEntry("r", "interactive", "standard", "balanced", entries, timeout=timeout,
                      retries=0)  # fmt: skip


def ask() -> InferenceRequest:
    return InferenceRequest(prompt="hi", max_tokens=8)


def test_concurrent_requests_wake_once_and_leave_the_lease(
    fake: OpenAIFake, tmp_path: Path
) -> None:
    wakes = Wakes(delay=0.2)

    async def main() -> list[str]:
        async with Router(state_dir=tmp_path, wake=wakes) as router:
            answers = await asyncio.gather(*(router.query(route(entry("od", fake)), ask())
                                             for _ in range(5)))  # fmt: skip
            assert router.waker is not None
            assert router.waker.cold_starts == 1 and router.waker.in_flight("od") == 0
            return [a.target for a in answers]

    assert asyncio.run(main()) == ["od"] * 5
    assert wakes.calls == ["od"]
    assert take_exclusive(lease_path(tmp_path, "od")) is not None  # nothing holds it now


def test_after_an_unload_the_next_request_wakes_it_again(fake: OpenAIFake, tmp_path: Path) -> None:
    wakes = Wakes()

    async def main() -> None:
        async with Router(state_dir=tmp_path, wake=wakes) as router:
            await router.query(route(entry("od", fake)), ask())
            await router.query(route(entry("od", fake)), ask())
            assert wakes.calls == ["od"]  # warm: the second asked nothing
            with lease_path(tmp_path, "od").open("ab") as file:
                file.write(b".")  # what the supervisor does when it stops the server
            await router.query(route(entry("od", fake)), ask())

    asyncio.run(main())
    assert wakes.calls == ["od", "od"]


def test_a_server_that_cannot_start_fails_over(fake: OpenAIFake, tmp_path: Path) -> None:
    wakes = Wakes(refuse={"od"})
    chain = route(entry("od", fake), entry("always", fake, on_demand=False))

    async def main() -> object:
        async with Router(state_dir=tmp_path, wake=wakes) as router:
            return await router.query(chain, ask())

    answer = asyncio.run(main())
    assert answer.target == "always" and answer.failed_over_from == ["od"]  # type: ignore[attr-defined]
    assert wakes.calls == ["od"]


def test_the_cold_start_does_not_eat_the_route_deadline(fake: OpenAIFake, tmp_path: Path) -> None:
    wakes = Wakes(delay=0.6)

    async def main() -> str:
        async with Router(state_dir=tmp_path, wake=wakes) as router:
            return (await router.query(route(entry("od", fake), timeout=0.5), ask())).text

    assert asyncio.run(main())


def test_without_wake_on_demand_is_an_ordinary_target(fake: OpenAIFake, tmp_path: Path) -> None:
    async def main() -> str:
        async with Router(state_dir=tmp_path) as router:
            assert router.waker is None
            return (await router.query(route(entry("od", fake)), ask())).target

    assert asyncio.run(main()) == "od"


def test_a_request_waits_while_the_supervisor_stops_it(tmp_path: Path) -> None:
    # The supervisor holds the exclusive lease while it stops the server: the request asks
    # for a start (which in the runtime waits for the stop), and enters once it is over.
    path = lease_path(tmp_path, "od")
    held = take_exclusive(path)
    assert held is not None
    waker: Waker

    def wake(name: str, timeout: float | None) -> tuple[None, bool]:
        import os

        os.write(held, b".")
        os.close(held)  # the stop is over
        return None, True

    async def main() -> int:
        leave = await waker.hold("od")
        count = waker.in_flight("od")
        leave()
        return count

    waker = Waker(tmp_path, wake)
    try:
        assert asyncio.run(main()) == 1
        assert waker.cold_starts >= 1
    finally:
        waker.close()


def test_entries_round_trip_on_demand() -> None:
    from batuta.routing.table import RoutingTable

    table = RoutingTable("m", {"r": route(entry("od", OpenAIFake()))})
    again = RoutingTable.from_json(table.to_json())
    assert again.routes["r"].targets[0].on_demand is True
    raw = table.to_json()
    del raw["routes"]["r"]["targets"][0]["on_demand"]  # a table written before on-demand
    assert RoutingTable.from_json(raw).routes["r"].targets[0].on_demand is False
    assert dataclasses.replace(again.routes["r"].targets[0], on_demand=False).on_demand is False


def test_a_server_that_refuses_connections_is_woken_again(tmp_path: Path) -> None:
    # It crashed, or a restart is under way: the ready mark is dropped, so the next
    # request asks for a start instead of failing over forever.
    wakes = Wakes()
    dead = TargetEntry("od", "llamacpp", "openai", "http://127.0.0.1:9", "m", True,
                       on_demand=True)  # fmt: skip

    async def main() -> None:
        async with Router(state_dir=tmp_path, wake=wakes) as router:
            for _ in range(2):
                with pytest.raises(AllTargetsFailed):
                    await router.query(route(dead), ask())

    asyncio.run(main())
    assert wakes.calls == ["od", "od"]
