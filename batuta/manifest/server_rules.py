"""Rules of ``servers:``: a local backend that exists, a model it can load (format and
quantization), a pinned engine that is installed, ports that do not collide, and keys and
environment variables named properly.

Separate from the other sections' rules: what a server needs is about this machine and
the backend batuta runs, not about where prompts go.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from batuta._util.fuzzy import did_you_mean
from batuta.catalogue import ALIASES, Backend, ModelFormat, local_backends, lookup
from batuta.manifest.keys import KEY_ITSELF, looks_like_secret
from batuta.manifest.model import Server
from batuta.manifest.model_rules import known_quants, quantization_supported
from batuta.manifest.problems import Loc, Problem, Scope, names
from batuta.selection import llama_server_command

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def server_problems(scope: Scope) -> Iterator[Problem]:
    """Everything wrong with each entry of ``servers:`` beyond its shape."""
    ports: dict[tuple[str, int], str] = {}
    for name, server in scope.m.servers.items():
        loc: Loc = ("servers", name)
        backend = lookup(server.backend)
        if backend is None:
            keys = [b.key for b in local_backends()]
            hint = did_you_mean(server.backend.lower(), [*keys, *ALIASES])
            yield Problem(
                (*loc, "backend"),
                f"unknown backend {server.backend!r}{hint}; local backends: {names(keys)}",
            )
        elif not backend.local:
            yield Problem(
                (*loc, "backend"),
                f"{backend.key} is a remote API, not a server batuta runs: declare it under"
                f" endpoints: with provider: {backend.key}",
            )
        yield from _model(scope, name, server.model, backend)
        if server.engine is not None and backend is not None and backend.local:
            yield from _engine(loc, server, backend)
        if server.port is not None:
            host = "127.0.0.1" if server.host == "localhost" else server.host
            wildcard = host in ("0.0.0.0", "::")
            clash = next(
                (
                    other
                    for (h, p), other in ports.items()
                    if p == server.port and (h == host or wildcard or h in ("0.0.0.0", "::"))
                ),
                None,
            )
            if clash is not None:
                yield Problem(
                    (*loc, "port"), f"port {server.port} is already used by servers.{clash}"
                )
            else:
                ports[(host, server.port)] = name
        for var in server.env:
            if not _ENV_NAME.match(var):
                yield Problem((*loc, "env", var), "is not a valid environment variable name")
        if server.ready_timeout <= 0:
            yield Problem((*loc, "ready_timeout"), "must be longer than 0s")
        if server.api_key_env is not None:
            yield from _key((*loc, "api_key_env"), server.api_key_env, backend)


def _key(loc: Loc, env: str, backend: Backend | None) -> Iterator[Problem]:
    if looks_like_secret(env):
        yield Problem(loc, KEY_ITSELF)
    elif backend is not None and backend.local and not backend.takes_key():
        yield Problem(
            loc,
            f"batuta does not know how to give {backend.display} an API key: pass it with"
            " args: or env: instead",
        )


def _engine(loc: Loc, server: Server, backend: Backend) -> Iterator[Problem]:
    # Checked against this machine: a pinned engine that is absent would only fail at
    # apply time, after the plan said it would start.
    if not any(recipe.engine for recipe in backend.launch):
        having = [b.key for b in local_backends() if any(r.engine for r in b.launch)]
        which = "backend" if len(having) == 1 else "backends"
        yield Problem(
            (*loc, "engine"), f"only {which} {names(having)} has engines, not {backend.key}"
        )
    elif (
        backend.key == "llamacpp"
        and server.executable is None
        and llama_server_command(engine=server.engine) is None
    ):
        if server.engine == "server":
            why = (
                "llama-server not found on PATH, beside this Python or in"
                " BATUTA_LLAMA_SERVER (`make install` builds it into .venv/bin)"
            )
        else:
            why = "llama-cpp-python is not installed (pip install 'batuta[llamacpp]')"
        yield Problem((*loc, "engine"), f"engine {server.engine} pinned, but {why}", True)


def _model(scope: Scope, name: str, ref: str, backend: Backend | None) -> Iterator[Problem]:
    loc: Loc = ("servers", name, "model")
    model = scope.m.models.get(ref)
    if model is None:
        if not scope.is_broken("models", ref):
            declared = list(scope.m.models)
            hint = did_you_mean(ref, declared)
            yield Problem(loc, f"unknown model {ref!r}{hint}; declared models: {names(declared)}")
        return
    if backend is None or not backend.local:
        return
    caps = backend.capabilities
    if model.source.lower().startswith("ollama://") and backend.key != "ollama":
        yield Problem(loc, f"models.{ref} comes from ollama:// and only backend ollama serves it")
    if ModelFormat(model.format) not in caps.formats:
        loads = ", ".join(f.value for f in caps.formats)
        yield Problem(
            ("servers", name, "backend"),
            f"{backend.display} cannot load {model.format} models (models.{ref} is"
            f" {model.format}; {backend.key} loads {loads})",
        )
        return
    quant = model.quantization
    if quant and quant.upper() in known_quants() and not quantization_supported(backend, quant):
        why = " (no K-quants)" if backend.key == "vllm" and "_K" in quant.upper() else ""
        yield Problem(
            ("servers", name, "backend"),
            f"{backend.display} does not support quantization {quant}{why} of models.{ref};"
            f" it supports {', '.join(caps.quantization)}",
        )
