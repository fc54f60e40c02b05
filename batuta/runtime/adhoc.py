"""Ad-hoc servers: ``batuta serve start`` and ``serve pull`` without a manifest, as
library calls.

:func:`start_adhoc` resolves the model (a file, a cached download, a hub id the engine
fetches itself, or an Ollama name), builds the launch spec, records it under the apply
lock and returns once the server is ready, exactly as a manifest server would start.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from batuta.errors import ModelSourceError

if TYPE_CHECKING:
    from batuta.catalogue import Backend
    from batuta.runtime.ollama import Progress
    from batuta.runtime.sources import ResolvedModel
    from batuta.runtime.spec import ServerStatus

Restart = Literal["always", "on-failure", "never"]


def adhoc_model(backend: str, model: str, progress: Progress | None = None) -> ResolvedModel:
    """What ``backend`` is to serve for the ``--model`` of an ad-hoc start."""
    from batuta.catalogue import lookup
    from batuta.runtime import ollama
    from batuta.runtime.sources import ResolvedModel, default_cache_dir, resolve_source, scheme

    if backend == "ollama":
        return ResolvedModel(path=Path(ollama.normalize(model)), registry="ollama", source=model)
    kind = scheme(model)
    repo_id = model.count("/") == 1 and not model.startswith((".", "/", "~"))
    record = lookup(backend)
    hub = record is not None and record.hub_models  # the engine downloads org/name itself
    if kind == "file" and hub and repo_id and not Path(model).exists():
        return ResolvedModel(path=Path(model), registry="hf", source=model)
    if kind == "ollama":
        raise ModelSourceError(f"{model}: ollama:// models are served by --backend ollama")
    return resolve_source(
        model, base_dir=Path.cwd(), cache_dir=default_cache_dir(), progress=progress
    )


def pull_model(
    model: str,
    *,
    state_dir: Path,
    backend: str | None = None,
    sha256: str | None = None,
    progress: Progress | None = None,
) -> ResolvedModel:
    """Fetch ``model`` ahead of a start, under the apply lock: into Ollama (``backend``
    ollama, or an ``ollama://`` name), else into batuta's cache (``sha256`` pins a
    download)."""
    from batuta._util.ollama_host import ollama_base_url
    from batuta.runtime import ollama
    from batuta.runtime.sources import ResolvedModel, default_cache_dir, resolve_source
    from batuta.runtime.state import apply_lock

    with apply_lock(state_dir):
        if (backend or "").lower() == "ollama" or model.startswith("ollama://"):
            name = ollama.normalize(model)
            ollama.pull(ollama_base_url(), name, progress)
            return ResolvedModel(path=Path(name), registry="ollama", source=model)
        return resolve_source(
            model, base_dir=Path.cwd(), cache_dir=default_cache_dir(), sha256=sha256,
            progress=progress,
        )  # fmt: skip


def start_adhoc(
    backend: Backend,
    model: str,
    *,
    state_dir: Path,
    port: int,
    host: str = "127.0.0.1",
    name: str | None = None,
    ctx: int | None = None,
    threads: int | None = None,
    restart: Restart = "on-failure",
    executable: str | None = None,
    engine: str | None = None,
    ready_timeout: float = 120.0,
    extra: tuple[str, ...] = (),
    progress: Progress | None = None,
) -> ServerStatus:
    """Start a local ``backend`` server for ``model`` on ``port`` (named BACKEND-PORT by
    default) and return its status once it is ready. ``extra`` goes to the server as is."""
    from batuta.runtime.daemon import warm_up

    # The supervisor's own start-up (an interpreter and its imports) then runs while this
    # process imports and resolves the rest, instead of after it.
    warm_up(state_dir)
    from batuta.runtime.launch import launch_for, spec_for
    from batuta.runtime.manager import Runtime
    from batuta.runtime.state import apply_lock

    name = name or f"{backend.key}-{port}"
    runtime = Runtime(state_dir)
    runtime.check_adhoc_name(name)  # before any download
    with apply_lock(state_dir):
        resolved = adhoc_model(backend.key, model, progress)
        run = launch_for(
            backend.key, resolved.ref, host, port, ctx, threads, extra, None, executable, engine
        )
        spec = spec_for(
            name, backend.key, resolved, run, host=host, port=port, restart=restart,
            origin="adhoc", ready_timeout=ready_timeout,
        )  # fmt: skip
        return runtime.start(spec, progress=progress)
