"""Per-target concurrency in one router process: ``max_concurrency`` and its FIFO queue.

A target with ``max_concurrency`` N lets N requests of this process in flight at once;
the next ones wait in arrival order, at most ``queue_max`` of them, each at most
``queue_timeout`` seconds. A full queue or a wait that times out is refused at once
(:class:`Refused`, 429 with ``Retry-After`` in the gateway), never left hanging. The
limit holds per process: the gateway is one, and so is each ``serve query``.

Every target's in-flight count is kept too (limited or not): ``least-busy`` reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from batuta.errors import Attempt, BackendError, FailureKind
from batuta.routing.table import TargetEntry

if TYPE_CHECKING:
    from batuta.router.run import Run

RETRY_AFTER = 1.0  # seconds a refused client is told to wait


class Refused(Exception):
    """No slot: the queue is full or the wait timed out."""


class Gate:
    """N slots and a FIFO queue of waiters for one target."""

    def __init__(self, limit: int, queue_max: int, queue_timeout: float) -> None:
        self.limit, self.queue_max, self.queue_timeout = limit, queue_max, queue_timeout
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        """Requests in the queue now."""
        return len(self._waiters)

    async def acquire(self) -> None:
        """Take a slot, waiting in line for one; Refused when the line is full or the wait
        runs out."""
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return
        if len(self._waiters) >= self.queue_max:
            raise Refused(f"{self.queue_max} requests already wait in its queue")
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        try:
            await asyncio.wait_for(asyncio.shield(turn), self.queue_timeout)
        except BaseException as exc:
            if turn.done() and not turn.cancelled():
                self.release()  # the slot came with the timeout or the cancellation: pass it on
            else:
                turn.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(turn)
            if isinstance(exc, asyncio.TimeoutError):
                raise Refused(
                    f"no slot within its queue timeout of {self.queue_timeout:g}s"
                ) from None
            raise

    def release(self) -> None:
        """Give the slot to the first in line, or free it."""
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(None)  # the slot changes hands: in_flight stays
                return
        self.in_flight -= 1


class Gates:
    """This router's gates, and every target's in-flight count."""

    def __init__(self) -> None:
        self._gates: dict[str, Gate] = {}
        self.busy: dict[str, int] = {}  # target -> requests of this process in flight
        self.queue_full = 0  # requests refused (read by the gateway's metrics)

    def gate(self, entry: TargetEntry) -> Gate | None:
        """The gate of ``entry`` (None when it has no max_concurrency)."""
        if entry.max_concurrency is None:
            return None
        gate = self._gates.get(entry.name)
        wanted = (entry.max_concurrency, entry.queue_max, entry.queue_timeout)
        if gate is None or (gate.limit, gate.queue_max, gate.queue_timeout) != wanted:
            if gate is not None and (gate.in_flight or gate.waiting):
                gate.limit, gate.queue_max, gate.queue_timeout = wanted  # a new table
            else:
                gate = self._gates[entry.name] = Gate(*wanted)
        return gate


async def visit_gated(
    gates: Gates,
    run: Run,
    entry: TargetEntry,
    clock: Callable[[], float],
    visit: Callable[[], Awaitable[BackendError | None]],
) -> BackendError | None:
    """``visit`` inside one of ``entry``'s slots; a refusal is one failed attempt (rate
    limited, not retried on this target) and the route goes on."""
    gate = gates.gate(entry)
    if gate is not None:
        started = clock()
        try:
            await gate.acquire()
        except Refused as why:
            gates.queue_full += 1
            error = BackendError(
                FailureKind.RATE_LIMIT,
                f"{entry.name} is at its max_concurrency of {gate.limit}: {why}"
                " (limits hold per process)",
                retry_after=RETRY_AFTER,
            )
            elapsed = (clock() - started) * 1000.0
            run.attempts.append(
                Attempt(entry.name, str(error), error.kind, elapsed, 0, RETRY_AFTER)
            )
            run.event(f"✗ {entry.name}: {error}")
            run.failed_over_from.append(entry.name)
            return error
        # The wait in line is the server being busy, not the answer being slow.
        run.deadline += clock() - started
    gates.busy[entry.name] = gates.busy.get(entry.name, 0) + 1
    try:
        return await visit()
    finally:
        gates.busy[entry.name] -= 1
        if gate is not None:
            gate.release()
