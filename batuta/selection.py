"""Backend auto-selection: which backends suit a latency, throughput, cost and privacy tier.

``BackendSelector.recommend()`` starts from the product's selection table::

    (realtime, sovereign) -> realizar, llamacpp
    (realtime, any)       -> groq, realizar
    (any, sovereign)      -> realizar, ollama
    otherwise             -> together, huggingface

then adds the alternatives the throughput, cost and privacy tiers call for (so a
``private`` tier, where the table's picks are all public APIs, still gets an answer), drops
whatever the privacy tier forbids, removes disabled backends and puts preferred ones first.
``order_targets`` uses the same ranking to order a route's targets when the manifest leaves
them out. This module also answers "is this backend usable here?" (installed / key set)
without importing any backend. Only the standard library and the catalogue are imported,
so ``batuta serve tree`` and ``serve select`` stay fast, and so this module sits at the
catalogue's level: the manifest's rules (which order a route's targets) and the router may
both use it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.machinery import PathFinder
from typing import TYPE_CHECKING, Literal, cast, get_args

from batuta._util.fuzzy import did_you_mean
from batuta._util.which import which as _which
from batuta.catalogue import ALIASES, CATALOGUE, Backend, Recipe, allowed_in_tier, lookup
from batuta.errors import BatutaError

LatencyTier = Literal["realtime", "interactive", "batch"]
ThroughputTier = Literal["low", "medium", "high"]
CostTier = Literal["minimal", "balanced", "performance"]
PrivacyTier = Literal["sovereign", "private", "standard"]

LATENCY_TIERS: tuple[str, ...] = get_args(LatencyTier)
THROUGHPUT_TIERS: tuple[str, ...] = get_args(ThroughputTier)
COST_TIERS: tuple[str, ...] = get_args(CostTier)
PRIVACY_TIERS: tuple[str, ...] = get_args(PrivacyTier)

_Pick = tuple[str, str]  # (backend key, why)

_SEED_REALTIME_SOVEREIGN: tuple[_Pick, ...] = (
    ("realizar", "realtime + sovereign: native engine on local hardware, no network hop"),
    ("llamacpp", "realtime + sovereign: reference GGUF engine on local hardware"),
)
_SEED_REALTIME: tuple[_Pick, ...] = (
    ("groq", "realtime: LPU inference, lowest time to first token of the APIs"),
    ("realizar", "realtime: local engine, no network round trip"),
)
_SEED_SOVEREIGN: tuple[_Pick, ...] = (
    ("realizar", "sovereign: PAIML-native engine, prompts stay on this machine"),
    ("ollama", "sovereign: local GGUF server that manages its own models"),
)
_SEED_DEFAULT: tuple[_Pick, ...] = (
    ("together", "fast inference of open models, pay per token"),
    ("huggingface", "serverless inference across providers, pay per token"),
)

_HIGH_THROUGHPUT: tuple[_Pick, ...] = (
    ("vllm", "high throughput: PagedAttention and continuous batching"),
    ("tgi", "high throughput: continuous batching, HF official server"),
)
_REALTIME_ALT: tuple[_Pick, ...] = (
    ("llamacpp", "realtime: local GGUF engine, no network round trip"),
    ("fireworks", "realtime: low-latency hosted inference"),
)
_SOVEREIGN_ALT: tuple[_Pick, ...] = (
    ("llamacpp", "sovereign: reference GGUF engine, runs on this machine"),
    ("llamafile", "sovereign: single-file local server"),
    ("vllm", "sovereign: local GPU server"),
    ("tgi", "sovereign: local HF server"),
    ("candle", "sovereign: Rust-native local server"),
)
_PRIVATE_ALT: tuple[_Pick, ...] = (
    ("azure-openai", "private: a deployment in your own Azure tenant"),
    ("bedrock", "private: AWS-managed models inside your account"),
    ("vertex", "private: Google-managed models inside your project"),
    ("hf-endpoints", "private: a dedicated Hugging Face endpoint"),
    ("llamacpp", "private: local GGUF engine"),
)
_MINIMAL_COST: tuple[_Pick, ...] = (
    ("ollama", "minimal cost: free, runs locally"),
    ("llamacpp", "minimal cost: free, runs locally"),
    ("groq", "minimal cost: lowest per-token price of the hosted APIs"),
)
_PERFORMANCE_COST: tuple[_Pick, ...] = (
    ("openai", "performance: frontier models"),
    ("anthropic", "performance: frontier models"),
)
_GENERAL_ALT: tuple[_Pick, ...] = (
    ("llamacpp", "local GGUF engine, free"),
    ("groq", "fast hosted inference"),
    ("fireworks", "fast hosted inference with function calling"),
)


def backend_key(name: str) -> str:
    """The catalogue key for a backend name or alias; BatutaError with a hint when unknown."""
    backend = lookup(name)
    if backend is None:
        hint = did_you_mean(name.strip().lower(), [*CATALOGUE, *ALIASES])
        raise BatutaError(f"unknown backend {name!r}{hint}; see `batuta serve backends`")
    return backend.key


@dataclass(frozen=True)
class Recommendation:
    """One recommended backend and the one-line reason it was chosen."""

    backend: Backend
    reason: str


if TYPE_CHECKING:
    from typing import Protocol

    class TierLike(Protocol):
        """Anything with the three route tiers (the manifest's ``Tier`` is one)."""

        @property
        def latency(self) -> str: ...
        @property
        def privacy(self) -> str: ...
        @property
        def cost(self) -> str: ...


@dataclass(frozen=True)
class BackendSelector:
    """Requirements for a backend; ``recommend()`` ranks the catalogue against them."""

    latency: LatencyTier = "interactive"
    throughput: ThroughputTier = "medium"
    cost: CostTier = "balanced"
    privacy: PrivacyTier = "standard"
    preferred: tuple[str, ...] = ()
    disabled: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for field, value, allowed in (
            ("latency", self.latency, LATENCY_TIERS),
            ("throughput", self.throughput, THROUGHPUT_TIERS),
            ("cost", self.cost, COST_TIERS),
            ("privacy", self.privacy, PRIVACY_TIERS),
        ):
            if value not in allowed:
                raise BatutaError(
                    f"{field} must be one of {', '.join(allowed)}, not {value!r}"
                    f"{did_you_mean(str(value), allowed)}"
                )
        # Aliases are accepted and normalised so comparisons are by catalogue key.
        object.__setattr__(self, "preferred", tuple(backend_key(n) for n in self.preferred))
        object.__setattr__(self, "disabled", tuple(backend_key(n) for n in self.disabled))

    def seed_choice(self) -> tuple[_Pick, ...]:
        """The product's selection table, before filtering."""
        realtime = self.latency == "realtime"
        sovereign = self.privacy == "sovereign"
        if realtime and sovereign:
            return _SEED_REALTIME_SOVEREIGN
        if realtime:
            return _SEED_REALTIME
        if sovereign:
            return _SEED_SOVEREIGN
        return _SEED_DEFAULT

    def _candidates(self) -> list[_Pick]:
        # The seed table first; then the alternative each other requirement calls for,
        # cost first when it is "minimal" (free beats everything else for that user).
        picks = list(self.seed_choice())
        if self.cost == "minimal":
            picks += _MINIMAL_COST
        if self.throughput == "high":
            picks += _HIGH_THROUGHPUT
        if self.latency == "realtime":
            picks += _REALTIME_ALT
        if self.privacy == "sovereign":
            picks += _SOVEREIGN_ALT
        elif self.privacy == "private":
            picks += _PRIVATE_ALT
        if self.cost == "performance":
            picks += _PERFORMANCE_COST
        picks += _GENERAL_ALT
        return picks

    def recommend(self) -> list[Recommendation]:
        """Backends for these requirements, best first, each with a reason."""
        ranked: dict[str, str] = {}
        for key, why in self._candidates():
            ranked.setdefault(key, why)
        chosen = {
            k: f"preferred; {ranked[k]}" if k in ranked else "preferred" for k in self.preferred
        }
        for key, why in ranked.items():
            chosen.setdefault(key, why)
        result = []
        for key, why in chosen.items():
            backend = CATALOGUE[key]
            if key in self.disabled or not allowed_in_tier(backend, self.privacy):
                continue
            result.append(Recommendation(backend, why))
        return result

    def rejected_preferences(self) -> list[tuple[str, str]]:
        """Preferred backends the privacy tier or ``disabled`` rules out, with why."""
        out = []
        for key in self.preferred:
            if key in self.disabled:
                out.append((key, "also disabled"))
            elif not allowed_in_tier(CATALOGUE[key], self.privacy):
                where = CATALOGUE[key].privacy.value
                out.append((key, f"a {where} backend is not allowed in the {self.privacy} tier"))
        return out


def order_targets(
    names_with_backends: Sequence[tuple[str, str]], tier: TierLike
) -> tuple[list[str], str]:
    """Order a route's candidate targets for ``tier``; returns the names and why.

    ``names_with_backends`` pairs each declared server or endpoint with its backend key.
    Candidates the privacy tier forbids are dropped. The rest follow the selector's
    ranking; those it does not rank come after, local before remote, in file order.
    """
    selector = BackendSelector(
        latency=cast(LatencyTier, _tier_value(tier.latency, LATENCY_TIERS, "interactive")),
        cost=cast(CostTier, _tier_value(tier.cost, COST_TIERS, "balanced")),
        privacy=cast(PrivacyTier, _tier_value(tier.privacy, PRIVACY_TIERS, "standard")),
    )
    why_of = {r.backend.key: r.reason for r in selector.recommend()}
    rank = {key: i for i, key in enumerate(why_of)}
    eligible: list[tuple[int, str, Backend]] = []
    for index, (name, backend_name) in enumerate(names_with_backends):
        backend = lookup(backend_name)
        if backend is not None and allowed_in_tier(backend, selector.privacy):
            eligible.append((index, name, backend))

    def key(entry: tuple[int, str, Backend]) -> tuple[int, ...]:
        index, _, backend = entry
        ranked = rank.get(backend.key, len(rank))
        if selector.cost == "minimal":  # anything free (local) before anything paid
            return (not backend.local, ranked, index)
        return (ranked, not backend.local, index)

    eligible.sort(key=key)
    names = [name for _, name, _ in eligible]
    parts = [
        f"{name} ({why_of.get(b.key, 'local server' if b.local else 'remote endpoint')})"
        for _, name, b in eligible
    ]
    tiers = f"{selector.latency}/{selector.privacy}/{selector.cost}"
    why = f"chosen for {tiers}: {', '.join(parts) or 'nothing fits'}"
    dropped = len(names_with_backends) - len(names)
    if dropped:
        why += f"; {dropped} declared target(s) excluded by the {selector.privacy} tier"
    return names, why


def _tier_value(value: str, allowed: tuple[str, ...], default: str) -> str:
    return value if value in allowed else default


# -- configuration from the environment ------------------------------------------------


# Engines that serve a GGUF file, in the order ``serve start`` falls back to them.
GGUF_ENGINES = ("llamacpp", "llamafile", "localai", "candle")


def default_backend(env: Mapping[str, str] | None = None) -> Backend:
    """The backend ``serve start`` uses without ``--backend``: $BATUTA_SERVE_BACKEND, else
    realizar when it is installed, else the first installed engine of GGUF_ENGINES (else
    realizar, whose launch then says how to install it)."""
    environ = os.environ if env is None else env
    name = environ.get("BATUTA_SERVE_BACKEND")
    if name:
        try:
            return CATALOGUE[backend_key(name)]
        except BatutaError as exc:
            raise BatutaError(f"BATUTA_SERVE_BACKEND: {exc}") from None
    realizar = CATALOGUE["realizar"]
    if availability(realizar, environ).ready:
        return realizar
    for key in GGUF_ENGINES:
        if availability(CATALOGUE[key], environ).ready:
            return CATALOGUE[key]
    return realizar


def env_port(env: Mapping[str, str] | None = None) -> int | None:
    """$BATUTA_SERVE_PORT as a port number, or None when it is not set."""
    raw = (os.environ if env is None else env).get("BATUTA_SERVE_PORT")
    if not raw:
        return None
    if not raw.strip().isdigit() or not 1 <= int(raw) <= 65535:
        raise BatutaError(f"BATUTA_SERVE_PORT must be a port number 1-65535, not {raw!r}")
    return int(raw)


def default_port(env: Mapping[str, str] | None = None, backend: Backend | None = None) -> int:
    """The port ``serve start`` uses without ``--port``: BATUTA_SERVE_PORT, else the
    backend's own default port, else 8080."""
    port = env_port(env)
    if port is not None:
        return port
    return (backend.default_port if backend is not None else None) or 8080


# -- what is usable on this machine --------------------------------------------------


@dataclass(frozen=True)
class Availability:
    """Whether a backend can be used here: ``ready`` is None when that cannot be told."""

    ready: bool | None
    detail: str


def module_installed(module: str) -> bool:
    """Whether ``python -m module`` can run here, found without importing anything (a
    plain ``find_spec("a.b")`` would import ``a``; PathFinder also spares this fast path
    the cost of importing importlib.util)."""
    top, _, rest = module.partition(".")
    if top in sys.modules and not rest:
        return True
    spec = PathFinder.find_spec(top)
    if spec is None or not rest:
        return spec is not None
    for location in spec.submodule_search_locations or ():
        base = os.path.join(location, *rest.split("."))
        if os.path.isfile(base + ".py") or os.path.isfile(os.path.join(base, "__init__.py")):
            return True
    return False


def installed_recipe(
    backend: Backend, engine: str | None = None, env: Mapping[str, str] | None = None
) -> tuple[Recipe, tuple[str, ...]] | None:
    """The first of ``backend``'s launch recipes installed here (only the one ``engine``
    names, when given) and the command prefix that runs it; None when none is. A recipe's
    ``executable_env`` variable, when set, is the only place its executable is looked for."""
    environ = os.environ if env is None else env
    for recipe in backend.launch:
        if engine and recipe.engine != engine:
            continue
        override = environ.get(recipe.executable_env) if recipe.executable_env else None
        if override:
            found = _which(override)
            return (recipe, (found,)) if found else None
        if recipe.module is not None:
            if all(module_installed(m) for m in (recipe.module, *recipe.needs)):
                return recipe, (sys.executable, "-m", recipe.module)
        elif found := _which(recipe.executable):
            return recipe, (found,)
    return None


LlamaEngine = Literal["server", "python"]
LLAMA_ENGINES: tuple[str, ...] = get_args(LlamaEngine)
LLAMA_SERVER_ENV = "BATUTA_LLAMA_SERVER"


def llama_server_command(
    env: Mapping[str, str] | None = None, engine: LlamaEngine | None = None
) -> tuple[str, ...] | None:
    """How llama.cpp is run here: ``llama-server`` (BATUTA_LLAMA_SERVER, then PATH, then
    beside this interpreter), else the ``llama_cpp.server`` module of llama-cpp-python, else
    None. ``engine`` pins one of the two. The llama.cpp record's recipes say all this."""
    chosen = installed_recipe(CATALOGUE["llamacpp"], engine, env)
    return chosen[1] if chosen else None


def llama_engine_of(command: Sequence[str]) -> LlamaEngine:
    """Which engine a llama.cpp command line runs."""
    return "python" if "llama_cpp.server" in command[1:3] else "server"


def availability(backend: Backend, env: Mapping[str, str] | None = None) -> Availability:
    """Installed (local) or key set (remote); never reveals a key's value."""
    environ = os.environ if env is None else env
    if backend.retired:
        return Availability(False, f"retired {backend.retired}")
    if not backend.local:
        var = backend.api_key_env
        if var is None:
            return Availability(None, "no key needed")
        if environ.get(var):
            return Availability(True, f"{var} is set")
        if not backend.key_required:
            return Availability(None, f"{var} optional, not set")
        return Availability(False, f"{var} not set")
    if backend.key == "llamacpp":
        override = environ.get(LLAMA_SERVER_ENV)
        command = llama_server_command(environ)
        if command is None:
            if override:
                return Availability(False, f"BATUTA_LLAMA_SERVER={override} is not executable")
            return Availability(False, f"not installed: {backend.install_hint}")
        if llama_engine_of(command) == "server":
            return Availability(True, f"llama-server at {command[0]} (engine: server)")
        return Availability(
            True, "python -m llama_cpp.server, from llama-cpp-python (engine: python)"
        )
    # A server run as ``python -m module`` (a plugin's, say): installed when its package is.
    modules = [recipe.module for recipe in backend.launch if recipe.module]
    for module in modules:
        if module_installed(module):
            return Availability(True, f"python -m {module}")
    if backend.executable is None:
        if modules:
            return Availability(False, f"not installed: {backend.install_hint}")
        return Availability(None, "desktop app: start it yourself")
    if path := _which(backend.executable):
        return Availability(True, f"{backend.executable} at {path}")
    return Availability(False, f"not installed: {backend.install_hint}")
