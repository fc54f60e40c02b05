"""Plan: what ``batuta apply`` would change, computed without changing anything.

::

    from batuta.plan import make_plan
    plan = make_plan("batuta.yaml")      # load, observe, diff
    plan.counts                          # (to add, to change, to destroy)

The desired side comes from the manifest: each model is resolved without downloading
(a model that is not local yet becomes a pull), each server gets its launch spec, and
the routes become the routing table. The observed side comes from :mod:`.observe`;
:func:`batuta.plan.diff.diff` compares them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from batuta._util.options import OptionValue
from batuta.errors import ManifestError, ManifestIssue, ModelSourceError
from batuta.plan.diff import LIVE_STATES, ModelPull, Plan, diff, owned_by
from batuta.plan.gateway import (
    desired_gateway,
    gateway_change,
    gateway_port_problem,
    split_gateway,
    wants_gateway,
)
from batuta.plan.observe import Observation, observe
from batuta.plan.ondemand import with_memory
from batuta.routing.build import build_table, template_options
from batuta.routing.table import RoutingTable
from batuta.runtime.gateway import GATEWAY
from batuta.runtime.spec import ServerSpec, ServerStatus

if TYPE_CHECKING:
    from batuta.manifest import LoadedManifest
    from batuta.manifest.model import Server
    from batuta.runtime.sources import ResolvedModel

__all__ = [
    "Desired",
    "Plan",
    "desired_state",
    "make_plan",
    "manifest_digest",
    "plan_from",
    "resolve_models",
    "secrets_of",
]


@dataclass(frozen=True)
class Desired:
    """What the manifest wants, fully resolved."""

    specs: dict[str, ServerSpec]
    pending: dict[str, str]  # server -> model it waits for
    pulls: tuple[ModelPull, ...]
    table: RoutingTable
    gateway: ServerSpec | None = None  # when the manifest has a gateway: block


def manifest_digest(path: Path) -> str:
    """Digest of the manifest file's bytes (a saved plan is tied to them)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:24]


def resolve_models(
    loaded: LoadedManifest,
    *,
    cache_dir: Path | None = None,
    download: bool = False,
) -> tuple[dict[str, ResolvedModel], list[str]]:
    """Resolve every model a server uses: (resolved by name, names not available locally).

    Without ``download`` nothing is fetched; a missing model is listed instead.
    """
    from batuta.runtime.sources import default_cache_dir, is_available, resolve_model

    cache = cache_dir or default_cache_dir()
    base = loaded.path.parent
    manifest = loaded.manifest
    used = sorted({s.model for s in manifest.servers.values()})
    resolved: dict[str, ResolvedModel] = {}
    missing: list[str] = []
    issues: list[ManifestIssue] = []
    for name in used:
        model = manifest.models[name]
        if not download and not is_available(model, base, cache):
            missing.append(name)
            continue
        try:
            resolved[name] = resolve_model(model, base_dir=base, cache_dir=cache, download=download)
        except ModelSourceError as exc:
            issues.append(_model_issue(loaded, name, str(exc)))
    if issues:
        raise ManifestError(issues)
    return resolved, missing


def _model_issue(loaded: LoadedManifest, name: str, message: str) -> ManifestIssue:
    """Point a model problem found on disk at the manifest line that declares it."""
    field = "quantization" if "quantization" in message else "source"
    dotted = f"models.{name}.{field}"
    line, col = loaded.position(dotted)
    return ManifestIssue(loaded.display or str(loaded.path), line, col, dotted, message)


def _free(host: str, port: int) -> bool:
    from batuta.runtime.ports import port_free

    return port_free(host, port)


def _ports(loaded: LoadedManifest, statuses: Mapping[str, ServerStatus]) -> dict[str, int]:
    """A port for every server that declares none, stable from one plan to the next.

    A server keeps the port it was given before; a new one takes the first port of
    ``defaults.port_range`` that no declared, recorded or listening server holds.
    """
    manifest = loaded.manifest
    mine = str(loaded.path)
    taken = {s.port for s in manifest.servers.values() if s.port is not None}
    if wants_gateway(loaded):  # a server given no port must not take the gateway's
        from batuta.manifest.model import parse_listen

        taken.add(parse_listen(manifest.gateway.listen)[1])
    taken |= {
        st.spec.port
        for st in statuses.values()
        if not owned_by(st, mine) and st.state in LIVE_STATES
    }
    chosen: dict[str, int] = {}
    unported = sorted(n for n, s in manifest.servers.items() if s.port is None)
    for name in unported:
        status = statuses.get(name)
        if status is not None and owned_by(status, mine) and status.spec.port not in taken:
            chosen[name] = status.spec.port
            taken.add(status.spec.port)
    low, high = manifest.defaults.port_range
    candidates = iter(range(low, high + 1))
    for name in unported:
        if name in chosen:
            continue
        host = manifest.servers[name].host
        for port in candidates:
            if port not in taken and _free(host, port):
                chosen[name] = port
                taken.add(port)
                break
        else:
            from batuta.errors import RuntimeStartError

            raise RuntimeStartError(f"no free port left in port_range {low}-{high} for {name!r}")
    return chosen


def desired_state(
    loaded: LoadedManifest,
    statuses: Mapping[str, ServerStatus],
    *,
    resolved: Mapping[str, ResolvedModel] | None = None,
    cache_dir: Path | None = None,
) -> Desired:
    """Launch specs, pending pulls and the routing table the manifest asks for."""
    from batuta.runtime.launch import build_spec
    from batuta.runtime.sources import ResolvedModel

    manifest = loaded.manifest
    if resolved is None:
        resolved, missing = resolve_models(loaded, cache_dir=cache_dir)
    else:
        used = {s.model for s in manifest.servers.values()}
        missing = sorted(used - set(resolved))
    ports = _ports(loaded, statuses)
    specs: dict[str, ServerSpec] = {}
    pending: dict[str, str] = {}
    templates: dict[str, dict[str, OptionValue]] = {}
    for name, server in sorted(manifest.servers.items()):
        if server.port is None:
            server = server.model_copy(update={"port": ports[name]})
        model = resolved.get(server.model)
        if model is None:
            # Not downloaded yet: the spec names the source until the pull says where.
            source = manifest.models[server.model].source
            model = ResolvedModel(path=Path(source), source=source, registry="pending")
            pending[name] = server.model
        templates[name] = template_options(model.metadata)
        spec = build_spec(
            name,
            server,
            model,
            origin="manifest",
            manifest=str(loaded.path),
            defaults=manifest.defaults,
        )
        spec = _with_env_refs(spec, name, server, loaded)
        local = None if name in pending else model.path
        spec = with_memory(spec, server.memory, local, manifest.defaults.memory_budget)
        if name in pending:
            placeholder = model.ref  # Path() folded "hf://" into "hf:/": show the source
            argv = tuple(source if a == placeholder else a for a in spec.argv)
            spec = dataclasses.replace(spec, model_path=source, argv=argv)
        specs[name] = spec
    pulls = tuple(
        ModelPull(
            name=m,
            source=manifest.models[m].source,
            servers=tuple(sorted(s for s, mm in pending.items() if mm == m)),
        )
        for m in missing
    )
    table = build_table(loaded, specs, templates=templates)
    gateway = desired_gateway(loaded)
    return Desired(specs=specs, pending=pending, pulls=pulls, table=table, gateway=gateway)


def _with_env_refs(
    spec: ServerSpec, name: str, server: Server, loaded: LoadedManifest
) -> ServerSpec:
    """Put ``${env:VAR}`` back where the manifest wrote it, so state.json (and the config
    hash) hold the reference, never the value; the supervisor expands it at launch."""
    refs = loaded.env_refs
    env = dict(spec.env)
    for key in server.env:
        ref = refs.get(f"servers.{name}.env.{key}")
        if ref is not None:
            env[key] = ref
    argv = list(spec.argv)
    for i, arg in enumerate(server.args):
        ref = refs.get(f"servers.{name}.args[{i}]")
        if ref is not None and arg in argv:
            argv[len(argv) - 1 - argv[::-1].index(arg)] = ref
    return dataclasses.replace(spec, env=env, argv=tuple(argv))


def secrets_of(loaded: LoadedManifest) -> frozenset[str]:
    """Server env and args values that came from ``${env:...}``: shown as (sensitive)."""
    out: set[str] = set()
    for name, server in loaded.manifest.servers.items():
        for key, value in server.env.items():
            if f"servers.{name}.env.{key}" in loaded.from_env:
                out.add(value)
        for i, arg in enumerate(server.args):
            if f"servers.{name}.args[{i}]" in loaded.from_env:
                out.add(arg)
    return frozenset(v for v in out if v)


def plan_from(
    loaded: LoadedManifest,
    observation: Observation,
    *,
    desired: Desired | None = None,
    cache_dir: Path | None = None,
) -> Plan:
    """The plan that makes ``observation`` match ``loaded``."""
    statuses, gateway = split_gateway(observation.statuses)
    if desired is None:
        desired = desired_state(loaded, statuses, cache_dir=cache_dir)
    plan = diff(
        desired.specs,
        statuses,
        desired.table,
        observation.table,
        manifest=str(loaded.path),
        health=observation.health,
        pending=desired.pending,
        pulls=desired.pulls,
        fingerprint=observation.fingerprint,
        manifest_digest=manifest_digest(loaded.path),
        state_dir=str(loaded.state_dir),
        secrets=secrets_of(loaded),
    )
    health = observation.health.get(GATEWAY)
    change = gateway_change(desired.gateway, gateway, manifest=plan.manifest, health=health)
    plan = dataclasses.replace(plan, gateway=change)
    notes = tuple(f"deprecated: {w}" for w in loaded.warnings)
    clash = gateway_port_problem(loaded, change, desired.specs)
    if clash:
        notes += (f"apply will refuse to start the gateway: {clash}",)
    if observation.table_error:
        notes += (f"{observation.table_error}; apply rewrites it",)
    if notes:
        plan = Plan(**{**plan.__dict__, "notes": (*plan.notes, *notes)})
    return plan


def make_plan(
    path: str | os.PathLike[str] | None = None,
    *,
    probe_health: bool = True,
    cache_dir: Path | None = None,
) -> Plan:
    """Load the manifest (``path``, $BATUTA_FILE or ./batuta.yaml), observe, and diff."""
    from batuta.manifest import load_manifest

    loaded = load_manifest(path)
    observation = observe(loaded.state_dir, probe_health=probe_health)
    return plan_from(loaded, observation, cache_dir=cache_dir)
