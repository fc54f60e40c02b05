"""The gateway as a resource of the plan: wanted when the manifest has a ``gateway:`` block.

Its identity is the one gateway record of the state directory
(:data:`batuta.runtime.gateway.GATEWAY`) and its ``config_hash`` decides replacement,
like a server's. Only the listen address, the restart policy and how it is launched are
in the spec, and each needs a new process: there is no in-place change. Routes are not in
it: the running gateway reads the routing table again when ``apply`` rewrites it, so a
route change alone leaves the gateway as it is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

from batuta.errors import RuntimeStartError, StateError
from batuta.plan.diff import CHANGED, LIVE_STATES, AttrChange, ServerChange, owned_by
from batuta.runtime.gateway import GATEWAY, gateway_spec
from batuta.runtime.spec import ServerSpec, ServerStatus

if TYPE_CHECKING:
    from batuta.manifest import LoadedManifest


class GatewayPortError(RuntimeStartError):
    """The gateway's address is taken: apply refuses before it changes anything."""


def wants_gateway(loaded: LoadedManifest) -> bool:
    """Whether the manifest declares a ``gateway:`` block (a default one is not a request)."""
    return "gateway" in loaded.manifest.model_fields_set


def desired_gateway(loaded: LoadedManifest) -> ServerSpec | None:
    """The gateway's launch spec, when the manifest asks for one."""
    from batuta.manifest.gateway import parse_listen

    if not wants_gateway(loaded):
        return None
    host, port = parse_listen(loaded.manifest.gateway.listen)
    defaults = loaded.manifest.defaults
    return gateway_spec(
        host,
        port,
        state_dir=loaded.state_dir,
        manifest=str(loaded.path),
        restart=defaults.restart,
        ready_timeout=defaults.ready_timeout,
        log_max_size=defaults.log_max_size,
        settings=gateway_settings(loaded),
    )


def gateway_settings(loaded: LoadedManifest) -> str:
    """A digest of the gateway block but its address: keys (their names, variables, scopes,
    budgets, rates; never a key) and what it records. A change restarts the gateway, which
    reads them once, as it starts."""
    block = loaded.manifest.gateway.model_dump(mode="json", exclude={"listen"})
    blob = json.dumps(block, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def split_gateway(
    statuses: Mapping[str, ServerStatus],
) -> tuple[dict[str, ServerStatus], ServerStatus | None]:
    """(the servers, the gateway's record if there is one) of a runtime status."""
    servers = {n: s for n, s in statuses.items() if n != GATEWAY}
    return servers, statuses.get(GATEWAY)


def _listen(spec: ServerSpec) -> str:
    return f"[{spec.host}]:{spec.port}" if ":" in spec.host else f"{spec.host}:{spec.port}"


def gateway_changes(before: ServerSpec, after: ServerSpec) -> tuple[AttrChange, ...]:
    """What differs between the recorded and the desired gateway, in the manifest's terms."""
    out: list[AttrChange] = []
    if _listen(before) != _listen(after):
        out.append(AttrChange("listen", _listen(before), _listen(after)))
    if before.restart != after.restart:
        out.append(AttrChange("restart", before.restart, after.restart))
    if not out and before.config_hash != after.config_hash:
        out.append(AttrChange("command", " ".join(before.argv), " ".join(after.argv)))
    return tuple(out)


def gateway_change(
    desired: ServerSpec | None,
    status: ServerStatus | None,
    *,
    manifest: str,
    health: str | None = None,
) -> ServerChange | None:
    """The plan's entry for the gateway (None: neither wanted nor recorded)."""
    if status is not None and not owned_by(status, manifest):
        if desired is None:
            return None  # another manifest's, sharing the state directory: not ours to stop
        raise StateError(
            f"the gateway of this state directory belongs to {status.spec.manifest}: stop it "
            f"(batuta down -f {status.spec.manifest}) or give this manifest its own directory"
        )
    if desired is None:
        if status is None:
            return None
        live = status.state in LIVE_STATES or status.state == "crashloop"
        why = "no gateway: block in the manifest"
        return ServerChange(
            name=GATEWAY,
            action="destroy",
            reasons=(why if live else f"{why}; not running (record removed)",),
            recorded=status.spec,
            pid=status.pid,
            state=status.state,
            health=health,
        )
    base = ServerChange(
        name=GATEWAY, action="no-op", desired=desired, config_hash=desired.config_hash
    )
    if status is None:
        return dataclasses.replace(base, action="create")
    seen = dataclasses.replace(
        base, recorded=status.spec, pid=status.pid, state=status.state, health=health
    )
    if status.state == "crashloop":
        why = f"crash loop after {status.restarts} restarts"
        changes = gateway_changes(status.spec, desired)
        return dataclasses.replace(seen, action="replace", reasons=(why,), changes=changes)
    if status.state not in LIVE_STATES:
        why = "recorded but not running"
        if status.last_exit is not None:
            why += f" (exit code {status.last_exit})"
        return dataclasses.replace(seen, action="create", reasons=(why,))
    if status.spec.config_hash != desired.config_hash or status.spec.restart != desired.restart:
        changes = gateway_changes(status.spec, desired)
        return dataclasses.replace(seen, action="replace", reasons=(CHANGED,), changes=changes)
    return seen


def gateway_port_problem(
    loaded: LoadedManifest,
    change: ServerChange | None,
    specs: Mapping[str, ServerSpec],
) -> str | None:
    """Why the gateway cannot start where the manifest says (its address is taken by
    another process, or by a server this manifest declares), naming the manifest line of
    ``gateway.listen``; None when it can, or when it is not about to start."""
    from batuta.runtime.ports import holder, port_free

    if change is None or change.action not in ("create", "replace") or change.desired is None:
        return None
    spec = change.desired
    recorded = change.recorded
    keeps = (
        recorded is not None
        and change.state in LIVE_STATES
        and (recorded.host, recorded.port) == (spec.host, spec.port)
    )
    line, col = loaded.position("gateway.listen")
    where = f"{loaded.display or loaded.path}:{line}:{col}: gateway.listen"
    for name, server in sorted(specs.items()):
        if server.port == spec.port:
            return (
                f"{where}: port {spec.port} is also server {name!r}'s; "
                "give the gateway or the server another port"
            )
    if not keeps and not port_free(spec.host, spec.port):
        who = holder(spec.port)
        return (
            f"{where}: port {spec.port} on {spec.host} is already in use"
            + (f" by {who}" if who else "")
            + "; choose another gateway.listen or stop what listens there"
        )
    return None


def check_gateway_port(
    loaded: LoadedManifest,
    change: ServerChange | None,
    specs: Mapping[str, ServerSpec],
) -> None:
    """Raise GatewayPortError when :func:`gateway_port_problem` finds one (``apply`` asks
    before it changes anything)."""
    problem = gateway_port_problem(loaded, change, specs)
    if problem is not None:
        raise GatewayPortError(f"{problem} (nothing was changed)")
