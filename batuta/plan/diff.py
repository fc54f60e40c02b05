"""Compare what the manifest wants with what runs, and say what ``apply`` must do.

:func:`diff` is a pure function: desired launch specs, observed statuses, the desired and
current routing tables in; a :class:`Plan` out. A server's identity is its name and its
``config_hash`` decides replacement, so a server whose hash is unchanged is never touched.
Servers another manifest or ``batuta serve start`` launched are left alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from batuta._util.paths import same_manifest
from batuta.errors import StateError
from batuta.routing.build import without_health
from batuta.routing.table import RouteEntry, RoutingTable, TargetEntry
from batuta.runtime.spec import ServerSpec, ServerStatus

Action = Literal["create", "destroy", "replace", "update", "no-op"]

CHANGED = "config changed"

# Runtime states in which a process exists (or the supervisor is bringing it back).
LIVE_STATES = frozenset({"starting", "ready", "unhealthy"})

# Backend flags users know by their manifest name.
_FLAG_NAMES = {
    "--n_ctx": "ctx",
    "--ctx-size": "ctx",
    "-c": "ctx",
    "--n_threads": "threads",
    "--threads": "threads",
    "-t": "threads",
}


@dataclass(frozen=True)
class AttrChange:
    """One attribute that differs, shown as ``name: before → after``."""

    name: str
    before: str | None
    after: str | None

    def __str__(self) -> str:
        before = "(none)" if self.before is None else self.before
        after = "(none)" if self.after is None else self.after
        return f"{self.name}: {before} → {after}"


@dataclass(frozen=True)
class ServerChange:
    """What happens to one server, and why."""

    name: str
    action: Action
    reasons: tuple[str, ...] = ()
    changes: tuple[AttrChange, ...] = ()
    desired: ServerSpec | None = None
    recorded: ServerSpec | None = None
    pid: int | None = None
    state: str | None = None  # the runtime's state when observed
    health: str | None = None  # ready / loading / down when observed
    pending_model: str | None = None  # model that must be pulled before the server starts
    config_hash: str = ""  # of the desired spec (the specs above may be redacted)


@dataclass(frozen=True)
class RouteChange:
    """What happens to one route of the routing table."""

    name: str
    action: Action
    changes: tuple[AttrChange, ...] = ()
    targets: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelPull:
    """A model to fetch before its servers can start."""

    name: str
    source: str
    servers: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    """Everything ``apply`` would do, and the observed state it was computed from."""

    manifest: str
    servers: tuple[ServerChange, ...] = ()
    routes: tuple[RouteChange, ...] = ()
    pulls: tuple[ModelPull, ...] = ()
    table: RoutingTable | None = None  # desired routing table, health not yet known
    fingerprint: str = ""  # digest of the observed state
    manifest_digest: str = ""  # digest of the manifest text the plan was made from
    state_dir: str = ""
    notes: tuple[str, ...] = ()
    gateway: ServerChange | None = None  # the supervised gateway (see plan/gateway.py)

    @property
    def counts(self) -> tuple[int, int, int]:
        """(to add, to change, to destroy); a replacement counts as one add and one destroy."""
        add = change = destroy = 0
        actions = [s.action for s in self.servers] + [r.action for r in self.routes]
        actions += [self.gateway.action] if self.gateway else []
        for action in actions:
            add += action in ("create", "replace")
            change += action == "update"
            destroy += action in ("destroy", "replace")
        return add, change, destroy

    @property
    def has_changes(self) -> bool:
        """Whether applying would change anything (a pull alone counts)."""
        return any(self.counts) or bool(self.pulls)

    def server(self, name: str) -> ServerChange | None:
        """The planned change of one server, if it is part of the plan."""
        return next((s for s in self.servers if s.name == name), None)


# --- server specs -------------------------------------------------------------------------

SENSITIVE = "(sensitive)"


def _mask(text: str | None, secrets: frozenset[str]) -> str | None:
    if text is None:
        return None
    for secret in secrets:
        text = text.replace(secret, SENSITIVE)
    return text


def _masked(
    changes: tuple[AttrChange, ...], secrets: frozenset[str], keys: frozenset[str]
) -> tuple[AttrChange, ...]:
    """``changes`` as they may be shown: secret env values and substrings masked."""
    out: list[AttrChange] = []
    for c in changes:
        if c.name.startswith("env.") and c.name[4:] in keys:
            before = SENSITIVE if c.before is not None else None
            after = SENSITIVE if c.after is not None else None
            out.append(AttrChange(c.name, before, after))
        else:
            out.append(AttrChange(c.name, _mask(c.before, secrets), _mask(c.after, secrets)))
    return tuple(out)


def redact(
    spec: ServerSpec, secrets: frozenset[str], keys: frozenset[str] = frozenset()
) -> ServerSpec:
    """``spec`` with every value that came from ``${env:...}`` masked, for showing.

    ``keys`` names env variables masked whatever their value (a recorded spec may hold
    an earlier value of a variable that is secret now).
    """
    if not secrets and not keys:
        return spec

    return dataclasses.replace(
        spec,
        env={k: SENSITIVE if k in keys else str(_mask(v, secrets)) for k, v in spec.env.items()},
        argv=tuple(str(_mask(a, secrets)) for a in spec.argv),
    )


def owned_by(status: ServerStatus, manifest: str) -> bool:
    """Whether ``manifest``'s plan may create, replace or destroy this server."""
    return status.spec.origin == "manifest" and same_manifest(status.spec.manifest, manifest)


def _options(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """Split argv into ``--flag value`` pairs and positional words."""
    options: dict[str, str] = {}
    positional: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if word.startswith("-") and len(word) > 1 and not _is_number(word):
            if "=" in word:
                key, value = word.split("=", 1)
            elif i + 1 < len(argv) and (not argv[i + 1].startswith("-") or _is_number(argv[i + 1])):
                key, value = word, argv[i + 1]
                i += 1
            else:
                key, value = word, "true"
            options[key] = f"{options[key]},{value}" if key in options else value
        else:
            positional.append(word)
        i += 1
    return options, positional


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True


def _short(digest: str) -> str | None:
    return digest[:12] if digest else None


def spec_changes(before: ServerSpec, after: ServerSpec) -> tuple[AttrChange, ...]:
    """The differences between a recorded and a desired spec, in the user's terms."""
    out: list[AttrChange] = []
    shown: set[tuple[str, str]] = set()
    for label, b, a in (
        ("backend", before.backend, after.backend),
        ("host", before.host, after.host),
        ("port", str(before.port), str(after.port)),
        ("model", before.model_path, after.model_path),
        ("restart", before.restart, after.restart),
    ):
        if b != a:
            out.append(AttrChange(label, b, a))
            shown.add((b, a))
    if before.backend == after.backend and before.engine_name != after.engine_name:
        # Another engine is another command line: its flags differ as a whole.
        out.append(AttrChange("engine", before.engine_name or None, after.engine_name or None))
        return tuple(out)
    if before.model_digest != after.model_digest and before.model_path == after.model_path:
        out.append(
            AttrChange("model digest", _short(before.model_digest), _short(after.model_digest))
        )
    for key in sorted(set(before.env) | set(after.env)):
        if before.env.get(key) != after.env.get(key):
            out.append(AttrChange(f"env.{key}", before.env.get(key), after.env.get(key)))
    b_opts, b_pos = _options(before.argv)
    a_opts, a_pos = _options(after.argv)
    for key in sorted(set(b_opts) | set(a_opts), key=lambda k: _FLAG_NAMES.get(k, k)):
        was, now = b_opts.get(key), a_opts.get(key)
        if was == now or (was is not None and now is not None and (was, now) in shown):
            continue
        out.append(AttrChange(_FLAG_NAMES.get(key, f"args {key}"), was, now))
    if b_pos != a_pos and not any(
        (p, q) in shown for p, q in zip(b_pos, a_pos, strict=False) if p != q
    ):
        out.append(AttrChange("args", " ".join(b_pos), " ".join(a_pos)))
    if not out and before.config_hash != after.config_hash:
        out.append(AttrChange("argv", " ".join(before.argv), " ".join(after.argv)))
    return tuple(out)


def _server_change(
    name: str,
    spec: ServerSpec,
    status: ServerStatus | None,
    manifest: str,
    health: str | None,
    pending: str | None,
    secrets: frozenset[str],
) -> ServerChange:
    base = ServerChange(
        name=name,
        action="no-op",
        desired=redact(spec, secrets),
        pending_model=pending,
        config_hash=spec.config_hash,
    )
    if pending:
        base = dataclasses.replace(base, reasons=(f"model {pending!r} must be pulled first",))
    if status is None:
        return dataclasses.replace(base, action="create")
    if not owned_by(status, manifest):
        owner = (
            "an ad-hoc server (batuta serve start)"
            if status.spec.origin == "adhoc"
            else f"a server of {status.spec.manifest}"
        )
        raise StateError(
            f"server {name!r} is already {owner}: stop it (batuta serve stop {name}) "
            "or give the server another name in the manifest"
        )
    keys = frozenset(k for k, v in spec.env.items() if v in secrets)
    seen = dataclasses.replace(
        base,
        recorded=redact(status.spec, secrets, keys),
        pid=status.pid,
        state=status.state,
        health=health,
    )

    def changes_of(before: ServerSpec) -> tuple[AttrChange, ...]:
        return _masked(spec_changes(before, spec), secrets, keys)

    if status.state == "crashloop":
        why = f"crash loop after {status.restarts} restarts"
        why += f": {status.message}" if status.message else ""
        changes = changes_of(status.spec)
        return dataclasses.replace(seen, action="replace", reasons=(why,), changes=changes)
    from batuta.plan.ondemand import on_demand_change  # it builds on this module

    if (sleeping := on_demand_change(seen, spec, status, changes_of)) is not None:
        return sleeping
    if status.state not in LIVE_STATES:
        why = "recorded but not running"
        if status.last_exit is not None:
            why += f" (exit code {status.last_exit})"
        return dataclasses.replace(seen, action="create", reasons=(why, *base.reasons))
    if status.spec.config_hash != spec.config_hash or status.spec.restart != spec.restart:
        # The supervisor reads the restart policy when it starts a server.
        changes = changes_of(status.spec)
        return dataclasses.replace(
            seen, action="replace", changes=changes, reasons=(CHANGED, *base.reasons)
        )
    return seen


def _destroy(
    name: str, status: ServerStatus, health: str | None, secrets: frozenset[str]
) -> ServerChange:
    live = status.state in LIVE_STATES or status.state == "crashloop"
    why = "not in the manifest" if live else "not in the manifest; not running (record removed)"
    return ServerChange(
        name=name,
        action="destroy",
        reasons=(why,),
        recorded=redact(status.spec, secrets),
        pid=status.pid,
        state=status.state,
        health=health,
    )


# --- routing table ------------------------------------------------------------------------

_ROUTE_FIELDS = (
    "latency",
    "privacy",
    "cost",
    "timeout",
    "first_byte_timeout",
    "retries",
    "daily_usd",
    "per_request_usd",
    "strategy",
)
_TARGET_FIELDS = ("backend", "protocol", "base_url", "model", "local", "api_key_env", "pricing",
                  "on_demand", "max_concurrency", "queue_max", "queue_timeout")  # fmt: skip


def _fmt(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, tuple):
        return "(" + ", ".join(str(_fmt(v)) for v in value) + ")"
    return str(value)


def route_changes(before: RouteEntry, after: RouteEntry) -> tuple[AttrChange, ...]:
    """How a route differs between the table on disk and the desired one (health aside)."""
    out: list[AttrChange] = []
    b_names = [t.name for t in before.targets]
    a_names = [t.name for t in after.targets]
    if b_names != a_names:
        out.append(AttrChange("targets", ", ".join(b_names), ", ".join(a_names)))
    for field in _ROUTE_FIELDS:
        b, a = getattr(before, field), getattr(after, field)
        if b != a:
            out.append(AttrChange(field, _fmt(b), _fmt(a)))
    b_targets = {t.name: t for t in before.targets}
    for target in after.targets:
        old: TargetEntry | None = b_targets.get(target.name)
        if old is None:
            continue
        for field in (*_TARGET_FIELDS, "options"):
            b, a = getattr(old, field), getattr(target, field)
            if b != a:
                out.append(AttrChange(f"{target.name}.{field}", _fmt(b), _fmt(a)))
    return tuple(out)


def _route_diff(desired: RoutingTable | None, current: RoutingTable | None) -> list[RouteChange]:
    want = without_health(desired).routes if desired else {}
    have = without_health(current).routes if current else {}
    out: list[RouteChange] = []
    for name in sorted(set(want) | set(have)):
        if name not in have:
            targets = tuple(t.name for t in want[name].targets)
            out.append(RouteChange(name, "create", targets=targets))
        elif name not in want:
            targets = tuple(t.name for t in have[name].targets)
            out.append(RouteChange(name, "destroy", targets=targets))
        else:
            changes = route_changes(have[name], want[name])
            targets = tuple(t.name for t in want[name].targets)
            action: Action = "update" if changes else "no-op"
            out.append(RouteChange(name, action, changes=changes, targets=targets))
    return out


# --- the plan -----------------------------------------------------------------------------


def diff(
    desired: Mapping[str, ServerSpec],
    observed: Mapping[str, ServerStatus],
    desired_table: RoutingTable | None,
    current_table: RoutingTable | None,
    *,
    manifest: str,
    health: Mapping[str, str] | None = None,
    pending: Mapping[str, str] | None = None,
    pulls: Sequence[ModelPull] = (),
    fingerprint: str = "",
    manifest_digest: str = "",
    state_dir: str = "",
    secrets: frozenset[str] = frozenset(),
) -> Plan:
    """The plan that makes ``observed`` match ``desired`` for the manifest at ``manifest``.

    ``health`` holds probe results by server name; ``pending`` maps a server to the model
    it waits for; values in ``secrets`` are masked wherever the plan shows a spec.
    Raises StateError when a declared name belongs to a server this
    manifest does not own.
    """
    health = health or {}
    pending = pending or {}
    servers: list[ServerChange] = []
    notes: list[str] = []
    for name in sorted(desired):
        status = observed.get(name)
        change = _server_change(
            name, desired[name], status, manifest, health.get(name), pending.get(name), secrets
        )
        servers.append(change)
        if change.action == "no-op" and change.health not in (None, "ready"):
            notes.append(f"server {name!r} is running but its health check says {change.health}")
    for name in sorted(set(observed) - set(desired)):
        status = observed[name]
        if owned_by(status, manifest):
            servers.append(_destroy(name, status, health.get(name), secrets))
    if current_table is not None and current_table.manifest != manifest:
        notes.append(f"the routing table on disk was written for {current_table.manifest}")
    return Plan(
        manifest=manifest,
        servers=tuple(servers),
        routes=tuple(_route_diff(desired_table, current_table)),
        pulls=tuple(pulls),
        table=without_health(desired_table) if desired_table else None,
        fingerprint=fingerprint,
        manifest_digest=manifest_digest,
        state_dir=state_dir,
        notes=tuple(notes),
    )
