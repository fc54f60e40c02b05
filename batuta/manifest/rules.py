"""Cross-field rules: what the JSON Schema cannot say about a manifest.

References resolve (servers name models, routes name servers and endpoints), backends and
providers exist in the catalogue and are used where they belong, a backend can load the
model's format and quantization, ports do not collide, routes respect their privacy tier,
keys are referenced by variable name only, and budgets limit something that costs money.
Routes that leave out ``targets`` get them here, in the order the selector recommends.

Each rule yields a :class:`Problem` (where, and one message). Entries an earlier stage
already reported as broken are skipped, so one mistake gives one message.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from batuta._util.fuzzy import did_you_mean
from batuta._util.net import host_of, is_localhost_name, is_loopback, resolves_to_loopback
from batuta.catalogue import (
    ALIASES,
    CATALOGUE,
    Backend,
    ModelFormat,
    Privacy,
    local_backends,
    lookup,
    tier_allows,
)
from batuta.manifest.model import Manifest, Route, Server, parse_listen
from batuta.manifest.schemes import SOURCE_HINT, SOURCE_SCHEMES
from batuta.selection import llama_server_command, order_targets

Loc = tuple[str | int, ...]
SECTIONS = ("models", "servers", "endpoints", "routes")

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Prefixes of real providers' keys; a value starting with one is a key, not a variable name.
_KEY_PREFIXES = ("sk-", "sk_", "gsk_", "hf_", "xai-", "r8_", "fw_", "pk-", "AKIA", "AIza", "ghp_")


def _known_quants() -> frozenset[str]:
    # Computed when asked: the full catalogue includes plugins, loaded only when needed.
    return frozenset(q.upper() for b in CATALOGUE.values() for q in b.capabilities.quantization)


_KEY_ITSELF = (
    "this looks like an API key itself (not shown): keys never go in the manifest; put the"
    " key in an environment variable and name that variable"
)
_EXTENSIONS = {".gguf": "gguf", ".safetensors": "safetensors", ".onnx": "onnx", ".bin": "pytorch"}


@dataclass(frozen=True)
class Problem:
    """One thing wrong at ``loc`` (a path of keys and list indices)."""

    loc: Loc
    message: str
    at_value: bool = False  # point at the value rather than its key


@dataclass
class Checked:
    """What the rules found, and every route's targets (declared or chosen)."""

    problems: list[Problem] = field(default_factory=list)
    route_targets: dict[str, list[str]] = field(default_factory=dict)
    route_reasons: dict[str, str] = field(default_factory=dict)


def looks_like_secret(value: str) -> bool:
    """Whether ``value`` looks like an API key rather than an environment variable name."""
    if value.startswith(_KEY_PREFIXES):
        return True
    has_lower = any(c.islower() for c in value)
    has_digit = any(c.isdigit() for c in value)
    return len(value) > 64 or (len(value) >= 24 and has_lower and has_digit)


def known_quantization(quantization: str) -> bool:
    """Whether some backend of the catalogue knows ``quantization`` (case-insensitive)."""
    return quantization.upper() in _known_quants()


def quantization_supported(backend: Backend, quantization: str) -> bool:
    """Whether ``backend`` loads models quantized as ``quantization`` (case-insensitive)."""
    return quantization.upper() in {q.upper() for q in backend.capabilities.quantization}


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


def _server_key(loc: Loc, env: str, backend: Backend | None) -> Iterator[Problem]:
    if looks_like_secret(env):
        yield Problem(loc, _KEY_ITSELF)
    elif backend is not None and backend.local and not backend.takes_key():
        yield Problem(
            loc,
            f"batuta does not know how to give {backend.display} an API key: pass it with"
            " args: or env: instead",
        )


def _names(names: Collection[str]) -> str:
    return ", ".join(names) if names else "none"


class _Rules:
    def __init__(
        self, manifest: Manifest, broken: Collection[tuple[str, str]], dropped: Collection[Loc]
    ) -> None:
        self.m = manifest
        self.broken = set(broken)
        self.dropped = set(dropped)

    def is_broken(self, section: str, name: str) -> bool:
        return (section, name) in self.broken or (section, "*") in self.broken

    # -- models --------------------------------------------------------------------
    def models(self) -> Iterator[Problem]:
        for name, model in self.m.models.items():
            loc: Loc = ("models", name)
            match = _SCHEME.match(model.source)
            scheme = match.group(1).lower() if match else ""
            rest = match.group(2) if match else model.source
            if match and scheme not in SOURCE_SCHEMES:
                yield Problem(
                    (*loc, "source"),
                    f"unsupported source scheme {scheme}://{did_you_mean(scheme, SOURCE_SCHEMES)};"
                    f" {SOURCE_HINT}",
                )
            elif scheme == "pkg" and rest.count("/") < 1:
                yield Problem((*loc, "source"), "pkg:// sources are pkg://PACKAGE/PATH/IN/PACKAGE")
            elif scheme == "hf" and rest.count("/") < 1:
                yield Problem((*loc, "source"), "hf:// sources are hf://ORG/REPO[/FILE]")
            elif scheme == "http" and not model.sha256:
                # Nothing authenticates plain http: the pin is the only proof of the bytes.
                yield Problem(
                    (*loc, "source"),
                    "an http:// download is not authenticated: pin it with sha256: "
                    "(the file's digest) or use https://",
                )
            elif not rest.strip():
                yield Problem((*loc, "source"), "is empty")
            for ext, fmt in _EXTENSIONS.items():
                if rest.lower().endswith(ext) and model.format != fmt:
                    yield Problem(
                        (*loc, "format"),
                        f"is {model.format!r} but the source is a {ext} file (format: {fmt}?)",
                    )
            quant = model.quantization
            if quant is not None and quant.upper() not in _known_quants():
                hint = did_you_mean(quant.upper(), sorted(_known_quants()))
                yield Problem(
                    (*loc, "quantization"),
                    f"unknown quantization {quant!r}{hint}; known: GGUF types such as Q4_K_M,"
                    " Q4_1, Q8_0, F16; EXL2; AWQ, GPTQ, FP8",
                )

    # -- servers -------------------------------------------------------------------
    def servers(self) -> Iterator[Problem]:
        ports: dict[tuple[str, int], str] = {}
        for name, server in self.m.servers.items():
            loc: Loc = ("servers", name)
            backend = lookup(server.backend)
            if backend is None:
                keys = [b.key for b in local_backends()]
                hint = did_you_mean(server.backend.lower(), [*keys, *ALIASES])
                yield Problem(
                    (*loc, "backend"),
                    f"unknown backend {server.backend!r}{hint}; local backends: {_names(keys)}",
                )
            elif not backend.local:
                yield Problem(
                    (*loc, "backend"),
                    f"{backend.key} is a remote API, not a server batuta runs: declare it under"
                    f" endpoints: with provider: {backend.key}",
                )
            yield from self._server_model(name, server.model, backend)
            if server.engine is not None and backend is not None and backend.local:
                yield from self._server_engine(loc, server, backend)
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
                yield from _server_key((*loc, "api_key_env"), server.api_key_env, backend)

    def _server_engine(self, loc: Loc, server: Server, backend: Backend) -> Iterator[Problem]:
        # Checked against this machine: a pinned engine that is absent would only fail at
        # apply time, after the plan said it would start.
        if not any(recipe.engine for recipe in backend.launch):
            having = [b.key for b in local_backends() if any(r.engine for r in b.launch)]
            which = "backend" if len(having) == 1 else "backends"
            yield Problem(
                (*loc, "engine"), f"only {which} {_names(having)} has engines, not {backend.key}"
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

    def _server_model(self, name: str, ref: str, backend: Backend | None) -> Iterator[Problem]:
        loc: Loc = ("servers", name, "model")
        model = self.m.models.get(ref)
        if model is None:
            if not self.is_broken("models", ref):
                declared = list(self.m.models)
                hint = did_you_mean(ref, declared)
                yield Problem(
                    loc, f"unknown model {ref!r}{hint}; declared models: {_names(declared)}"
                )
            return
        if backend is None or not backend.local:
            return
        caps = backend.capabilities
        if model.source.lower().startswith("ollama://") and backend.key != "ollama":
            yield Problem(
                loc, f"models.{ref} comes from ollama:// and only backend ollama serves it"
            )
        if ModelFormat(model.format) not in caps.formats:
            loads = ", ".join(f.value for f in caps.formats)
            yield Problem(
                ("servers", name, "backend"),
                f"{backend.display} cannot load {model.format} models (models.{ref} is"
                f" {model.format}; {backend.key} loads {loads})",
            )
            return
        quant = model.quantization
        if (
            quant
            and quant.upper() in _known_quants()
            and not quantization_supported(backend, quant)
        ):
            why = " (no K-quants)" if backend.key == "vllm" and "_K" in quant.upper() else ""
            yield Problem(
                ("servers", name, "backend"),
                f"{backend.display} does not support quantization {quant}{why} of models.{ref};"
                f" it supports {', '.join(caps.quantization)}",
            )

    # -- endpoints -----------------------------------------------------------------
    def endpoints(self) -> Iterator[Problem]:
        for name, endpoint in self.m.endpoints.items():
            loc: Loc = ("endpoints", name)
            if name in self.m.servers:
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
                yield Problem((*loc, "api_key_env"), _KEY_ITSELF)
            if endpoint.pricing is not None and min(endpoint.pricing) < 0:
                yield Problem((*loc, "pricing"), "prices cannot be negative")
            if backend is None:
                hint = did_you_mean(endpoint.provider.lower(), [*CATALOGUE, *ALIASES])
                yield Problem(
                    (*loc, "provider"),
                    f"unknown provider {endpoint.provider!r}{hint}; see `batuta serve backends`",
                )
                continue
            yield from self._endpoint_provider(loc, endpoint.base_url, endpoint.options, backend)
            if backend.key_required and endpoint.api_key_env is None:
                yield Problem(
                    (*loc, "api_key_env"),
                    f"{backend.display} needs an API key: name the variable that holds it,"
                    f" e.g. api_key_env: {backend.api_key_env}",
                )

    def _endpoint_provider(
        self, loc: Loc, base_url: str | None, options: Mapping[str, object], backend: Backend
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
                yield Problem(
                    (*loc, "options"), f"provider {backend.key} needs {needs} (or base_url)"
                )

    # -- defaults ------------------------------------------------------------------
    def defaults(self) -> Iterator[Problem]:
        low, high = self.m.defaults.port_range
        if not 1 <= low <= high <= 65535:
            yield Problem(
                ("defaults", "port_range"), "must be [low, high] with 1 <= low <= high <= 65535"
            )
        for key in ("timeout", "ready_timeout"):
            if getattr(self.m.defaults, key) <= 0:
                yield Problem(("defaults", key), "must be longer than 0s")

    # -- gateway -------------------------------------------------------------------
    def gateway(self) -> Iterator[Problem]:
        host, _ = parse_listen(self.m.gateway.listen)  # the model checked its form
        if not is_loopback(host):
            yield Problem(
                ("gateway", "listen"),
                f"{host!r} is not this machine: the gateway takes no API keys yet, so it may"
                " listen on a loopback address only (127.0.0.1, ::1 or localhost)",
                at_value=True,
            )

    def aliases(self) -> Iterator[Problem]:
        """A name a client sends as ``model`` must mean one thing: an alias may not repeat a
        route, server or endpoint name, nor another alias."""
        owners = {name: f"route {name!r}" for name in self.m.routes}
        for name in self.m.servers:
            owners.setdefault(name, f"server {name!r}")
        for name in self.m.endpoints:
            owners.setdefault(name, f"endpoint {name!r}")
        for name, route in self.m.routes.items():
            for i, alias in enumerate(route.aliases):
                taken = owners.get(alias)
                if taken is not None:
                    yield Problem(
                        ("routes", name, "aliases", i),
                        f"{alias!r} is already the name of {taken}; an alias must be a name of"
                        " its own",
                        at_value=True,
                    )
                    continue
                owners[alias] = f"an alias of route {name!r}"

    # -- routes --------------------------------------------------------------------
    def target_privacy(self, name: str) -> tuple[Privacy, str] | None:
        """Where a target sends prompts, and how to describe it; None when unresolvable."""
        if name in self.m.servers:
            backend = lookup(self.m.servers[name].backend)
            return (Privacy.LOCAL, "a local server") if backend and backend.local else None
        endpoint = self.m.endpoints.get(name)
        backend = lookup(endpoint.provider) if endpoint else None
        if endpoint is None or backend is None:
            return None
        if backend.local:
            if endpoint.base_url and is_loopback(endpoint.base_url):
                return Privacy.LOCAL, "a server on this machine"
            return Privacy.DEDICATED, f"a server on another machine ({backend.key})"
        if backend.privacy is Privacy.DEDICATED:
            return Privacy.DEDICATED, f"a dedicated cloud deployment ({backend.key})"
        return Privacy.PUBLIC, f"a public API ({backend.key})"

    def routes(self, checked: Checked) -> None:
        for name, route in self.m.routes.items():
            loc: Loc = ("routes", name)
            if route.targets is None:
                self._fill(name, route, checked)
            else:
                checked.problems += self._declared(name, route)
                checked.route_targets[name] = list(route.targets)
                checked.route_reasons[name] = "declared in the manifest"
            checked.problems += self._budget(loc, route, checked.route_targets.get(name, []))
            if route.timeout <= 0:
                checked.problems.append(Problem((*loc, "timeout"), "must be longer than 0s"))
            fbt = route.first_byte_timeout
            if fbt is not None and not 0 < fbt <= route.timeout:
                checked.problems.append(
                    Problem((*loc, "first_byte_timeout"), "must be > 0s and at most timeout")
                )

    def _fill(self, name: str, route: Route, checked: Checked) -> None:
        privacy = route.tier.privacy
        candidates: list[tuple[str, str]] = []
        excluded = 0
        declared = [(t, s.backend) for t, s in self.m.servers.items()]
        declared += [(t, e.provider) for t, e in self.m.endpoints.items()]
        for target, backend in declared:
            where = self.target_privacy(target)
            if where is not None and tier_allows(privacy, where[0]):
                candidates.append((target, backend))
            elif where is not None:
                excluded += 1
        names, why = order_targets(candidates, route.tier)
        if excluded:
            why += f"; {excluded} declared target(s) not allowed in the {privacy} tier"
        checked.route_targets[name] = names
        checked.route_reasons[name] = why
        given = ("routes", name, "targets") in self.dropped  # written, but invalid
        if not names and not given and not any(self.is_broken(s, "*") for s in SECTIONS[1:3]):
            checked.problems.append(
                Problem(
                    ("routes", name),
                    f"has no targets and nothing declared fits its {privacy} tier: add targets:"
                    " or a server/endpoint the tier allows",
                )
            )

    def _declared(self, name: str, route: Route) -> Iterator[Problem]:
        loc: Loc = ("routes", name, "targets")
        targets = route.targets or []
        if not targets:
            empty = "is empty: name servers or endpoints, or leave targets out for batuta to choose"
            yield Problem(loc, empty)
        seen: set[str] = set()
        declared = [*self.m.servers, *self.m.endpoints]
        for i, target in enumerate(targets):
            if target in seen:
                yield Problem((*loc, i), f"{target!r} is listed twice")
                continue
            seen.add(target)
            if target not in self.m.servers and target not in self.m.endpoints:
                if self.is_broken("servers", target) or self.is_broken("endpoints", target):
                    continue
                if target in self.m.models:
                    serving = [s for s, v in self.m.servers.items() if v.model == target]
                    yield Problem(
                        (*loc, i),
                        f"{target!r} is a model; name a server that serves it"
                        f" (servers serving it: {_names(serving)})",
                    )
                else:
                    yield Problem(
                        (*loc, i),
                        f"unknown target {target!r}{did_you_mean(target, declared)}; declared"
                        f" servers and endpoints: {_names(declared)}",
                    )
                continue
            where = self.target_privacy(target)
            if where is not None and not tier_allows(route.tier.privacy, where[0]):
                allowed = "local servers"
                if route.tier.privacy == "private":
                    allowed += " and dedicated deployments"
                yield Problem(
                    (*loc, i),
                    f"{target!r} is {where[1]}, but this route's privacy tier is"
                    f" {route.tier.privacy} ({allowed} only)",
                )

    def _budget(self, loc: Loc, route: Route, targets: list[str]) -> Iterator[Problem]:
        budget = route.budget
        if budget is None:
            return
        if budget.daily_usd is None and budget.per_request_usd is None:
            yield Problem(
                (*loc, "budget"), "sets no limit: give daily_usd, per_request_usd or both"
            )
        if (
            budget.daily_usd is not None
            and budget.per_request_usd is not None
            and budget.per_request_usd > budget.daily_usd
        ):
            yield Problem((*loc, "budget", "per_request_usd"), "is larger than daily_usd")
        known = [t for t in targets if self.target_privacy(t) is not None]
        if len(known) == len(targets) and not any(self._paid(t) for t in targets):
            yield Problem(
                (*loc, "budget"),
                "has nothing to limit: every target of this route is free (local servers, or"
                " endpoints without a price); set endpoints' pricing: or drop the budget",
            )

    def _paid(self, target: str) -> bool:
        endpoint = self.m.endpoints.get(target)
        backend = lookup(endpoint.provider) if endpoint else None
        if endpoint is None or backend is None or backend.local:
            return False
        pricing = endpoint.pricing if endpoint.pricing is not None else backend.pricing
        return pricing is not None and max(pricing) > 0


def check(
    manifest: Manifest, broken: Collection[tuple[str, str]] = (), dropped: Collection[Loc] = ()
) -> Checked:
    """Apply every rule; ``broken`` names (section, entry) pairs (entry ``*``: the whole
    section) that failed earlier validation, so references to them are not reported again;
    ``dropped`` the locations of values that failed (their defaults stand in for them)."""
    rules = _Rules(manifest, broken, dropped)
    checked = Checked()
    checked.problems += [*rules.models(), *rules.servers(), *rules.endpoints(), *rules.defaults()]
    checked.problems += [*rules.gateway(), *rules.aliases()]
    from batuta.manifest.ondemand import problems as ondemand_problems  # it imports Problem

    checked.problems += ondemand_problems(manifest)
    rules.routes(checked)
    return checked
