"""Running the gateway: uvicorn (uvloop + httptools) in the foreground, drained on a signal.

SIGTERM or SIGINT stops accepting connections and lets the answers in flight finish, for
at most ``drain_timeout`` seconds, then the process returns normally (exit status 0).
"""

from __future__ import annotations

import math
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from batuta.errors import BatutaError, ManifestError
from batuta.gateway.app import KEEPALIVE_SECONDS, Gateway
from batuta.gateway.observe import ObserveSettings

if TYPE_CHECKING:
    import uvicorn

    from batuta.manifest.model import Gateway as ManifestGateway

DRAIN_SECONDS = 30.0
DEFAULT_LISTEN = "127.0.0.1:8080"  # as the manifest's gateway.listen defaults


class GatewaySetupError(BatutaError):
    """The gateway cannot start: no routing table, or an address it may not listen on."""


def listen_address(
    value: str, where: str = "--listen", *, any_address: bool = False
) -> tuple[str, int]:
    """``HOST:PORT`` on this machine (any address with ``any_address``: in a cluster pod,
    where the Service and its NetworkPolicy decide who connects); a GatewaySetupError
    saying why not."""
    from batuta._util.net import is_localhost_name, is_loopback
    from batuta.manifest.model import parse_listen

    try:
        host, port = parse_listen(value)
    except ValueError as exc:
        raise GatewaySetupError(f"{where}: {exc}") from None
    if not any_address and not (is_localhost_name(host) or is_loopback(host)):
        raise GatewaySetupError(f"{where}: {host!r} is not this machine; {LOOPBACK_ONLY}")
    return host, port


LOOPBACK_ONLY = (
    "the gateway takes no API keys yet, so it listens on a loopback address only"
    " (127.0.0.1, ::1 or localhost)"
)


def _manifest_gateway(manifest: str | None) -> ManifestGateway | None:
    """The manifest's ``gateway`` section, when it exists (None: the defaults apply)."""
    from batuta._util.paths import manifest_path
    from batuta.manifest import load_manifest

    file, _ = manifest_path(manifest)
    if not file.exists():
        return None
    return load_manifest(manifest).manifest.gateway


def recorded_observe_settings(state_dir: Path) -> ObserveSettings:
    """What the gateway ``apply`` runs records: the ``gateway`` section of the manifest that
    ``state.json`` says declared it, read as the gateway starts; the defaults when that
    manifest is gone or does not load (the gateway must start all the same)."""
    from batuta.runtime.gateway import GATEWAY
    from batuta.runtime.state import read_state

    try:
        record = read_state(state_dir).servers.get(GATEWAY)
        if record is None or not record.spec.manifest:
            return ObserveSettings()
        return observe_settings(_manifest_gateway(record.spec.manifest))
    except BatutaError:
        return ObserveSettings()


def observe_settings(section: ManifestGateway | None) -> ObserveSettings:
    """What the gateway records, as the manifest's ``gateway`` section says."""
    if section is None:
        return ObserveSettings()
    return ObserveSettings(
        metrics=section.metrics, request_log=section.request_log,
        log_content=section.log_content, log_max_size=int(section.request_log_max_size),
        log_files=section.request_log_files, traces=section.traces,
    )  # fmt: skip


def make_server(
    app: Gateway, host: str, port: int, *, drain_timeout: float = DRAIN_SECONDS
) -> uvicorn.Server:
    """The uvicorn server for ``app`` (not yet running)."""
    import uvicorn

    config = uvicorn.Config(
        app, host=host, port=port, loop="uvloop", http="httptools", lifespan="on",
        log_level="warning", access_log=False, timeout_graceful_shutdown=math.ceil(drain_timeout),
    )  # fmt: skip
    return uvicorn.Server(config)


def serve(
    manifest: str | None = None,
    *,
    listen: str | None = None,
    state_dir: Path | None = None,
    table: Path | None = None,
    any_address: bool = False,
    keepalive: float = KEEPALIVE_SECONDS,
    drain_timeout: float = DRAIN_SECONDS,
    announce: Callable[[str], None] | None = None,
    observe: ObserveSettings | None = None,
) -> None:
    """Serve the routing table that the last ``apply`` of ``manifest`` wrote (or the file
    ``table``: a cluster's ConfigMap), on ``listen`` (default: the manifest's
    ``gateway.listen``; any address only with ``any_address``), until SIGTERM or SIGINT.
    ``announce`` is told, in one line, where it listens and what it serves. What it records
    is ``observe``, else what the manifest's ``gateway`` section says."""
    from batuta._util.paths import state_dir_for
    from batuta.errors import RoutingError
    from batuta.routing.table import read_table, table_path

    state = state_dir or state_dir_for(manifest)
    path = table or table_path(state)
    where = "--listen"
    section = None
    if listen is None:
        section = _manifest_gateway(manifest)
    elif observe is None:
        # --listen has always served without the manifest being valid (its gateway.listen
        # may be one this machine refuses); then its record settings apply if it loads.
        try:
            section = _manifest_gateway(manifest)
        except ManifestError:
            section = None
    if observe is None:
        observe = observe_settings(section)
    if listen is None:
        listen, where = section.listen if section else DEFAULT_LISTEN, "gateway.listen"
    host, port = listen_address(listen, where, any_address=any_address)
    if table is not None and not table.is_file():
        raise GatewaySetupError(f"--table: no routing table at {table}")
    try:
        served = read_table(path)
    except RoutingError as exc:
        named = f" (with -f {manifest})" if manifest else ""
        raise GatewaySetupError(f"{exc}{named}") from None
    app = Gateway(path, state_dir=state, keepalive=keepalive, observe=observe)
    server = make_server(app, host, port, drain_timeout=drain_timeout)
    if announce is not None:
        shown = f"[{host}]" if ":" in host else host
        routes = ", ".join(sorted(served.routes)) or "none"
        announce(f"batuta gateway: listening on http://{shown}:{port} (routes: {routes})")
    # uvicorn re-raises the signal that stopped it once it has drained; answered by a
    # handler that does nothing, the drain then ends in a normal return (exit status 0).
    previous = {s: signal.signal(s, _ignore) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run()
    except SystemExit:  # uvicorn's answer to an address it cannot bind
        if server.started:
            raise
        raise GatewaySetupError(
            f"{where}: cannot listen on {host}:{port} (in use, or not an address here)"
        ) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _ignore(signum: int, frame: object) -> None:
    return
