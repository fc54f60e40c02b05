"""Embeddings through a route: the first target that embeds and answers, with failover.

Like a chat (:mod:`batuta.router.engine`), in route order: targets that do not embed
(:func:`batuta.router.capable.embeds`) are skipped, as are those whose circuit is open or
once the route's deadline has passed; a failure is retried or passed to the next target as
:func:`batuta.router.failover.decide` says (there is no partial output to continue).
Breakers are kept as for chats; route budgets do not hold embeddings (they are not priced).
A bare target (``managed=False``) is used without its breaker.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from batuta.backends.embeddings import EmbeddingRequest, Embeddings, embed
from batuta.errors import AllTargetsFailed, Attempt, BackendError, FailureKind, StateError
from batuta.router.capable import embeds
from batuta.router.failover import Action, decide
from batuta.router.targets import check_privacy, target_of
from batuta.routing.table import RouteEntry

if TYPE_CHECKING:
    from batuta.backends.types import Target
    from batuta.router.engine import Router


@dataclass(frozen=True)
class Embedded:
    """The vectors, and which target gave them after how many attempts."""

    embeddings: Embeddings
    target: str
    attempts: int
    fallbacks: int
    latency_ms: float


def route_embeds(route: RouteEntry) -> bool:
    """Whether some target of ``route`` embeds."""
    return any(embeds(target_of(entry)) for entry in route.targets)


async def embed_route(
    router: Router, route: RouteEntry, request: EmbeddingRequest, *, managed: bool = True
) -> Embedded:
    """Embed through ``route`` (see the module docstring); AllTargetsFailed with every
    attempt when no target answers."""
    if managed:
        check_privacy(route)
    clock = router._clock
    started = clock()
    deadline = started + route.timeout
    attempts: list[Attempt] = []
    tries = 0

    def book(record: Callable[[Target], object], target: Target) -> None:
        if managed:
            with contextlib.suppress(StateError):  # bookkeeping must not lose an answer
                record(target)

    for index, entry in enumerate(route.targets):
        target = target_of(entry)
        skip = None
        if not embeds(target):
            skip = f"{target.backend} does not embed here"
        elif clock() >= deadline:
            skip = f"the route's {route.timeout:g} s deadline has passed"
        elif managed and not _allowed(router, target):
            skip = "circuit open"
        if skip is not None:
            attempts.append(Attempt(target.name, skip))
            continue
        retries = 0
        while True:
            tries += 1
            at = clock()
            remaining = max(0.0, deadline - at)
            try:
                vectors = await embed(
                    target, router.client, request,
                    first_byte_timeout=min(route.first_byte_timeout or route.timeout, remaining),
                    deadline=time.monotonic() + remaining,
                )  # fmt: skip
            except BackendError as error:
                ms = (clock() - at) * 1000.0
                attempts.append(
                    Attempt(target.name, str(error), error.kind, ms, 0, error.retry_after)
                )
                if error.kind is not FailureKind.CLIENT:
                    book(router.breakers.record_failure, target)
                decision = decide(
                    error, retries_done=retries, max_retries=route.retries, output_shown=False,
                    now=clock(), deadline=deadline, rnd=router._random(), backoff=router._backoff,
                )  # fmt: skip
                if decision.action is Action.RETRY:
                    retries += 1
                    await router._sleep(decision.wait)
                    continue
                break
            book(router.breakers.record_success, target)
            latency = (clock() - started) * 1000.0
            return Embedded(vectors, target.name, tries, index, latency)
    raise AllTargetsFailed(route.name, attempts, what="route" if managed else "endpoint")


def _allowed(router: Router, target: Target) -> bool:
    try:
        return router.breakers.allow(target)
    except StateError:
        return True
