"""How to launch a local backend: command line, environment and readiness URL.

Generic over the catalogue record's :class:`~batuta.catalogue.Recipe` tuple (data, not
code: a plugin's backend launches the same way): an executable (or a Python module run
with this interpreter), an argv template, options appended only when their value is known,
environment variables, and the readiness path when it differs from the record's. A backend
with several recipes (llama.cpp: the reference ``llama-server`` binary, else
llama-cpp-python's server) uses the first one installed, unless the server pins one by its
``engine`` name. Executables are looked up on PATH and then beside the running interpreter
(the project's own ``.venv/bin``).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from batuta._util.which import which
from batuta.catalogue import Backend, Recipe, lookup
from batuta.errors import NotInstalledError, RuntimeStartError
from batuta.runtime.spec import ServerSpec
from batuta.selection import installed_recipe

if TYPE_CHECKING:
    from batuta.manifest.model import Defaults, Server
    from batuta.runtime.sources import ResolvedModel


@dataclass(frozen=True)
class Launch:
    """How one server is run: the command, its environment, readiness URL and engine."""

    argv: list[str]
    env: dict[str, str]
    health_url: str
    engine: str = ""  # the recipe's engine name, when the backend has several


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
    if not backend.launch:
        raise NotInstalledError(
            f"{backend.display} cannot be launched by batuta: {backend.install_hint}, "
            "then declare it under endpoints: with its base_url"
        )
    return backend


def _explicit(executable: str) -> str:
    found = which(executable)
    if found is None:
        raise NotInstalledError(f"server executable {executable!r} not found or not executable")
    return found


def _choose(
    backend: Backend, executable: str | None, engine: str | None = None
) -> tuple[Recipe, list[str]]:
    """The recipe to use and the command prefix that runs it."""
    recipes = backend.launch
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
    chosen = installed_recipe(backend, engine)
    if chosen is not None:
        return chosen[0], list(chosen[1])
    for recipe in recipes:
        if recipe.executable_env and os.environ.get(recipe.executable_env):
            _explicit(os.environ[recipe.executable_env])  # says the variable's file is missing
    first = recipes[0]
    hint = first.install_hint or backend.install_hint
    if first.module is not None:
        engine_note = f" (engine {first.engine})" if first.engine else ""
        raise NotInstalledError(f"{first.module}{engine_note} not installed: {hint}")
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
    passed in the engine's own way (its recipe's ``key_arg``) as a ``${env:VAR}``
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
    embeddings: bool = False,
) -> Launch:
    """Like :func:`command_for`, with the engine pinned (or chosen) and named; see
    :func:`launch_with` for ``embeddings``."""
    record = _backend(backend)
    recipe, prefix = _choose(record, executable, engine)
    if threads is None and recipe.always_threads:
        threads = cores()
    return launch_with(
        record, recipe, prefix, model_path, host, port, ctx=ctx, threads=threads, args=args,
        env=env, api_key_env=api_key_env, is_file=Path(model_path).is_file(),
        embeddings=embeddings,
    )  # fmt: skip


def launch_with(
    record: Backend,
    recipe: Recipe,
    prefix: Sequence[str],
    model_path: str,
    host: str,
    port: int,
    *,
    ctx: int | None = None,
    threads: int | None = None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    api_key_env: str | None = None,
    is_file: bool = False,
    embeddings: bool = False,
) -> Launch:
    """The launch of ``recipe`` run by ``prefix`` (its executable, as found here or inside a
    container image), for a model at ``model_path`` (a file when ``is_file``);
    ``embeddings`` adds the recipe's switch for embeddings (those of it ``args`` lacks)."""
    if ctx is None:
        ctx = recipe.default_ctx
    model = Path(model_path)
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
    argv = [*prefix, *(part.format(**values) for part in template)]
    for flag, placeholder in recipe.options:
        key = placeholder[placeholder.index("{") + 1 : placeholder.index("}")]
        if values[key]:
            argv += [flag, placeholder.format(**values)]
    if embeddings:
        argv += _embeddings_argv(recipe.embeddings_argv, args)
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
    launcher = recipe.launcher
    form = recipe.key_arg
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


def _embeddings_argv(flags: tuple[str, ...], args: Sequence[str]) -> list[str]:
    """The recipe's embeddings flags (a flag followed by a value counts as one), minus
    those ``args`` already sets: ``args: [--pooling, cls]`` keeps its own pooling."""
    out: list[str] = []
    i = 0
    while i < len(flags):
        takes_value = i + 1 < len(flags) and not flags[i + 1].startswith("-")
        group = list(flags[i : i + (2 if takes_value else 1)])
        if group[0] not in args:
            out += group
        i += len(group)
    return out


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
        embeddings=server.embeddings,
    )
    return spec_for(
        name,
        _backend(server.backend).key,
        model,
        run,
        host=host,
        port=port,
        restart=restart,
        origin=origin,
        manifest=manifest,
        ready_timeout=ready_timeout,
        log_max_size=defaults.log_max_size if defaults else ServerSpec.log_max_size,
        start=server.start,
        idle_timeout=server.idle_timeout or (defaults.idle_timeout if defaults else 600.0),
    )


def spec_for(
    name: str,
    backend: str,
    model: ResolvedModel,
    run: Launch,
    *,
    host: str,
    port: int,
    restart: Literal["always", "on-failure", "never"],
    origin: str,
    manifest: str | None = None,
    ready_timeout: float = 120.0,
    log_max_size: int = ServerSpec.log_max_size,
    start: Literal["always", "on-demand"] = "always",
    idle_timeout: float = 600.0,
) -> ServerSpec:
    """The launch spec of server ``name``: ``run`` (see :func:`launch_for`) serving
    ``model``. Both a manifest's servers (:func:`build_spec`) and ad-hoc starts
    (:func:`batuta.runtime.adhoc.start_adhoc`) are built here."""
    return ServerSpec(
        name=name,
        backend=backend,
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
        log_max_size=log_max_size,
        start=start,
        idle_timeout=idle_timeout,
    )


def _allocate(defaults: Defaults | None, taken: Collection[int]) -> int:
    low, high = defaults.port_range if defaults else (8100, 8999)
    for port in range(low, high + 1):
        if port not in taken:
            return port
    raise RuntimeStartError(f"no free port left in port_range {low}-{high}")
