"""Targets named on the command line, and the privacy check every route passes at query time.

``--endpoint`` accepts, in this order: a target name from the routing table, a URL, a
``HOST:PORT`` (a bare OpenAI-compatible server such as llama.cpp), or a catalogue backend
(a provider such as ``together``, or a local backend on its default port). ``--backend``
alone means that backend's default local URL. Keys are checked by variable *name*: a
missing one is an error naming the variable, never showing a value.

:func:`check_privacy` re-checks a route's targets against its tier when a query runs, so a
hand-edited ``routes.json`` cannot make a sovereign route send a byte off the machine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from batuta._util.fuzzy import did_you_mean
from batuta._util.net import is_loopback, is_sovereign
from batuta._util.ollama_host import ollama_base_url
from batuta.backends.types import Target
from batuta.catalogue import CATALOGUE, Backend, allowed_in_tier, lookup
from batuta.errors import RoutingError
from batuta.routing.table import RouteEntry, RoutingTable, TargetEntry
from batuta.selection import PRIVACY_TIERS

if TYPE_CHECKING:
    from batuta.backends.base import Adapter

BARE_BACKEND = "llamacpp"  # what a bare URL or HOST:PORT speaks unless --backend says
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-_]+):(\d{1,5})$")


def check_privacy(route: RouteEntry) -> None:
    """Refuse a route whose targets break its privacy tier, naming the first such target."""
    tier = route.privacy
    if tier not in PRIVACY_TIERS:
        raise RoutingError(f"route {route.name!r} has an unknown privacy tier {tier!r}")
    if tier == "standard":
        return
    for entry in route.targets:
        where = f"route {route.name!r} is {tier}, but its target {entry.name!r}"
        backend = lookup(entry.backend)
        if backend is None:
            raise RoutingError(f"{where} uses an unknown backend {entry.backend!r}; refusing")
        if not allowed_in_tier(backend, tier):
            raise RoutingError(
                f"{where} is {backend.display} ({backend.privacy.value}); refusing to send "
                "the prompt. The routing table does not match the manifest: run `batuta apply`."
            )
        if tier == "sovereign" and not is_sovereign(entry.base_url):
            raise RoutingError(
                f"{where} points at {entry.base_url!r}, which is not this machine; refusing"
            )


def entry_for(target: Target, pricing: tuple[float, float] | None = None) -> TargetEntry:
    """The routing-table form of a bare target."""
    return TargetEntry(
        name=target.name, backend=target.backend, protocol=target.protocol,
        base_url=target.base_url, model=target.model, local=target.local,
        api_key_env=target.api_key_env, options=dict(target.options), pricing=pricing,
    )  # fmt: skip


def target_of(entry: TargetEntry) -> Target:
    """The adapter-facing view of a routing-table entry."""
    return Target(
        name=entry.name,
        backend=entry.backend,
        protocol=entry.protocol,
        base_url=entry.base_url,
        model=entry.model,
        api_key_env=entry.api_key_env,
        options=dict(entry.options),
        local=entry.local,
    )


def require_key(target: Target) -> None:
    """Fail before sending when the target's backend needs a key that is not set."""
    backend = lookup(target.backend)
    env = target.api_key_env
    if backend is not None and backend.key_required and env and not os.environ.get(env):
        raise RoutingError(f"{target.name}: set the environment variable {env} to your API key")


def _known(name: str) -> Backend:
    backend = lookup(name)
    if backend is None:
        hint = did_you_mean(name.lower(), CATALOGUE, cutoff=0.6)
        raise RoutingError(f"unknown backend {name!r}{hint}; see `batuta serve backends`")
    return backend


def _local_url(backend: Backend, port: int | None) -> str:
    if backend.key == "ollama" and port is None and os.environ.get("OLLAMA_HOST"):
        return ollama_base_url()
    return backend.url(port)


def backend_target(name: str, *, model: str | None = None, port: int | None = None) -> Target:
    """``--backend NAME``: a local backend on its default URL (or ``port``), or a provider."""
    backend = _known(name)
    if not backend.local:
        return _provider_target(backend, model)
    url = _local_url(backend, port)
    return Target(
        name=f"{backend.key}@{urlsplit(url).netloc}", backend=backend.key,
        protocol=backend.protocol, base_url=url, model=model or "",
        api_key_env=backend.api_key_env, local=is_loopback(url),
    )  # fmt: skip


def _provider_target(backend: Backend, model: str | None) -> Target:
    if not backend.base_url or "{" in backend.base_url:
        raise RoutingError(
            f"{backend.key} needs a deployment-specific URL: declare it under `endpoints:` "
            "in batuta.yaml (with base_url/options) and query it through a route"
        )
    if not model:
        raise RoutingError(f"--model is required to query {backend.key} directly")
    target = Target(
        name=backend.key, backend=backend.key, protocol=backend.protocol,
        base_url=backend.base_url, model=model, api_key_env=backend.api_key_env,
    )  # fmt: skip
    require_key(target)
    return target


def _url_target(url: str, backend_name: str | None, model: str | None) -> Target:
    backend = _known(backend_name or BARE_BACKEND)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RoutingError(f"{url!r} is not an http(s) URL")
    return Target(
        name=parts.netloc, backend=backend.key, protocol=backend.protocol,
        base_url=url.rstrip("/"), model=model or "", api_key_env=backend.api_key_env,
        local=is_loopback(url),
    )  # fmt: skip


def table_target(table: RoutingTable | None, name: str) -> TargetEntry | None:
    """The first target called ``name`` in any route of the table."""
    if table is None:
        return None
    for route in table.routes.values():
        for entry in route.targets:
            if entry.name == name:
                return entry
    return None


def resolve_endpoint(
    spec: str,
    *,
    model: str | None = None,
    backend: str | None = None,
    table: RoutingTable | None = None,
) -> Target:
    """Turn an ``--endpoint`` value into a target (see the module docstring for the order)."""
    entry = table_target(table, spec)
    if entry is not None:
        target = target_of(entry)
        if model:
            target = dataclasses.replace(target, model=model)
        require_key(target)
        return target
    if "://" in spec:
        return _url_target(spec, backend, model)
    match = _HOST_PORT.match(spec)
    if match:
        if not 0 < int(match.group(2)) < 65536:
            raise RoutingError(f"{spec!r}: port out of range")
        return _url_target(f"http://{spec}", backend, model)
    record = lookup(spec)
    if record is not None:
        return backend_target(record.key, model=model)
    names = sorted({e.name for r in (table.routes.values() if table else ()) for e in r.targets})
    hint = did_you_mean(spec, [*names, *CATALOGUE], cutoff=0.6)
    raise RoutingError(
        f"unknown endpoint {spec!r}{hint}: not a target in the routing table, a URL, "
        "HOST:PORT, or a backend from `batuta serve backends`"
    )


async def served_model(adapter: Adapter, timeout: float | None = None) -> str | None:
    """The model to ask ``adapter``'s target for: its own, else the first one its server
    lists (vLLM and Ollama need the name; llama.cpp ignores it). None when the adapter
    cannot list models or the server lists none; an error while asking propagates (a
    TimeoutError after ``timeout`` seconds)."""
    if adapter.target.model:
        return adapter.target.model
    names = await asyncio.wait_for(adapter.models(), timeout)
    return str(names[0]) if names else None
