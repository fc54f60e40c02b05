"""Resolve a manifest's routes into the routing table that ``apply`` writes.

Each target name becomes a :class:`TargetEntry`: its protocol family (from the catalogue),
its base URL (the launched server's URL, or the endpoint's / catalogue's base URL), the
model id to send, the *name* of the key variable (never its value), pricing, and the health
seen at apply time. A local server whose wire protocol takes a raw prompt (realizar, TGI
native) also gets its model's chat template (GGUF header or model folder) as options, so
the adapter can format the chat the way the model was trained; chat servers apply their
own, except that a llama.cpp-family server (whose chat route closes a trailing assistant
turn) carries its template too, for continuing an answer another target began. Everything here is a pure function of the manifest, the specs and the models' header
facts, so ``plan`` can compute the same table and diff it against the file on disk.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from batuta._util.options import OptionValue
from batuta.catalogue import lookup
from batuta.errors import RoutingError
from batuta.routing.table import RouteEntry, RoutingTable, TargetEntry

if TYPE_CHECKING:
    from batuta.manifest.model import Endpoint, Manifest, Route, Server

# Flags through which a local server is told which model id to report.
_ALIAS_FLAGS = ("--model_alias", "--alias", "-a", "--served-model-name")

# Wire protocols that take a raw prompt: the client must apply the chat template.
COMPLETION_PROTOCOLS = frozenset({"realizar", "tgi"})


class ManifestView(Protocol):
    """What the table needs from a loaded manifest (``batuta.manifest.LoadedManifest``)."""

    @property
    def path(self) -> Path: ...

    @property
    def manifest(self) -> Manifest: ...

    @property
    def route_targets(self) -> dict[str, list[str]]: ...

    @property
    def route_reasons(self) -> dict[str, str]: ...


class LaunchedServer(Protocol):
    """What the table needs from a server's launch spec (``batuta.runtime.spec.ServerSpec``).

    A view, not the type itself: the runtime and the routing table are siblings, and
    ``plan``/``apply`` (above both) hand one's specs to the other.
    """

    @property
    def argv(self) -> tuple[str, ...]: ...

    @property
    def model_path(self) -> str: ...

    @property
    def env(self) -> dict[str, str]: ...

    @property
    def url(self) -> str: ...


def served_model_id(spec: LaunchedServer) -> str:
    """The model id a launched server reports in ``/v1/models`` and accepts in requests.

    An alias flag wins; otherwise llama.cpp, vLLM and friends report the model path they
    were given, and Ollama the tag it pulled.
    """
    argv = spec.argv
    for i, arg in enumerate(argv):
        for flag in _ALIAS_FLAGS:
            if arg == flag and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(flag + "="):
                return arg.split("=", 1)[1]
    return spec.model_path.removeprefix("ollama://")


def health_label(probe_result: str | None) -> str:
    """Map a readiness probe result (ready / loading / down) to the table's vocabulary."""
    if probe_result is None:
        return "unknown"
    return "ready" if probe_result == "ready" else "unhealthy"


def template_options(metadata: Mapping[str, Any]) -> dict[str, OptionValue]:
    """Target options carrying a model's chat template and the special tokens it prints,
    from the model's header facts (``ResolvedModel.metadata``); empty without a template."""
    template = metadata.get("chat_template")
    if not isinstance(template, str) or not template.strip():
        return {}
    options: dict[str, OptionValue] = {"chat_template": template}
    for key in ("bos_token", "eos_token"):
        value = metadata.get(key)
        if isinstance(value, str) and value:
            options[key] = value
    add_bos = metadata.get("add_bos_token")
    if isinstance(add_bos, bool):
        options["add_bos_token"] = add_bos
    return options


def server_target(
    name: str,
    server: Server,
    spec: LaunchedServer,
    health: str,
    template: Mapping[str, OptionValue] | None = None,
) -> TargetEntry:
    """The table entry for a server batuta launches. ``template`` (see
    :func:`template_options`) is kept only when the backend's protocol needs it, or when
    the backend continues an interrupted answer through a raw prompt."""
    backend = lookup(server.backend)
    if backend is None:
        raise RoutingError(f"server {name!r}: unknown backend {server.backend!r}")
    # A local server needs a key when the manifest gives it one (api_key_env), or when the
    # user set the engine's own key variable in its environment.
    key_env = server.api_key_env
    if key_env is None and backend.api_key_env in spec.env:
        key_env = backend.api_key_env
    needs_template = backend.protocol in COMPLETION_PROTOCOLS or backend.dialect.continues_by_prompt
    return TargetEntry(
        name=name,
        backend=backend.key,
        protocol=backend.protocol,
        base_url=spec.url,
        model=served_model_id(spec),
        local=True,
        api_key_env=key_env,
        options={
            **(template if template and needs_template else {}),
            **({"embeddings": True} if server.embeddings else {}),
        },
        health=health,
        on_demand=server.start == "on-demand",
        max_concurrency=server.max_concurrency,
        queue_max=server.queue.max if server.queue else 64,
        queue_timeout=server.queue.timeout if server.queue else 30.0,
    )


def endpoint_target(name: str, endpoint: Endpoint, health: str = "unknown") -> TargetEntry:
    """The table entry for a remote API (or a server batuta does not manage)."""
    backend = lookup(endpoint.provider)
    if backend is None:
        raise RoutingError(f"endpoint {name!r}: unknown provider {endpoint.provider!r}")
    return TargetEntry(
        name=name,
        backend=backend.key,
        protocol=backend.protocol,
        base_url=(endpoint.base_url or backend.base_url).rstrip("/"),
        model=endpoint.model,
        local=backend.local,
        api_key_env=endpoint.api_key_env or backend.api_key_env,
        options=dict(endpoint.options),
        pricing=endpoint.pricing or backend.pricing,
        health=health,
    )


def _route_entry(
    name: str,
    route: Route,
    targets: tuple[TargetEntry, ...],
    manifest: Manifest,
    reason: str,
) -> RouteEntry:
    # A route that leaves timeout/retries unset takes the manifest-wide defaults.
    timeout = route.timeout if "timeout" in route.model_fields_set else manifest.defaults.timeout
    retries = route.retries if "retries" in route.model_fields_set else manifest.defaults.retries
    return RouteEntry(
        name=name,
        latency=route.tier.latency,
        privacy=route.tier.privacy,
        cost=route.tier.cost,
        targets=targets,
        timeout=timeout,
        first_byte_timeout=route.first_byte_timeout,
        retries=retries,
        daily_usd=route.budget.daily_usd if route.budget else None,
        per_request_usd=route.budget.per_request_usd if route.budget else None,
        reason=reason,
        aliases=tuple(route.aliases),
        strategy=route.strategy,
    )


def build_table(
    loaded: ManifestView,
    specs: Mapping[str, LaunchedServer],
    health: Mapping[str, str] | None = None,
    templates: Mapping[str, Mapping[str, OptionValue]] | None = None,
) -> RoutingTable:
    """The routing table for ``loaded``, with local targets at ``specs``' URLs.

    ``health`` maps a server name to its probe result (ready / loading / down); servers
    missing from it, and every endpoint, are recorded as ``unknown``. ``templates`` maps a
    server name to its model's :func:`template_options`; completion-only and llama.cpp-family
    servers carry them.
    """
    manifest = loaded.manifest
    health = health or {}
    templates = templates or {}
    routes: dict[str, RouteEntry] = {}
    for name, route in manifest.routes.items():
        names = loaded.route_targets.get(name, route.targets or [])
        entries: list[TargetEntry] = []
        for target in names:
            if target in manifest.servers:
                if target not in specs:
                    raise RoutingError(f"route {name!r}: server {target!r} has no launch spec")
                label = health_label(health.get(target))
                server = manifest.servers[target]
                template = templates.get(target)
                entries.append(server_target(target, server, specs[target], label, template))
            elif target in manifest.endpoints:
                entries.append(endpoint_target(target, manifest.endpoints[target]))
            else:
                raise RoutingError(
                    f"route {name!r}: target {target!r} is neither a server nor an endpoint"
                )
        reason = loaded.route_reasons.get(name, "")
        routes[name] = _route_entry(name, route, tuple(entries), manifest, reason)
    return RoutingTable(manifest=str(loaded.path), routes=routes)


def without_health(table: RoutingTable) -> RoutingTable:
    """The same table with every target's health reset, for comparing two tables."""
    routes = {
        name: dataclasses.replace(
            route, targets=tuple(dataclasses.replace(t, health="unknown") for t in route.targets)
        )
        for name, route in table.routes.items()
    }
    return dataclasses.replace(table, routes=routes)


def with_health(table: RoutingTable, health: Mapping[str, str], servers: set[str]) -> RoutingTable:
    """``table`` with each server target's health set from probe results (ready / loading
    / down); endpoints stay ``unknown`` (apply never calls a remote API)."""
    routes = {
        name: dataclasses.replace(
            route,
            targets=tuple(
                dataclasses.replace(t, health=health_label(health.get(t.name)))
                if t.name in servers
                else t
                for t in route.targets
            ),
        )
        for name, route in table.routes.items()
    }
    return dataclasses.replace(table, routes=routes)
