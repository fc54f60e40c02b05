"""On-demand targets: wake the server before the call, and hold its lease during it.

A request for an on-demand server enters the server's activity lease
(:mod:`batuta._util.lease`) for as long as it is in flight, which is what keeps the
supervisor from stopping it. The first request of this process, and the first after the
server was stopped (the lease's unload count moved on), asks for a start through
``wake`` (the runtime's :func:`batuta.runtime.ondemand.wake`, handed in by the gateway
and ``serve query``, which sit above both) and waits for it; concurrent requests of this
process wait for that one start. Per request that costs a flock when the process's count
goes 0 → 1 and an ``fstat``; nothing is written and nobody is messaged.

The time a cold start takes is added to the route's deadline: the request waits for the
server as it would for a slow first token, and the answer still gets its full timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batuta._util.lease import Lease, lease_path
from batuta.errors import Attempt, BackendError, BatutaError, FailureKind, MemoryBudgetError
from batuta.routing.table import TargetEntry

if TYPE_CHECKING:
    from batuta.router.run import Run

Wake = Callable[[str, float | None], Any]  # (server, timeout) -> anything; blocking
_RETRY_ENTER = 0.01  # while the supervisor stops the server, before asking again


class Waker:
    """This process's view of its on-demand servers: leases, and which it saw ready."""

    def __init__(self, state_dir: Path, wake: Wake) -> None:
        self.state_dir = Path(state_dir)
        self._wake = wake
        self._leases: dict[str, Lease] = {}
        self._ready: dict[str, int] = {}  # server -> the lease's unload count when seen ready
        self._locks: dict[str, asyncio.Lock] = {}
        self.cold_starts = 0  # starts this process asked for (read by the gateway's metrics)

    def in_flight(self, name: str) -> int:
        """Requests of this process in flight on ``name``."""
        lease = self._leases.get(name)
        return lease.count if lease is not None else 0

    def _lease(self, name: str) -> Lease:
        lease = self._leases.get(name)
        if lease is None:
            lease = self._leases[name] = Lease(lease_path(self.state_dir, name))
        return lease

    async def hold(self, name: str, timeout: float | None = None) -> Callable[[], None]:
        """Enter ``name``'s lease with the server ready; returns the function that leaves.
        Raises BatutaError (from the runtime) when it cannot be started."""
        lease = self._lease(name)
        while True:
            if lease.enter():
                if self._ready.get(name) == lease.unloads():
                    return lease.leave
                try:
                    await self._start(name, lease, timeout)
                except BaseException:
                    lease.leave()
                    raise
                return lease.leave
            # The supervisor is stopping it (idle): ask for a start, which waits for the
            # stop to end; then enter again.
            await self._start(name, lease, timeout)
            await asyncio.sleep(_RETRY_ENTER)

    async def _start(self, name: str, lease: Lease, timeout: float | None) -> None:
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            if self._ready.get(name) == lease.unloads():
                return  # another request of ours woke it while we waited
            _, cold = await asyncio.to_thread(self._wake, name, timeout)
            self.cold_starts += bool(cold)
            self._ready[name] = lease.unloads()

    def stale(self, name: str) -> None:
        """Forget that ``name`` was seen ready: the next request asks for a start (which
        is only a wait when it runs after all)."""
        self._ready.pop(name, None)

    def close(self) -> None:
        """Let go of every lease."""
        for lease in self._leases.values():
            lease.close()
        self._leases.clear()


async def visit_held(
    waker: Waker | None,
    run: Run,
    entry: TargetEntry,
    clock: Callable[[], float],
    visit: Callable[[], Awaitable[BackendError | None]],
) -> BackendError | None:
    """``visit`` (one target's call, with retries) inside the server's lease when the
    target is an on-demand server; a server that cannot be started is one failed attempt."""
    if waker is None or not entry.on_demand:
        return await visit()
    started = clock()
    try:
        leave = await waker.hold(entry.name)
    except BatutaError as exc:
        # Over budget is the machine being busy (503, try later); anything else is a server
        # that does not come up, like one that refuses connections.
        kind = FailureKind.OVERLOADED if isinstance(exc, MemoryBudgetError) else FailureKind.CONNECT
        refused = BackendError(kind, f"{entry.name} could not be started: {exc}")
        elapsed = (clock() - started) * 1000.0
        run.attempts.append(Attempt(entry.name, str(refused), refused.kind, elapsed))
        run.event(f"✗ {entry.name}: {refused}")
        run.failed_over_from.append(entry.name)
        return refused
    run.deadline += clock() - started
    try:
        error = await visit()
    finally:
        leave()
    if error is not None and error.kind is FailureKind.CONNECT:
        waker.stale(entry.name)  # it died (crashed, was stopped): the next request wakes it
    return error
