"""Show a plan the way Terraform users read one (and as the JSON that ``plan --out``
saves), and ``status`` as desired-vs-actual rows.

``+`` create, ``-`` destroy, ``~`` update in place, ``-/+`` replace, each followed by the
attribute changes that cause it. Colour comes from ``click.style``; ``click.echo`` drops it
when the output is not a terminal.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from batuta.errors import StateError
from batuta.plan.diff import (
    CHANGED,
    LIVE_STATES,
    AttrChange,
    ModelPull,
    Plan,
    RouteChange,
    ServerChange,
)
from batuta.routing.table import RoutingTable
from batuta.runtime.gateway import SHOWN, listen_url
from batuta.runtime.spec import ServerSpec

NO_CHANGES = "No changes. Your servers match batuta.yaml."
PLAN_FORMAT = 1

_SYMBOL = {"create": "+", "destroy": "-", "update": "~", "replace": "-/+"}
_COLOUR = {"create": "green", "destroy": "red", "update": "yellow", "replace": "magenta"}


def summary(plan: Plan) -> str:
    """``Plan: X to add, Y to change, Z to destroy.``"""
    add, change, destroy = plan.counts
    return f"Plan: {add} to add, {change} to change, {destroy} to destroy."


def _mark(action: str) -> str:
    return click.style(f"{_SYMBOL[action]:>3}", fg=_COLOUR[action], bold=True)


def _model_name(path: str) -> str:
    return Path(path).name or path


def _backend(spec: ServerSpec) -> str:
    """The backend, with the engine that runs it when it has several: ``llamacpp (server)``."""
    return f"{spec.backend} ({spec.engine_name})" if spec.engine_name else spec.backend


def _server_lines(change: ServerChange) -> list[str]:
    spec = change.desired or change.recorded
    assert spec is not None  # a change always carries one spec or the other
    where = f"{spec.backend} on {spec.host}:{spec.port}, model {_model_name(spec.model_path)}"
    head = f"{_mark(change.action)} server {click.style(change.name, bold=True)}"
    if change.action == "create":
        head += f": {where}"
    elif change.action == "replace":
        head += (
            ": replaced on the same port"
            if not any(c.name == "port" for c in change.changes)
            else ": replaced"
        )
    elif change.action == "destroy" and change.pid is not None:
        head += f": stop pid {change.pid}"
    lines = [head]
    lines += [f"        {why}" for why in change.reasons if not (change.changes and why == CHANGED)]
    tilde = click.style("~", fg="yellow")
    lines += [f"      {tilde} {c}" for c in change.changes]
    return lines


def _route_lines(change: RouteChange) -> list[str]:
    head = f"{_mark(change.action)} route {click.style(change.name, bold=True)}"
    if change.action in ("create", "destroy"):
        head += " → " + (", ".join(change.targets) or "(no targets)")
    tilde = click.style("~", fg="yellow")
    return [head, *(f"      {tilde} {c}" for c in change.changes)]


def _gateway_lines(change: ServerChange) -> list[str]:
    head = f"{_mark(change.action)} {click.style('gateway', bold=True)}"
    spec = change.desired or change.recorded
    if change.action == "create" and spec is not None:
        head += f": listen on {listen_url(spec.host, spec.port)}"
    elif change.action == "replace":
        head += ": replaced"
    elif change.action == "destroy" and change.pid is not None:
        head += f": stop pid {change.pid}"
    lines = [head]
    lines += [f"        {why}" for why in change.reasons if not (change.changes and why == CHANGED)]
    tilde = click.style("~", fg="yellow")
    return lines + [f"      {tilde} {c}" for c in change.changes]


def render_plan(plan: Plan) -> str:
    """The human-readable plan, ending with the summary line (or 'No changes.')."""
    lines: list[str] = []
    for note in plan.notes:
        lines.append(click.style(f"Note: {note}", fg="yellow"))
    if not plan.has_changes:
        lines.append(click.style(NO_CHANGES, fg="green", bold=True))
        return "\n".join(lines)
    if lines:
        lines.append("")
    lines.append("batuta will perform the following actions:")
    if plan.pulls:
        lines.append("")
        for pull in plan.pulls:
            arrow = click.style("  ↓", fg="cyan", bold=True)
            lines.append(f"{arrow} model {pull.name} from {pull.source}")
            lines.append(f"        for {', '.join(pull.servers)}")
    changed = [s for s in plan.servers if s.action != "no-op"]
    if changed:
        lines.append("")
        for server in changed:
            lines += _server_lines(server)
    routes = [r for r in plan.routes if r.action != "no-op"]
    if routes:
        lines.append("")
        for route in routes:
            lines += _route_lines(route)
    if plan.gateway is not None and plan.gateway.action != "no-op":
        lines += ["", *_gateway_lines(plan.gateway)]
    lines += ["", click.style(summary(plan), bold=True)]
    return "\n".join(lines)


# --- JSON -------------------------------------------------------------------------------


def plan_json(plan: Plan) -> dict[str, Any]:
    """The plan as JSON: what ``plan --json`` prints and ``plan --out`` saves."""
    add, change, destroy = plan.counts
    return {
        "format_version": PLAN_FORMAT,
        "manifest": plan.manifest,
        "manifest_digest": plan.manifest_digest,
        "state_dir": plan.state_dir,
        "fingerprint": plan.fingerprint,
        "summary": {"add": add, "change": change, "destroy": destroy},
        "has_changes": plan.has_changes,
        "pulls": [dataclasses.asdict(p) for p in plan.pulls],
        "servers": [_server_json(s) for s in plan.servers],
        "routes": [dataclasses.asdict(r) for r in plan.routes],
        "table": plan.table.to_json() if plan.table else None,
        "notes": list(plan.notes),
        "gateway": _server_json(plan.gateway) if plan.gateway else None,
    }


def plan_from_json(data: dict[str, Any]) -> Plan:
    """Inverse of :func:`plan_json`; raises StateError on a file that is not a plan."""
    try:
        if data["format_version"] != PLAN_FORMAT:
            raise StateError(f"plan format {data['format_version']} is not supported")
        return Plan(
            manifest=data["manifest"],
            manifest_digest=data["manifest_digest"],
            state_dir=data["state_dir"],
            fingerprint=data["fingerprint"],
            pulls=tuple(
                ModelPull(p["name"], p["source"], tuple(p["servers"])) for p in data["pulls"]
            ),
            servers=tuple(_server_from_json(s) for s in data["servers"]),
            routes=tuple(
                RouteChange(
                    name=r["name"],
                    action=r["action"],
                    changes=tuple(AttrChange(**c) for c in r["changes"]),
                    targets=tuple(r["targets"]),
                )
                for r in data["routes"]
            ),
            table=RoutingTable.from_json(data["table"]) if data["table"] else None,
            notes=tuple(data["notes"]),
            gateway=_server_from_json(data["gateway"]) if data.get("gateway") else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StateError(f"not a batuta plan file: {exc}") from exc


def _server_json(change: ServerChange) -> dict[str, Any]:
    data = dataclasses.asdict(change)
    data["changes"] = [dataclasses.asdict(c) for c in change.changes]
    data["desired"] = change.desired.to_json() if change.desired else None
    data["recorded"] = change.recorded.to_json() if change.recorded else None
    return data


def _server_from_json(data: dict[str, Any]) -> ServerChange:
    return ServerChange(
        name=data["name"],
        action=data["action"],
        reasons=tuple(data["reasons"]),
        changes=tuple(AttrChange(**c) for c in data["changes"]),
        desired=ServerSpec.from_json(data["desired"]) if data["desired"] else None,
        recorded=ServerSpec.from_json(data["recorded"]) if data["recorded"] else None,
        pid=data["pid"],
        state=data["state"],
        health=data["health"],
        pending_model=data["pending_model"],
        config_hash=data["config_hash"],
    )


# --- status -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerRow:
    """One server as ``status`` shows it."""

    name: str
    state: str
    health: str
    pid: int | None
    port: int | None
    restarts: int
    drift: str  # in sync / config changed / crash loop / not running / not declared
    backend: str = "-"  # what runs (or would): ``llamacpp (server)``, ``ollama``, ...

    def to_json(self) -> dict[str, object]:
        """JSON form for ``status --json``."""
        return self.__dict__.copy()


_DRIFT = {"no-op": "in sync", "replace": "config changed", "create": "not running"}


def _asleep(state: str | None) -> str:
    # An on-demand server that sleeps is not down: its first request starts it.
    return "idle" if state == "idle" else "down"


def server_rows(plan: Plan, restarts: dict[str, int] | None = None) -> list[ServerRow]:
    """Desired vs actual for each server the plan covers."""
    restarts = restarts or {}
    rows: list[ServerRow] = []
    for change in plan.servers:
        spec = change.recorded or change.desired
        drift = "not declared" if change.action == "destroy" else _DRIFT[change.action]
        if change.state == "crashloop":
            drift = "crash loop"
        elif change.action == "create" and change.state is None:
            drift = "not started"
        running = change.state in LIVE_STATES
        rows.append(
            ServerRow(
                name=change.name,
                state=change.state or "absent",
                health=(change.health or "unknown") if running else _asleep(change.state),
                pid=change.pid if running else None,
                port=spec.port if spec else None,
                restarts=restarts.get(change.name, 0),
                drift=drift,
                backend=_backend(spec) if spec else "-",
            )
        )
    return rows


@dataclass(frozen=True)
class GatewayRow:
    """The supervised gateway as ``status`` shows it."""

    state: str
    health: str
    pid: int | None
    listen: str  # the URL clients use
    restarts: int
    drift: str

    def to_json(self) -> dict[str, object]:
        """JSON form for ``status --json``."""
        return self.__dict__.copy()


def gateway_row(plan: Plan, restarts: int = 0) -> GatewayRow | None:
    """The gateway's row, when the manifest wants one or one is recorded."""
    change = plan.gateway
    if change is None:
        return None
    spec = change.recorded or change.desired
    assert spec is not None  # a change always carries one spec or the other
    drift = "not declared" if change.action == "destroy" else _DRIFT[change.action]
    if change.state == "crashloop":
        drift = "crash loop"
    elif change.action == "create" and change.state is None:
        drift = "not started"
    running = change.state in LIVE_STATES
    return GatewayRow(
        state=change.state or "absent",
        health=(change.health or "unknown") if running else "down",
        pid=change.pid if running else None,
        listen=listen_url(spec.host, spec.port),
        restarts=restarts,
        drift=drift,
    )


def route_rows(
    table: RoutingTable | None, health: dict[str, str], servers: set[str]
) -> list[tuple[str, list[tuple[str, str]]]]:
    """Each route of the table on disk with its targets and their health now.

    Servers show their probe result (``down`` when not running); endpoints are not
    called by ``status`` (that would cost a request) and show ``not probed``.
    """
    if table is None:
        return []
    out: list[tuple[str, list[tuple[str, str]]]] = []
    for name, route in sorted(table.routes.items()):
        targets = [
            (t.name, health.get(t.name, "down") if t.name in servers else "not probed")
            for t in route.targets
        ]
        out.append((name, targets))
    return out


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*headers).rstrip(), *(fmt.format(*r).rstrip() for r in rows)]


_DRIFT_COLOUR = {"in sync": "green", "not declared": "yellow"}


def render_status(
    rows: list[ServerRow],
    routes: list[tuple[str, list[tuple[str, str]]]],
    manifest: str,
    gateway: GatewayRow | None = None,
) -> str:
    """The ``status`` screen: one line per server, the gateway, then each route's targets."""
    lines = [f"Manifest: {manifest}", ""]
    if rows:
        body = [
            [
                r.name,
                r.backend,
                r.state,
                r.health,
                str(r.pid or "-"),
                str(r.port or "-"),
                str(r.restarts),
                r.drift,
            ]
            for r in rows
        ]
        table = _table(
            ["SERVER", "BACKEND", "STATE", "HEALTH", "PID", "PORT", "RESTARTS", "DRIFT"], body
        )
        lines.append(table[0])
        for row, text in zip(rows, table[1:], strict=True):
            lines.append(click.style(text, fg=_DRIFT_COLOUR.get(row.drift, "red")))
    else:
        lines.append("No servers declared or running.")
    if gateway is not None:
        g = gateway
        cells = [[SHOWN, g.state, g.health, str(g.pid or "-"), g.listen, str(g.restarts), g.drift]]
        heads = ["GATEWAY", "STATE", "HEALTH", "PID", "LISTEN", "RESTARTS", "DRIFT"]
        head, text = _table(heads, cells)
        lines += ["", head]
        lines.append(click.style(text, fg=_DRIFT_COLOUR.get(g.drift, "red")))
    if routes:
        lines += ["", "ROUTES"]
        for name, targets in routes:
            parts = [f"{t} ({h})" for t, h in targets]
            lines.append(f"  {name} → {', '.join(parts) or '(no targets)'}")
    return "\n".join(lines)
