"""The gateway as a supervised process: its record's name and its launch spec.

``apply`` runs ``batuta gateway`` for a manifest with a ``gateway:`` block through the
same supervisor as the servers (ownership by pid + create time, restarts with backoff,
``.batuta/logs/``), as one more record of state.json. Its name, :data:`GATEWAY`, is one
no manifest server can have (names start with a letter or digit), so it never collides
with a declared server. The process is ``python -m batuta.gateway``: it imports neither
the CLI nor click, and serves the routing table of the state directory, which it reads
again whenever ``apply`` rewrites it (a route change never restarts it).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from batuta.runtime.spec import ServerSpec

GATEWAY = "_gateway"  # the record's name in state.json and its log file's
SHOWN = "gateway"  # how commands name it (``batuta logs gateway``)
# A stop sends SIGTERM and waits 10 s (the runtime's stop timeout) before SIGKILL: the
# gateway lets the answers in flight finish for a little less than that.
DRAIN_SECONDS = 8.0


def listen_url(host: str, port: int) -> str:
    """``http://HOST:PORT`` (IPv6 hosts bracketed)."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def gateway_spec(
    host: str,
    port: int,
    *,
    state_dir: Path,
    manifest: str,
    restart: Literal["always", "on-failure", "never"] = "on-failure",
    ready_timeout: float = 120.0,
    log_max_size: int = 10 * 2**20,
    settings: str = "",
) -> ServerSpec:
    """The launch spec of the gateway of ``manifest`` on ``host:port``.

    Only what needs a restart to change is in it (the address, the interpreter, the state
    directory, and ``settings``: a digest of the manifest's gateway block, whose keys and
    recording options the process reads from ``manifest`` as it starts): the routing table
    is read by the running process.
    """
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    argv = (
        sys.executable, "-m", "batuta.gateway", "--listen", listen,
        "--state-dir", str(Path(state_dir).resolve()), "--drain-timeout", f"{DRAIN_SECONDS:g}",
        "--manifest", manifest, *(("--settings", settings) if settings else ()),
    )  # fmt: skip
    return ServerSpec(
        name=GATEWAY,
        backend="gateway",
        argv=argv,
        host=host,
        port=port,
        health_url=f"{listen_url(host, port)}/health",
        model_path="",
        restart=restart,
        origin="manifest",
        manifest=manifest,
        ready_timeout=ready_timeout,
        log_max_size=log_max_size,
    )


def is_gateway(spec: ServerSpec) -> bool:
    """Whether ``spec`` is a manifest's gateway (the one record not named like a server)."""
    return spec.name == GATEWAY and spec.backend == "gateway" and spec.origin == "manifest"
