"""The gateway's status page: ``GET /`` serves ``static/status.html`` (one file, its CSS and
JavaScript inline, no external asset, so it works offline), which polls
``GET /status.json`` every two seconds and redraws itself.

The snapshot: local servers as the runtime's ``state.json`` records them (state, pid,
restarts, resident memory of a pid whose create time still matches), every route with its
targets' breaker states and calls in flight, the last requests with their target and
timings, today's spend per key and the output tokens per second over the last minute.
Everything is read when the page asks, never on the request path.
"""

from __future__ import annotations

import time
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batuta.gateway.metrics import CONTENT_TYPE, breaker_states, server_records

if TYPE_CHECKING:
    from batuta.gateway.observe import Observer
    from batuta.router.engine import Router
    from batuta.routing.table import RoutingTable

SHOWN = 20  # recent requests on the page
HTML = [(b"content-type", b"text/html; charset=utf-8"), (b"cache-control", b"no-cache")]


@cache
def page() -> bytes:
    """The page itself (package data)."""
    return resources.files("batuta.gateway").joinpath("static/status.html").read_bytes()


def _memory(pid: int | None, create_time: float | None) -> int | None:
    """Resident bytes of ``pid`` when it is still the process that was started."""
    if pid is None:
        return None
    import psutil

    try:
        proc = psutil.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 1.0:
            return None  # the pid was reused by another process
        return int(proc.memory_info().rss)
    except (psutil.Error, OSError):
        return None


def snapshot(
    *,
    table: RoutingTable | None,
    router: Router | None,
    observer: Observer | None,
    state_dir: Path | None,
) -> dict[str, Any]:
    """What the page shows, as JSON-ready data."""
    servers = [
        {
            "name": rec.name, "state": rec.state, "pid": rec.pid, "restarts": rec.restarts,
            "memory_bytes": _memory(rec.pid, rec.create_time) if rec.state != "stopped" else None,
        }
        for rec in server_records(state_dir)
    ]  # fmt: skip
    states = breaker_states(router, table) if router is not None else {}
    inflight = dict(router.inflight) if router is not None else {}
    routes = []
    for name, route in table.routes.items() if table is not None else ():
        targets = [
            {"name": e.name, "backend": e.backend, "local": e.local,
             "breaker": states.get(e.name, "closed"), "inflight": inflight.get(e.name, 0)}
            for e in route.targets
        ]  # fmt: skip
        routes.append({"name": name, "aliases": list(route.aliases), "targets": targets})
    recent = list(observer.recent)[-SHOWN:][::-1] if observer is not None else []
    return {
        "time": time.time(),
        "servers": servers,
        "routes": routes,
        "inflight": sum(inflight.values()),
        "recent": recent,
        "spend_today": observer.spend_today() if observer is not None else {},
        "tokens_per_second": observer.tokens_per_second() if observer is not None else 0.0,
    }


def response(
    path: str,
    *,
    table: RoutingTable | None,
    router: Router | None,
    observer: Observer | None,
    state_dir: Path | None,
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers and body for ``GET /``, ``/status.json`` or ``/metrics``."""
    from batuta.gateway.errors import GatewayError

    if path == "/":
        return HTML, page()
    if path == "/status.json":
        from batuta._util import fastjson

        data = snapshot(table=table, router=router, observer=observer, state_dir=state_dir)
        return [(b"content-type", b"application/json"), (b"cache-control", b"no-store")], (
            fastjson.dumps(data)
        )
    metrics = observer.metrics if observer is not None else None
    if metrics is None:
        raise GatewayError(404, "metrics are off (gateway.metrics: false)", code="unknown_url")
    return [(b"content-type", CONTENT_TYPE)], metrics.render()
