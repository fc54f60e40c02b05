"""On-demand servers from the command's side: record one idle, wake it, unload it.

``apply`` records an on-demand server (``desired: idle``, state ``idle``) without starting
it. :func:`wake` is what a request does when its target is such a server: under the state
lock it asks for a start (a new generation, ``desired: running``) unless one is already
asked for, so concurrent requests, in one process or several, start it once; then it waits
until the supervisor reports it ready. :func:`unload` asks the supervisor to stop it now
and keep it on record, idle. The supervisor stops an unused one by itself (``idle.py``).
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from batuta._util import lease
from batuta.errors import MemoryBudgetError, RuntimeStartError, StateError
from batuta.runtime import daemon, logs
from batuta.runtime.manager import Runtime, _alive, _env_values, _refuse_manifest_name
from batuta.runtime.memory import Resident, plan_budget
from batuta.runtime.spec import ServerSpec, ServerStatus
from batuta.runtime.state import ServerRecord, State, locked_state, read_state, write_state
from batuta.runtime.supervise import describe_exit

_POLL = 0.01  # how often a waking request reads state.json: part of every cold start
_WAKING = ("starting", "ready", "unhealthy")
_ENDED = ("exited", "crashloop", "failed", "stopped")
_RESIDENT = ("starting", "ready", "unhealthy", "stopping")  # states that hold memory


def record_idle(runtime: Runtime, spec: ServerSpec) -> ServerStatus:
    """Record on-demand ``spec`` as idle without starting it (stopping a same-named server
    that runs another config). Its ``${env:}`` values go to the supervisor now, as for a
    start, since the request that wakes it may come from a process that does not have them."""
    values = _env_values(spec)
    token = secrets.token_hex(16) if values is not None else ""
    with locked_state(runtime.state_dir) as state:
        current = state.servers.get(spec.name)
        _refuse_manifest_name(spec.name, spec.origin, current)
        record = ServerRecord(
            spec=spec,
            desired="idle",
            state="idle",
            generation=(current.generation if current else 0) + 1,
            handoff=token,
        )
        running = current is not None and _alive(current)
        if running:
            assert current is not None
            # Keep the old pid on record until the supervisor has stopped it.
            record = replace(
                record,
                state="stopping",
                pid=current.pid,
                create_time=current.create_time,
                pid_generation=current.pid_generation,
            )
        state.servers[spec.name] = record
        write_state(runtime.state_dir, state)
        # The supervisor keeps watch over it from now on: a wake is then only a signal.
        daemon.nudge(runtime.state_dir)
    if token and values is not None:
        runtime._hand_over(spec, token, values)
    return record.status()


def wake(state_dir: Path, name: str, timeout: float | None = None) -> tuple[ServerStatus, bool]:
    """Make on-demand server ``name`` ready, starting it unless a start is under way or it
    runs; returns its status and whether this call asked for the start (a cold start).
    Raises RuntimeStartError when it does not come up within ``timeout`` (default: its
    ``ready_timeout``), StateError when it is not on record."""
    while True:
        with locked_state(state_dir) as state:
            rec = state.servers.get(name)
            if rec is None:
                raise StateError(
                    f"server {name!r} is not on record in {state_dir}: run `batuta apply`"
                )
            cold = not (rec.desired == "running" and rec.state in _WAKING)
            evicting = _make_room(state_dir, state, rec) if cold else None
            if evicting is None:
                if cold:
                    rec = replace(
                        rec, desired="running", generation=rec.generation + 1,
                        state="starting", message="",
                    )  # fmt: skip
                    state.servers[name] = rec
                    write_state(state_dir, state)
                    daemon.nudge(state_dir)
                break
        # Room is being made: start only once the evicted servers have let go of it.
        evicting.wait(name, timeout or rec.spec.ready_timeout)
    if cold:
        counts.cold_starts += 1
        logs.note(logs.log_path(state_dir, name), "a request asks for it: starting (on-demand)")
    return _await_ready(state_dir, rec, timeout or rec.spec.ready_timeout), cold


@dataclass
class Counts:
    """What this process did to on-demand servers (read by the gateway's metrics)."""

    cold_starts: int = 0  # starts asked for by a request or `serve load`
    evictions: int = 0  # servers stopped to make room within the memory budget
    over_budget: int = 0  # starts refused: the budget was in use by what cannot stop


counts = Counts()


def stats(state_dir: Path) -> dict[str, int]:
    """The on-demand counts a metrics endpoint shows: this process's cold starts,
    evictions and over-budget refusals, and the stops of every on-demand server of
    ``state_dir`` (idle, unload, eviction, by any process: the leases count them)."""
    folder = Path(state_dir) / lease.LEASE_DIR
    try:
        stops = sum(p.stat().st_size for p in folder.glob("*.lease"))
    except OSError:
        stops = 0
    return {
        "cold_starts": counts.cold_starts,
        "evictions": counts.evictions,
        "over_budget": counts.over_budget,
        "stops": stops,
    }


class _Evicting:
    """Servers being stopped to make room; their leases are held (no request enters them)
    until they are idle."""

    def __init__(self, state_dir: Path, victims: dict[str, tuple[int, int]]) -> None:
        self.state_dir, self.victims = state_dir, victims  # name -> (generation, lease fd)

    def wait(self, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                servers = read_state(self.state_dir).servers
                if all(
                    (r := servers.get(v)) is None or r.generation != gen or r.state == "idle"
                    for v, (gen, _) in self.victims.items()
                ):
                    return
                time.sleep(_POLL)
            listed = ", ".join(self.victims)
            raise RuntimeStartError(f"server {name!r} not started: {listed} did not stop in time")
        finally:
            for _, fd in self.victims.values():
                lease.release(fd)


def _make_room(state_dir: Path, state: State, rec: ServerRecord) -> _Evicting | None:
    """Ask the supervisor to stop what must go for ``rec`` to fit the memory budget (None:
    it fits already). MemoryBudgetError when it cannot fit."""
    budget, needs = rec.spec.memory_budget, rec.spec.memory
    if budget is None or needs is None:
        return None
    residents: list[Resident] = []
    holds: dict[str, int] = {}
    try:
        for other in state.servers.values():
            if other.name == rec.name or not (
                other.state in _RESIDENT or (other.desired == "running" and other.state != "idle")
            ):
                continue
            fd = None
            if other.spec.start == "on-demand" and other.state == "ready":
                fd = lease.take_exclusive(lease.lease_path(state_dir, other.name))
            if fd is not None:
                holds[other.name] = fd
            used = lease.last_used(lease.lease_path(state_dir, other.name))
            residents.append(Resident(other.name, other.spec.memory or 0, fd is not None, used))
        try:
            victims = plan_budget(rec.name, needs, budget, residents)
        except MemoryBudgetError:
            counts.over_budget += 1
            raise
    except BaseException:
        for fd in holds.values():
            lease.release(fd)
        raise
    for held, fd in list(holds.items()):
        if held not in victims:
            lease.release(fd)
            del holds[held]
    if not victims:
        return None
    evicting: dict[str, tuple[int, int]] = {}
    for victim in victims:
        old = state.servers[victim]
        why = f"stopped to make room for {rec.name!r} within the memory budget"
        state.servers[victim] = replace(
            old, desired="idle", generation=old.generation + 1, message=why
        )
        evicting[victim] = (old.generation + 1, holds[victim])
        counts.evictions += 1
        logs.note(
            logs.log_path(state_dir, victim),
            f"stopping to make room for {rec.name!r} within the memory budget (least recently"
            " used)",
        )
    write_state(state_dir, state)
    daemon.nudge(state_dir)
    return _Evicting(state_dir, evicting)


def _await_ready(state_dir: Path, asked: ServerRecord, timeout: float) -> ServerStatus:
    name, generation = asked.name, asked.generation
    deadline = time.monotonic() + timeout
    next_check = time.monotonic() + 1.0
    while True:
        rec = read_state(state_dir).servers.get(name)
        if rec is None or rec.generation != generation:
            if rec is not None and rec.desired == "running" and rec.generation > generation:
                generation = rec.generation  # another request re-asked (it had stopped)
                continue
            raise RuntimeStartError(f"server {name!r} was unloaded or removed while it started")
        if rec.state == "ready" and rec.pid_generation == generation:
            return rec.status()
        if rec.state == "failed" or rec.state in _ENDED or rec.restarts > asked.restarts:
            why = rec.message or f"exited while starting ({describe_exit(rec.last_exit)})"
            raise RuntimeStartError(
                f"server {name!r} did not start: {why}; log: {logs.log_path(state_dir, name)}",
                logs.tail(logs.log_path(state_dir, name)),
            )
        if time.monotonic() >= deadline:
            raise RuntimeStartError(f"server {name!r} not ready after {timeout:g}s")
        if time.monotonic() >= next_check:
            next_check = time.monotonic() + 1.0
            with locked_state(state_dir):
                if not daemon.supervisor_alive(state_dir):
                    daemon.nudge(state_dir)  # it died: its successor picks the request up
        time.sleep(_POLL)


def waker(state_dir: Path) -> Callable[[str, float | None], tuple[ServerStatus, bool]]:
    """:func:`wake` for the servers of ``state_dir``: what a Router takes as ``wake``."""
    return functools.partial(wake, Path(state_dir))


def unload(state_dir: Path, name: str, timeout: float = 10.0) -> bool:
    """Stop on-demand server ``name`` now and keep it on record, idle (the next request
    starts it again). False when it was idle already. Requests in flight on it fail over."""
    with locked_state(state_dir) as state:
        rec = state.servers.get(name)
        if rec is None:
            raise StateError(f"server {name!r} is not on record in {state_dir}")
        if rec.spec.start != "on-demand":
            raise StateError(
                f"server {name!r} is not on-demand: stop it with `batuta serve stop {name}`"
                " or `batuta down`"
            )
        if rec.desired == "idle" and rec.state == "idle":
            return False
        rec = replace(
            rec,
            desired="idle",
            generation=rec.generation + 1,
            stop_timeout=timeout,
            message="unloaded by `batuta serve unload`",
        )
        state.servers[name] = rec
        write_state(state_dir, state)
        daemon.nudge(state_dir)
    deadline = time.monotonic() + timeout + 5.0
    while time.monotonic() < deadline:
        now = read_state(state_dir).servers.get(name)
        if now is None or now.generation != rec.generation or now.state == "idle":
            return True
        time.sleep(_POLL)
    raise RuntimeStartError(f"server {name!r} did not stop within {timeout:g}s")
