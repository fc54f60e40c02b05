"""Rules of ``endpoints:``: a provider that exists, a URL batuta can reach (or the options
that fill the provider's own), a key named by its variable, and prices that make sense.

Separate from the servers' rules: an endpoint is a service batuta only talks to.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from urllib.parse import urlsplit

from batuta._util.fuzzy import did_you_mean
from batuta._util.net import host_of, is_localhost_name, resolves_to_loopback
from batuta.catalogue import ALIASES, CATALOGUE, Backend, lookup
from batuta.manifest.keys import KEY_ITSELF, looks_like_secret
from batuta.manifest.problems import Loc, Problem, Scope


def endpoint_problems(scope: Scope) -> Iterator[Problem]:
    """Everything wrong with each entry of ``endpoints:`` beyond its shape."""
    for name, endpoint in scope.m.endpoints.items():
        loc: Loc = ("endpoints", name)
        if name in scope.m.servers:
            clash = f"{name!r} is also the name of a server; route targets need unique names"
            yield Problem(loc, clash)
        backend = lookup(endpoint.provider)
        if endpoint.base_url is not None:
            url = urlsplit(endpoint.base_url)
            if url.scheme not in ("http", "https") or not url.netloc:
                yield Problem((*loc, "base_url"), "must be an http:// or https:// URL")
            else:
                yield from _localhost_name((*loc, "base_url"), endpoint.base_url)
        if endpoint.api_key_env is not None and looks_like_secret(endpoint.api_key_env):
            yield Problem((*loc, "api_key_env"), KEY_ITSELF)
        if endpoint.pricing is not None and min(endpoint.pricing) < 0:
            yield Problem((*loc, "pricing"), "prices cannot be negative")
        if backend is None:
            hint = did_you_mean(endpoint.provider.lower(), [*CATALOGUE, *ALIASES])
            yield Problem(
                (*loc, "provider"),
                f"unknown provider {endpoint.provider!r}{hint}; see `batuta serve backends`",
            )
            continue
        yield from _provider(loc, endpoint.base_url, endpoint.options, backend)
        if backend.key_required and endpoint.api_key_env is None:
            yield Problem(
                (*loc, "api_key_env"),
                f"{backend.display} needs an API key: name the variable that holds it,"
                f" e.g. api_key_env: {backend.api_key_env}",
            )


def _localhost_name(loc: Loc, url: str) -> Iterator[Problem]:
    # foo.localhost is this machine by the loopback rule, so it is sent directly (never
    # through a proxy); where the resolver does not know such names it cannot be reached.
    host = host_of(url)
    if is_localhost_name(host) and host != "localhost" and not resolves_to_loopback(host):
        yield Problem(
            loc,
            f"{host} does not resolve to this machine here (this system's resolver does not"
            " answer *.localhost names): use localhost or 127.0.0.1",
            at_value=True,
        )


def _provider(
    loc: Loc, base_url: str | None, options: Mapping[str, object], backend: Backend
) -> Iterator[Problem]:
    if backend.retired_at(base_url):
        yield Problem(
            (*loc, "base_url" if base_url else "provider"),
            f"{backend.display} was retired {backend.retired}: give the base_url of such a"
            " self-hosted service, or choose another provider",
            at_value=True,
        )
        return
    if base_url is not None:
        return
    if backend.local:
        yield Problem(
            (*loc, "base_url"),
            f"{backend.key} is a local backend: give the base_url of the running server"
            f" (e.g. {backend.url()}), or declare it under servers: for batuta to run it",
        )
    elif not backend.base_url:
        yield Problem((*loc, "base_url"), f"provider {backend.key} needs your endpoint's URL")
    else:
        missing = [p for p in re.findall(r"\{(\w+)\}", backend.base_url) if p not in options]
        if missing:
            needs = " and ".join(f"options.{p}" for p in missing)
            yield Problem((*loc, "options"), f"provider {backend.key} needs {needs} (or base_url)")
