"""Apply's part for the gateway: stop it, or start it once the routing table is written.

The gateway serves the table file, so it starts (or is replaced) only after ``apply`` has
written it; it is ready when its ``/health`` answers, as the supervisor probes it. A
change of routes alone never reaches this module: the running gateway reads the new table
itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from batuta.errors import BatutaError, RuntimeStartError
from batuta.plan.diff import LIVE_STATES, ServerChange
from batuta.runtime.gateway import GATEWAY, SHOWN, listen_url
from batuta.runtime.spec import ServerSpec

if TYPE_CHECKING:
    from batuta.runtime import Runtime

Echo = Callable[[str], None]


def stop_gateway(runtime: Runtime, change: ServerChange, echo: Echo) -> None:
    """Stop the gateway (SIGTERM: it lets the answers in flight finish first)."""
    pid = f" [pid {change.pid}]" if change.pid and change.state in LIVE_STATES else ""
    echo(f"{SHOWN}: Destroying...{pid}")
    started = time.monotonic()
    runtime.stop(GATEWAY)
    echo(f"{SHOWN}: Destruction complete after {time.monotonic() - started:.1f}s")


def start_gateway(
    runtime: Runtime, change: ServerChange, spec: ServerSpec, echo: Echo
) -> RuntimeStartError | None:
    """Start or replace the gateway and wait for its ``/health``; the error if it failed."""
    verb = "Creating" if change.action == "create" else "Replacing"
    url = listen_url(spec.host, spec.port)
    detail = ", ".join(str(c) for c in change.changes) or f"listen on {url}"
    echo(f"{SHOWN}: {verb}... [{detail}]")
    started = time.monotonic()
    try:
        status = runtime.start(spec, wait=True, timeout=spec.ready_timeout)
    except BatutaError as exc:
        # The runtime names the record ('_gateway'); every line this text reaches starts
        # with "gateway:" already.
        tail = exc.log_tail if isinstance(exc, RuntimeStartError) else ""
        text = str(exc).split("\n--- last log lines ---")[0]
        text = text.replace(f"server {GATEWAY!r} ({spec.backend}) ", "")
        echo(f"{SHOWN}: failed: {text.splitlines()[0]}")
        return RuntimeStartError(text, tail)
    noun = "Creation" if verb == "Creating" else "Replacement"
    echo(
        f"{SHOWN}: {noun} complete after {time.monotonic() - started:.1f}s "
        f"[pid {status.pid}, {url}]"
    )
    return None
