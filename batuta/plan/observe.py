"""Observe what runs: the runtime's records and live processes, each server's health, and
the routing table on disk.

Health probes run concurrently with a short timeout, so observing fifty servers costs
about one probe. The fingerprint condenses what a saved plan depends on (which servers
run, under which pid and config) so ``apply PLAN`` can refuse when the state moved.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from batuta.errors import RoutingError
from batuta.plan.diff import LIVE_STATES
from batuta.routing.table import RoutingTable, read_table, table_path
from batuta.runtime.spec import ServerStatus

if TYPE_CHECKING:
    from batuta.runtime import Runtime

Prober = Callable[[str, float], str]

PROBE_TIMEOUT = 0.5


@dataclass(frozen=True)
class Observation:
    """The observed state a plan is computed from."""

    statuses: dict[str, ServerStatus]
    health: dict[str, str]  # server name -> ready / loading / down (live servers only)
    table: RoutingTable | None
    fingerprint: str
    table_error: str = ""  # why the table on disk could not be read, if it could not


def quick_probe(url: str, timeout: float = PROBE_TIMEOUT) -> str:
    """One readiness GET with the standard library: ready / loading / down.

    Same verdicts as :func:`batuta.runtime.health.probe`, but a plan probes every server
    on every run, and ``http.client`` costs nothing to import (httpx costs more than the
    fifty probes themselves) and gives each thread its own connection.
    """
    import http.client
    from urllib.parse import urlsplit

    from batuta.runtime.health import classify

    parts = urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    try:
        conn = kind(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    except ValueError:  # a malformed port
        return "down"
    try:
        path = parts.path or "/"
        conn.request("GET", f"{path}?{parts.query}" if parts.query else path)
        return classify(conn.getresponse().status)
    except (OSError, http.client.HTTPException):
        return "down"
    finally:
        conn.close()


def probe_all(
    statuses: Mapping[str, ServerStatus],
    *,
    timeout: float = PROBE_TIMEOUT,
    prober: Prober | None = None,
) -> dict[str, str]:
    """Probe every live server's readiness URL at once; dead servers are not probed."""
    prober = prober or quick_probe
    live = sorted(n for n, s in statuses.items() if s.state in LIVE_STATES)
    if not live:
        return {}
    import http.client  # noqa: F401  (once here, not racing for the import lock in threads)

    with ThreadPoolExecutor(max_workers=min(32, len(live))) as pool:
        results = pool.map(lambda n: prober(statuses[n].spec.health_url, timeout), live)
        return dict(zip(live, results, strict=True))


def fingerprint(statuses: Mapping[str, ServerStatus], table_bytes: bytes | None) -> str:
    """A digest of the state a plan depends on: who runs, with which pid and config."""
    rows = [
        [
            name,
            s.spec.config_hash,
            s.spec.origin,
            s.spec.manifest,
            s.pid,
            s.create_time,
            s.state in LIVE_STATES,
            s.state == "crashloop",
        ]
        for name, s in sorted(statuses.items())
    ]
    blob = json.dumps(rows, sort_keys=True).encode()
    table = hashlib.sha256(table_bytes).hexdigest() if table_bytes is not None else None
    return hashlib.sha256(blob + b"\0" + str(table).encode()).hexdigest()[:24]


def read_current_table(state_dir: Path) -> tuple[RoutingTable | None, bytes | None, str]:
    """The routing table on disk, its raw bytes, and an error text if it was unreadable."""
    path = table_path(state_dir)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None, None, ""
    try:
        return read_table(path), raw, ""
    except RoutingError as exc:
        return None, raw, str(exc)


def observe(
    state_dir: Path,
    *,
    runtime: Runtime | None = None,
    probe_health: bool = True,
    probe_timeout: float = PROBE_TIMEOUT,
    prober: Prober | None = None,
) -> Observation:
    """Read the runtime's status, probe live servers and read the routing table."""
    if runtime is None:
        from batuta.runtime import Runtime

        runtime = Runtime(state_dir)
    statuses = dict(runtime.status())
    health = probe_all(statuses, timeout=probe_timeout, prober=prober) if probe_health else {}
    table, raw, error = read_current_table(state_dir)
    return Observation(
        statuses=statuses,
        health=health,
        table=table,
        fingerprint=fingerprint(statuses, raw),
        table_error=error,
    )
