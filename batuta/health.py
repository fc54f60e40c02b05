"""Health of everything ``batuta serve health`` can see.

Servers batuta runs are asked through their own readiness URL. A local backend with no
batuta server (``--backend ollama`` with the user's own Ollama) is probed where it
usually listens. Remote APIs whose key is set get one cheap authenticated call through
their adapter; a missing key is reported by the variable's name, never its value.

This sits above both the runtime (batuta's servers) and the router (the endpoints of the
routing table, asked through their adapters), beside the benchmark.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from batuta._util.ollama_host import ollama_base_url
from batuta.catalogue import Backend, lookup, remote_backends
from batuta.errors import BatutaError, RoutingError, StateError
from batuta.router.targets import target_of
from batuta.routing.table import read_table, table_path
from batuta.runtime.health import probe
from batuta.runtime.manager import Runtime

if TYPE_CHECKING:
    import httpx

    from batuta.backends.types import Target

_LIVE = ("starting", "ready", "unhealthy")


@dataclass(frozen=True)
class HealthRow:
    """One thing checked. ``health``: ready | loading | down | no-key | unknown."""

    name: str
    backend: str
    kind: str  # server (batuta runs it) | external (a local server batuta did not start) | remote
    url: str
    health: str
    detail: str = ""
    latency_ms: float | None = None


def _timed_probe(url: str, timeout: float) -> tuple[str, float]:
    began = time.perf_counter()
    result = probe(url, timeout)
    return result, (time.perf_counter() - began) * 1000


def check_health(
    state_dir: Path, *, name: str | None = None, backend: str | None = None, timeout: float = 2.0
) -> list[HealthRow]:
    """Check batuta's servers (one by ``name``, or those of ``backend``), the endpoints the
    routing table names and, with no filter, every other remote backend whose key is set."""
    record = lookup(backend) if backend else None
    if backend and record is None:
        raise StateError(f"unknown backend {backend!r} (see `batuta serve backends`)")
    statuses = Runtime(state_dir).status()
    endpoints = _declared_endpoints(state_dir)
    if name is not None and name not in statuses and name not in endpoints:
        raise StateError(f"no server or endpoint named {name!r} (see `batuta serve list`)")
    rows: list[HealthRow] = []
    for status in statuses.values():
        spec = status.spec
        if (name and status.name != name) or (record and spec.backend != record.key):
            continue
        if status.state in _LIVE:
            health, ms = _timed_probe(spec.health_url, timeout)
            rows.append(
                HealthRow(status.name, spec.backend, "server", spec.health_url, health, "", ms)
            )
        else:
            detail = status.state + (f": {status.message}" if status.message else "")
            rows.append(
                HealthRow(status.name, spec.backend, "server", spec.health_url, "down", detail)
            )
    declared = [
        t
        for t in endpoints.values()
        if (name is None or t.name == name) and (record is None or t.backend == record.key)
    ]
    if name is not None and not declared:
        return rows
    if record is not None and record.local and not rows and not declared:
        rows.append(_external(record, timeout))
    covered = {t.backend for t in declared}
    targets = list(declared)
    if name is None:
        if record is not None and not record.local and record.key not in covered:
            targets.append(_catalogue_target(record))
        elif record is None:
            targets += [
                _catalogue_target(b)
                for b in remote_backends()
                if b.key_is_set() and _concrete(b.base_url) and b.key not in covered
            ]
    if targets:
        rows += asyncio.run(_remote_rows(targets, timeout))
    return rows


def _declared_endpoints(state_dir: Path) -> dict[str, Target]:
    """Remote targets of the routing table ``apply`` wrote (none when there is no table)."""
    path = table_path(state_dir)
    if not path.exists():
        return {}
    try:
        table = read_table(path)
    except RoutingError:
        return {}  # `batuta status` reports a broken table; health checks what it can
    found: dict[str, Target] = {}
    for route in table.routes.values():
        for entry in route.targets:
            if not entry.local:
                found.setdefault(entry.name, target_of(entry))
    return found


def _catalogue_target(record: Backend) -> Target:
    from batuta.backends.types import Target

    return Target(
        name=record.key,
        backend=record.key,
        protocol=record.protocol,
        base_url=record.base_url,
        model="",
        api_key_env=record.api_key_env,
    )


def _external(record: Backend, timeout: float) -> HealthRow:
    if record.key == "ollama":
        url = ollama_base_url() + (record.health_path or "/api/version")
    else:
        url = record.url() + (record.health_path or "/v1/models")
    health, ms = _timed_probe(url, timeout)
    return HealthRow(record.key, record.key, "external", url, health, "not started by batuta", ms)


def _concrete(url: str) -> bool:
    return bool(url) and "{" not in url


async def _remote_rows(targets: Sequence[Target], timeout: float) -> list[HealthRow]:
    import httpx

    from batuta._util.http import LoopbackDirectTransport

    # Loopback targets (an endpoint on 127.0.0.2) never go through an environment proxy.
    transport = LoopbackDirectTransport(httpx.Limits())
    async with httpx.AsyncClient(timeout=timeout, transport=transport, trust_env=False) as client:
        return list(await asyncio.gather(*(_remote_one(t, client, timeout) for t in targets)))


async def _remote_one(target: Target, client: httpx.AsyncClient, timeout: float) -> HealthRow:
    from batuta.backends.registry import adapter_for

    record = lookup(target.backend)

    def row(health: str, detail: str = "", ms: float | None = None) -> HealthRow:
        return HealthRow(target.name, target.backend, "remote", target.base_url, health, detail, ms)

    key_env = target.api_key_env
    if record is not None and record.key_required and key_env and not os.environ.get(key_env):
        return row("no-key", f"{key_env} is not set")
    if not _concrete(target.base_url):
        return row("unknown", "needs its base URL: declare it under endpoints:")
    began = time.perf_counter()
    try:
        adapter = adapter_for(target, client)
        ok = await asyncio.wait_for(adapter.health(), timeout)
    except BatutaError as exc:
        return row("down", str(exc).splitlines()[0][:200])
    except asyncio.TimeoutError:
        return row("down", f"no answer within {timeout:g}s")
    ms = (time.perf_counter() - began) * 1000
    return row("ready" if ok else "down", "" if ok else "health check failed", ms)
