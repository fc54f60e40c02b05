"""Running the gateway: uvicorn (uvloop + httptools) in the foreground, drained on a signal.

The manifest's ``gateway:`` block (or the same block alone in a JSON file: a cluster's)
says where to listen and which API keys clients must present; both are read once, at
start. Without keys the gateway is open, so it listens on a loopback address only.

SIGTERM or SIGINT stops accepting connections and lets the answers in flight finish, for
at most ``drain_timeout`` seconds, then the process returns normally (exit status 0).
"""

from __future__ import annotations

import math
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from batuta.gateway.app import KEEPALIVE_SECONDS, Gateway
from batuta.gateway.errors import GatewaySetupError
from batuta.gateway.keys import Keyring
from batuta.gateway.observe import ObserveSettings

if TYPE_CHECKING:
    import uvicorn

    from batuta.manifest.gateway import Gateway as GatewayBlock

DRAIN_SECONDS = 30.0
DEFAULT_LISTEN = "127.0.0.1:8080"  # as the manifest's gateway.listen defaults


def listen_address(
    value: str, where: str = "--listen", *, keyed: bool = False, any_address: bool = False
) -> tuple[str, int]:
    """``HOST:PORT``, on this machine unless the gateway has keys (``keyed``) or runs in a
    cluster pod (``any_address``: the Service and its NetworkPolicy decide who connects);
    a GatewaySetupError saying why not."""
    from batuta._util.net import is_localhost_name, is_loopback
    from batuta.manifest.gateway import parse_listen

    try:
        host, port = parse_listen(value)
    except ValueError as exc:
        raise GatewaySetupError(f"{where}: {exc}") from None
    if not (keyed or any_address or is_localhost_name(host) or is_loopback(host)):
        raise GatewaySetupError(f"{where}: {host!r} is not this machine; {LOOPBACK_ONLY}")
    return host, port


LOOPBACK_ONLY = (
    "without API keys (gateway.keys in the manifest) the gateway would serve anyone who"
    " reaches it, so it listens on a loopback address only (127.0.0.1, ::1 or localhost)"
)


def _manifest_gateway(manifest: str | None) -> GatewayBlock | None:
    """The manifest's ``gateway:`` block, when the manifest exists (None: defaults apply)."""
    from batuta._util.paths import manifest_path
    from batuta.manifest import load_manifest

    file, _ = manifest_path(manifest)
    if not file.exists():
        return None
    return load_manifest(manifest).manifest.gateway


def observe_settings(section: GatewayBlock | None) -> ObserveSettings:
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
    gateway_config: Path | None = None,
) -> None:
    """Serve the routing table that the last ``apply`` of ``manifest`` wrote (or the file
    ``table``: a cluster's ConfigMap), on ``listen`` (default: the manifest's
    ``gateway.listen``; any address only with ``any_address``), until SIGTERM or SIGINT.
    ``announce`` is told, in one line, where it listens and what it serves. What it records
    is ``observe``, else what the manifest's ``gateway`` section says. ``gateway_config``: a
    JSON file holding that section alone, read instead of the manifest's (a cluster's)."""
    from batuta._util.paths import state_dir_for
    from batuta.errors import RoutingError
    from batuta.routing.table import read_table, table_path

    state = state_dir or state_dir_for(manifest)
    path = table or table_path(state)
    if listen is not None:
        listen_address(listen, keyed=True)  # its form, before the manifest's own mistakes
    if gateway_config is not None:
        from batuta.gateway.configfile import read_gateway_config

        block: GatewayBlock | None = read_gateway_config(gateway_config)
    else:
        block = _manifest_gateway(manifest)
    keys = None
    if block is not None and block.keys:
        keys = Keyring.from_manifest(block, os.environ, announce or _ignore_line)
    where = "--listen"
    if listen is None:
        listen, where = block.listen if block else DEFAULT_LISTEN, "gateway.listen"
    host, port = listen_address(listen, where, keyed=keys is not None, any_address=any_address)
    if observe is None:
        observe = observe_settings(block)
    if table is not None and not table.is_file():
        raise GatewaySetupError(f"--table: no routing table at {table}")
    try:
        served = read_table(path)
    except RoutingError as exc:
        named = f" (with -f {manifest})" if manifest else ""
        raise GatewaySetupError(f"{exc}{named}") from None
    from batuta.gateway.sharing import open_shared

    shared = open_shared(block, os.environ, keys)
    app = Gateway(path, state_dir=state, keepalive=keepalive, keys=keys, observe=observe,
                  shared=shared)  # fmt: skip
    server = make_server(app, host, port, drain_timeout=drain_timeout)
    if announce is not None:
        shown = f"[{host}]" if ":" in host else host
        routes = ", ".join(sorted(served.routes)) or "none"
        named = f"; keys: {', '.join(sorted(keys.by_name))}" if keys is not None else ""
        announce(f"batuta gateway: listening on http://{shown}:{port} (routes: {routes}{named})")
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


def _ignore_line(line: str) -> None:
    return
