"""Embeddings through a route (batuta.router.embed) against strict OpenAI fakes: retries,
failover, breakers, deadlines, privacy, bare targets and malformed answers."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import pytest

from batuta.backends.embeddings import EmbeddingRequest
from batuta.errors import AllTargetsFailed, FailureKind, RoutingError
from batuta.router.embed import Embedded, embed_route, route_embeds
from batuta.router.engine import Router
from batuta.router.targets import target_of
from batuta.routing.table import RouteEntry, TargetEntry
from tests.fakes.openai_extras import vector
from tests.fakes.openai_server import OpenAIFake


class Sleeps:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def fakes() -> Iterator[tuple[OpenAIFake, OpenAIFake]]:
    with OpenAIFake() as a, OpenAIFake() as b:
        yield a, b


def server(name: str, fake: OpenAIFake, **options: object) -> TargetEntry:
    return TargetEntry(name, "llamacpp", "openai", fake.url, "smol", True,
                       options={"embeddings": True, **options})  # fmt: skip


def route_of(*entries: TargetEntry, **kw: object) -> RouteEntry:
    kw.setdefault("timeout", 10.0)
    kw.setdefault("retries", 1)
    privacy = str(kw.pop("privacy", "standard"))
    return RouteEntry("r", "interactive", privacy, "balanced", tuple(entries), **kw)  # type: ignore[arg-type]


def run(router: Router, route: RouteEntry, text: str = "hi", **kw: bool) -> Embedded:
    async def main() -> Embedded:
        async with router:
            return await embed_route(router, route, EmbeddingRequest(text), **kw)

    return asyncio.run(main())


def test_a_429_is_retried_after_its_retry_after(fakes) -> None:
    a, _ = fakes
    a.fail_next(429, retry_after="2")
    sleeps = Sleeps()
    done = run(Router(sleep=sleeps), route_of(server("a", a)))
    assert done.embeddings.vectors == [pytest.approx(vector("hi", 8))]
    assert (done.target, done.attempts, done.fallbacks) == ("a", 2, 0)
    assert sleeps.waits == [2.0]


def test_failover_skips_open_circuits_and_targets_that_do_not_embed(fakes) -> None:
    a, b = fakes
    plain = TargetEntry("plain", "llamacpp", "openai", a.url, "smol", True)  # no embeddings
    router = Router(sleep=Sleeps())
    for _ in range(5):
        router.breakers.record_failure(target_of(server("a", a)))
    route = route_of(plain, server("a", a), server("b", b))
    assert route_embeds(route) and not route_embeds(route_of(plain))
    done = run(router, route)
    assert (done.target, done.fallbacks) == ("b", 2) and a.requests == []
    bare = run(Router(), route_of(server("a", a)), managed=False)  # its breaker not consulted
    assert bare.target == "a"


def test_every_failure_is_reported(fakes) -> None:
    a, b = fakes
    a.fail_next(400)
    b.malformed_next()
    with pytest.raises(AllTargetsFailed) as caught:
        run(Router(sleep=Sleeps()), route_of(server("a", a), server("b", b), retries=0))
    kinds = [attempt.kind for attempt in caught.value.attempts]
    assert kinds == [FailureKind.CLIENT, FailureKind.MALFORMED]


def test_a_passed_deadline_and_a_broken_privacy_tier(fakes) -> None:
    a, _ = fakes
    ticks = itertools.chain([0.0], itertools.repeat(100.0))  # started, then long after
    with pytest.raises(AllTargetsFailed, match="deadline"):
        run(Router(clock=lambda: next(ticks)), route_of(server("a", a), server("b", a)))
    remote = TargetEntry("cloud", "openai", "openai", a.url, "m", False)
    with pytest.raises(RoutingError):
        run(Router(), route_of(remote, privacy="sovereign"))
    assert a.requests == []


def test_unwritable_breakers_do_not_lose_the_vectors(fakes, tmp_path) -> None:
    a, b = fakes
    (tmp_path / "breakers.json").mkdir()  # every write of the breakers file fails
    a.fail_next(500)
    done = run(
        Router(state_dir=tmp_path, sleep=Sleeps()),
        route_of(server("a", a), server("b", b), retries=0),
    )
    assert done.target == "b" and done.embeddings.vectors == [pytest.approx(vector("hi", 8))]
