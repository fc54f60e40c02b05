"""How to launch each local backend: command line, environment and readiness URL.

Every backend is a :class:`Recipe` in :data:`RECIPES` (data, not code): an executable
(or a Python module run with this interpreter), an argv template, options appended only
when their value is known, environment variables, and the readiness path when it
differs from the catalogue's. A backend with several recipes (llama.cpp: the reference
``llama-server`` binary, else llama-cpp-python's server) uses the first one installed,
unless the server pins one by its ``engine`` name. Executables are looked up on PATH and
then beside the running interpreter (the project's own ``.venv/bin``).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from batuta._util.which import which
from batuta.catalogue import Backend, lookup
from batuta.errors import NotInstalledError, RuntimeStartError
from batuta.runtime.spec import ServerSpec

if TYPE_CHECKING:
    from batuta.manifest.model import Defaults, Server
    from batuta.runtime.sources import ResolvedModel


@dataclass(frozen=True)
class Recipe:
    """One way to launch a backend. Placeholders: {model} {model_dir} {model_file}
    {host} {port} {ctx} {threads}."""

    executable: str  # looked up on PATH (ignored when ``module`` is set)
    argv: tuple[str, ...]
    options: tuple[tuple[str, str], ...] = ()  # (flag, placeholder) added when known
    file_argv: tuple[str, ...] | None = None  # replaces ``argv`` when the model is a file
    env: tuple[tuple[str, str], ...] = ()
    module: str | None = None  # run as ``python -m module`` when importable
    health_path: str | None = None  # when it differs from the catalogue's
    executable_env: str | None = None  # variable naming the executable, e.g. BATUTA_LLAMA_SERVER
    always_threads: bool = False  # pass the core count even when not asked
    engine: str = ""  # the name a manifest pins it by (``engine: server | python``)
    default_ctx: int | None = None  # the context passed when the server sets none


@dataclass(frozen=True)
class Launch:
    """How one server is run: the command, its environment, readiness URL and engine."""

    argv: list[str]
    env: dict[str, str]
    health_url: str
    engine: str = ""  # the recipe's engine name, when the backend has several


_LLAMACPP_ENV = "BATUTA_LLAMA_SERVER"
# llama.cpp allocates the whole KV cache of its context up front, and without a context
# llama-server takes the model's training context (8192 for SmolLM2, 128k for Llama 3.1):
# seconds of start-up and hundreds of MiB for tokens a chat rarely reaches. Both engines
# get this one unless the server sets ``ctx`` (llama-server's own default once, as Ollama's).
LLAMACPP_DEFAULT_CTX = 4096

RECIPES: dict[str, tuple[Recipe, ...]] = {
    "realizar": (
        Recipe("realizar", ("serve", "--model", "{model}", "--port", "{port}", "--host", "{host}")),
    ),
    "llamacpp": (
        Recipe(
            "llama-server",
            # --metrics: Prometheus /metrics, for scraping per-server figures.
            ("-m", "{model}", "--port", "{port}", "--host", "{host}", "--metrics"),
            options=(("-c", "{ctx}"), ("-t", "{threads}")),
            executable_env=_LLAMACPP_ENV,
            engine="server",
            default_ctx=LLAMACPP_DEFAULT_CTX,
        ),
        # llama-cpp-python has no /health, defaults to a single thread, and by default
        # aborts a running generation when a second request arrives.
        Recipe(
            "python",
            (
                "--model", "{model}", "--port", "{port}", "--host", "{host}",
                "--interrupt_requests", "False",
            ),
            options=(("--n_ctx", "{ctx}"), ("--n_threads", "{threads}")),
            module="llama_cpp.server",
            health_path="/v1/models",
            always_threads=True,
            engine="python",
            default_ctx=LLAMACPP_DEFAULT_CTX,
        ),
    ),
    "llamafile": (
        Recipe(
            "llamafile",
            ("--server", "-m", "{model}", "--port", "{port}", "--host", "{host}", "--nobrowser"),
            options=(("-c", "{ctx}"), ("-t", "{threads}")),
        ),
    ),
    "ollama": (
        Recipe(
            "ollama",
            ("serve",),
            env=(("OLLAMA_HOST", "{host}:{port}"), ("OLLAMA_CONTEXT_LENGTH", "{ctx}")),
        ),
    ),
    "vllm": (
        Recipe(
            "vllm",
            ("serve", "{model}", "--port", "{port}", "--host", "{host}"),
            options=(("--max-model-len", "{ctx}"),),
        ),
    ),
    "tgi": (
        Recipe(
            "text-generation-launcher",
            ("--model-id", "{model}", "--port", "{port}", "--hostname", "{host}"),
            options=(("--max-total-tokens", "{ctx}"),),
        ),
    ),
    "localai": (
        Recipe(
            "local-ai",
            ("run", "--address", "{host}:{port}", "--models-path", "{model_dir}"),
            options=(("--context-size", "{ctx}"), ("--threads", "{threads}")),
        ),
    ),
    "candle": (
        Recipe(
            "mistralrs",
            ("serve", "--port", "{port}", "--host", "{host}", "-m", "{model}"),
            file_argv=(
                "serve", "--port", "{port}", "--host", "{host}",
                "-m", "{model_dir}", "--format", "gguf", "-f", "{model_file}",
            ),
            options=(("--max-seq-len", "{ctx}"),),
            health_path="/health",
        ),
        # Releases before the ``mistralrs`` CLI: a model-type subcommand after the options.
        Recipe(
            "mistralrs-server",
            ("--port", "{port}", "--serve-ip", "{host}", "plain", "-m", "{model}"),
            file_argv=(
                "--port", "{port}", "--serve-ip", "{host}",
                "gguf", "-m", "{model_dir}", "-f", "{model_file}",
            ),
        ),
    ),
    "lmstudio": (Recipe("lms", ("server", "start", "--port", "{port}")),),
    "mlc": (
        Recipe(
            "mlc_llm",
            ("serve", "{model}", "--host", "{host}", "--port", "{port}"),
            options=(("--overrides", "context_window_size={ctx}"),),
        ),
    ),
    "exllamav2": (
        Recipe(
            "tabbyapi",
            (
                "--host", "{host}", "--port", "{port}",
                "--model-dir", "{model_dir}", "--model-name", "{model_file}",
            ),
            options=(("--max-seq-len", "{ctx}"),),
        ),
    ),
}  # fmt: skip


def cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _backend(name: str) -> Backend:
    backend = lookup(name)
    if backend is None:
        raise RuntimeStartError(f"unknown backend {name!r} (see `batuta serve backends`)")
    if not backend.local:
        raise RuntimeStartError(
            f"{backend.display} is a remote API: declare it under endpoints:, not servers:"
        )
    if backend.key not in RECIPES:
        raise NotInstalledError(
            f"{backend.display} cannot be launched by batuta: {backend.install_hint}, "
            "then declare it under endpoints: with its base_url"
        )
    return backend


def _module_available(module: str) -> bool:
    # find_spec of "a.b" imports "a"; look for the submodule's file instead.
    top, _, rest = module.partition(".")
    spec = importlib.util.find_spec(top)
    if spec is None or not rest:
        return spec is not None
    for location in spec.submodule_search_locations or ():
        base = Path(location, *rest.split("."))
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            return True
    return False


def _explicit(executable: str) -> str:
    found = which(executable)
    if found is None:
        raise NotInstalledError(f"server executable {executable!r} not found or not executable")
    return found


def _choose(
    backend: Backend, executable: str | None, engine: str | None = None
) -> tuple[Recipe, list[str]]:
    """The recipe to use and the command prefix that runs it."""
    recipes = RECIPES[backend.key]
    if engine:
        pinned = tuple(r for r in recipes if r.engine == engine)
        if not pinned:
            known = ", ".join(r.engine for r in recipes if r.engine) or "none"
            raise RuntimeStartError(
                f"{backend.display} has no engine {engine!r} (engines: {known})"
            )
        recipes = pinned
    if executable:
        # With the Python engine, ``executable`` is the interpreter that has the module.
        module = recipes[0].module
        return recipes[0], [_explicit(executable), *(("-m", module) if module else ())]
    for recipe in recipes:
        if recipe.executable_env and os.environ.get(recipe.executable_env):
            return recipe, [_explicit(os.environ[recipe.executable_env])]
        if recipe.module is not None:
            if _module_available(recipe.module):
                return recipe, [sys.executable, "-m", recipe.module]
        elif (found := which(recipe.executable)) is not None:
            return recipe, [found]
    first = recipes[0]
    if first.module is not None:
        raise NotInstalledError(
            f"{first.module} (engine {first.engine}) not installed: pip install 'batuta[llamacpp]'"
        )
    hint = backend.install_hint
    if first.executable_env:
        hint += f", or set {first.executable_env}"
    raise NotInstalledError(f"{first.executable} not installed: {hint}")


def _connect_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def command_for(
    backend: str,
    model_path: str,
    host: str,
    port: int,
    ctx: int | None = None,
    threads: int | None = None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    executable: str | None = None,
    api_key_env: str | None = None,
) -> tuple[list[str], dict[str, str], str]:
    """(argv, env, readiness URL) to run ``backend`` serving ``model_path`` on host:port.

    ``api_key_env`` names the variable holding the key the server is to require; it is
    passed in the engine's own way (catalogue ``server_key``) as a ``${env:VAR}``
    reference, which only the spawned process sees expanded. Raises NotInstalledError
    (saying how to install it) when the backend is missing.
    """
    run = launch_for(
        backend, model_path, host, port, ctx, threads, args, env, executable,
        api_key_env=api_key_env,
    )  # fmt: skip
    return run.argv, run.env, run.health_url


def launch_for(
    backend: str,
    model_path: str,
    host: str,
    port: int,
    ctx: int | None = None,
    threads: int | None = None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    executable: str | None = None,
    engine: str | None = None,
    api_key_env: str | None = None,
) -> Launch:
    """Like :func:`command_for`, with the engine pinned (or chosen) and named."""
    record = _backend(backend)
    recipe, prefix = _choose(record, executable, engine)
    if threads is None and recipe.always_threads:
        threads = cores()
    if ctx is None:
        ctx = recipe.default_ctx
    model = Path(model_path)
    is_file = model.is_file()
    values = {
        "model": model_path,
        "model_dir": str(model.parent if is_file else model),
        "model_file": model.name,
        "host": host,
        "port": str(port),
        "ctx": "" if ctx is None else str(ctx),
        "threads": "" if threads is None else str(threads),
    }
    template = recipe.file_argv if is_file and recipe.file_argv else recipe.argv
    argv = prefix + [part.format(**values) for part in template]
    for flag, placeholder in recipe.options:
        key = placeholder[placeholder.index("{") + 1 : placeholder.index("}")]
        if values[key]:
            argv += [flag, placeholder.format(**values)]
    argv += list(args)
    out_env = {
        name: value.format(**values)
        for name, value in recipe.env
        if all(values[k] for k in _placeholders(value))
    }
    out_env.update(env or {})
    if api_key_env:
        _pass_key(record, recipe, api_key_env, argv, out_env)
    path = recipe.health_path or record.health_path or "/v1/models"
    return Launch(argv, out_env, f"http://{_connect_host(host)}:{port}{path}", recipe.engine)


def _pass_key(
    record: Backend, recipe: Recipe, var: str, argv: list[str], env: dict[str, str]
) -> None:
    launcher = recipe.module or recipe.executable
    form = record.key_form(launcher)
    if form is None:
        raise RuntimeStartError(
            f"{record.display} ({launcher}) takes no API key batuta knows how to pass:"
            " drop api_key_env, or pass the key with args:/env:"
        )
    ref = "${env:" + var + "}"
    if form.startswith("env:"):
        env[form.removeprefix("env:")] = ref
    else:
        argv += [form, ref]


def _placeholders(template: str) -> list[str]:
    return [part.split("}")[0] for part in template.split("{")[1:]]


def build_spec(
    name: str,
    server: Server,
    model: ResolvedModel,
    *,
    origin: str,
    manifest: str | None,
    defaults: Defaults | None = None,
    taken: Collection[int] = (),
) -> ServerSpec:
    """The launch spec of manifest server ``name`` serving the resolved ``model``.

    Unset fields come from ``defaults``. Without a port, the first port of
    ``defaults.port_range`` not in ``taken`` is used (a pure function of the manifest,
    so the allocation, and with it the config hash, is stable from plan to plan).
    """
    explicit = server.model_fields_set
    host = server.host if "host" in explicit or defaults is None else defaults.host
    port = server.port if server.port is not None else _allocate(defaults, taken)
    restart = server.restart if "restart" in explicit or defaults is None else defaults.restart
    ready_timeout = (
        server.ready_timeout
        if "ready_timeout" in explicit or defaults is None
        else defaults.ready_timeout
    )
    run = launch_for(
        server.backend,
        model.ref,
        host,
        port,
        ctx=server.ctx,
        threads=server.threads,
        args=server.args,
        env=server.env,
        executable=server.executable,
        engine=server.engine,
        api_key_env=server.api_key_env,
    )
    key = _backend(server.backend).key
    return ServerSpec(
        name=name,
        backend=key,
        argv=tuple(run.argv),
        host=host,
        port=port,
        health_url=run.health_url,
        model_path=model.ref,
        model_digest=model.digest,
        env=run.env,
        engine=run.engine,
        restart=restart,
        origin="manifest" if origin == "manifest" else "adhoc",
        manifest=manifest,
        ready_timeout=ready_timeout,
        log_max_size=defaults.log_max_size if defaults else ServerSpec.log_max_size,
    )


def _allocate(defaults: Defaults | None, taken: Collection[int]) -> int:
    low, high = defaults.port_range if defaults else (8100, 8999)
    for port in range(low, high + 1):
        if port not in taken:
            return port
    raise RuntimeStartError(f"no free port left in port_range {low}-{high}")
