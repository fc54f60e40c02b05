"""``batuta serve start|list|stop|health|pull``: local servers and models by hand.

Servers started here are "adhoc": they live in the same state directory as the
manifest's (``$BATUTA_STATE_DIR``, else ``.batuta`` next to the manifest of ``-f`` /
``$BATUTA_FILE`` / ``./batuta.yaml``, else ``./.batuta``), under the same supervisor, and
``batuta apply`` leaves them alone. A name a manifest's server holds is refused. ``start``
and ``pull`` hold the state directory's apply lock, so they never race an ``apply``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from batuta._util.paths import state_dir_for
from batuta.errors import ModelSourceError

if TYPE_CHECKING:
    from batuta.runtime.ollama import Progress
    from batuta.runtime.sources import ResolvedModel
    from batuta.runtime.spec import ServerStatus

# Backends that take a Hub repo id (not a local file) as their model.
_HUB_MODELS = ("vllm", "tgi", "mlc", "candle", "exllamav2")
_RESTART = click.Choice(["always", "on-failure", "never"])


_FILE_HELP = "Manifest whose state directory to use (default: $BATUTA_FILE, else ./batuta.yaml)."


def _file_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "-f", "--file", "manifest_file", type=click.Path(dir_okay=False), help=_FILE_HELP
    )(command)


def state_dir(manifest_file: str | None = None) -> Path:
    """The state directory ad-hoc commands use (see :func:`batuta._util.paths.state_dir_for`)."""
    return state_dir_for(manifest_file, adhoc=True)


def _port_default(option: int | None, default_port: int | None) -> int:
    if option is not None:
        return option
    raw = os.environ.get("BATUTA_SERVE_PORT")
    if raw:
        try:
            return int(raw)
        except ValueError:
            raise click.BadParameter(
                f"BATUTA_SERVE_PORT={raw!r} is not a port number", param_hint="--port"
            ) from None
    return default_port or 8080


def _adhoc_model(backend: str, model: str, progress: Progress | None) -> ResolvedModel:
    from batuta.runtime import ollama
    from batuta.runtime.sources import ResolvedModel, default_cache_dir, resolve_source, scheme

    if backend == "ollama":
        return ResolvedModel(path=Path(ollama.normalize(model)), registry="ollama", source=model)
    kind = scheme(model)
    repo_id = model.count("/") == 1 and not model.startswith((".", "/", "~"))
    if kind == "file" and backend in _HUB_MODELS and repo_id and not Path(model).exists():
        return ResolvedModel(path=Path(model), registry="hf", source=model)
    if kind == "ollama":
        raise ModelSourceError(f"{model}: ollama:// models are served by --backend ollama")
    return resolve_source(
        model, base_dir=Path.cwd(), cache_dir=default_cache_dir(), progress=progress
    )


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--backend",
    help="Catalogue backend (default: $BATUTA_SERVE_BACKEND, else realizar when installed, "
    "else the first installed GGUF engine).",
)
@click.option("--model", required=True, help="Path, pkg://, hf://, https:// or an Ollama name.")
@click.option("--port", type=click.IntRange(1, 65535), help="Default: $BATUTA_SERVE_PORT.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--ctx", type=click.IntRange(min=128), help="Context size in tokens (>= 128).")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads.")
@click.option("--name", help="Server name (default: BACKEND-PORT).")
@click.option("--restart", type=_RESTART, default="on-failure", show_default=True)
@click.option("--executable", help="Path of the server executable to run.")
@click.option(
    "--engine",
    type=click.Choice(["server", "python"]),
    help="llamacpp: llama-server or llama-cpp-python (default: llama-server when installed).",
)
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds to ready.")
@_file_option
@click.argument("extra", nargs=-1, type=click.UNPROCESSED)
def start(
    backend: str | None,
    model: str,
    port: int | None,
    host: str,
    ctx: int | None,
    threads: int | None,
    name: str | None,
    restart: str,
    executable: str | None,
    engine: str | None,
    timeout: float,
    manifest_file: str | None,
    extra: tuple[str, ...],
) -> int:
    """Start a local server and return once it is healthy.

    Arguments after `--` are passed to the server unchanged.
    """
    from batuta.catalogue import lookup

    began = time.monotonic()
    if backend is None:
        from batuta.router.select import default_backend

        record = default_backend()
        if record.key != "realizar" and not os.environ.get("BATUTA_SERVE_BACKEND"):
            click.echo(f"realizar is not installed; using {record.key}", err=True)
    else:
        found = lookup(backend)
        if found is None:
            raise click.BadParameter(
                f"unknown backend {backend!r} (see `batuta serve backends`)", param_hint="--backend"
            )
        record = found
    if not record.local:
        raise click.BadParameter(
            f"{record.key!r} is not a local backend (see `batuta serve backends`)",
            param_hint="--backend",
        )
    port = _port_default(port, record.default_port)
    name = name or f"{record.key}-{port}"
    state = state_dir(manifest_file)
    from batuta.runtime.daemon import warm_up

    # The supervisor's own start-up (an interpreter and its imports) then runs while this
    # command imports and resolves the rest, instead of after it.
    warm_up(state)
    from batuta.apply.state import apply_lock
    from batuta.runtime.launch import launch_for
    from batuta.runtime.manager import Runtime
    from batuta.runtime.spec import ServerSpec

    runtime = Runtime(state)
    runtime.check_adhoc_name(name)  # before any download
    with apply_lock(state), _progress() as progress:
        resolved = _adhoc_model(record.key, model, progress)
        run = launch_for(
            record.key, resolved.ref, host, port, ctx, threads, extra, None, executable, engine
        )
        argv, env, health_url = run.argv, run.env, run.health_url
        spec = ServerSpec(
            name=name,
            backend=record.key,
            argv=tuple(argv),
            host=host,
            port=port,
            health_url=health_url,
            model_path=resolved.ref,
            env=env,
            restart=restart,  # type: ignore[arg-type]
            origin="adhoc",
            ready_timeout=timeout,
            engine=run.engine,
        )
        status = runtime.start(spec, progress=progress)
    url = f"http://{health_url.split('://', 1)[1].split('/', 1)[0]}"
    click.echo(
        f"{name}: {record.display} ready at {url} "
        f"(pid {status.pid}, {time.monotonic() - began:.1f}s)"
    )
    return 0


def _row(status: ServerStatus, now: float, state: Path) -> dict[str, Any]:
    from batuta.runtime.logs import log_path

    spec = status.spec
    alive = status.pid is not None and status.state in ("starting", "ready", "unhealthy")
    return {
        "name": status.name,
        "backend": spec.backend,
        "engine": spec.engine_name or None,
        "model": spec.model_path,
        "host": spec.host,
        "port": spec.port,
        "url": spec.url,
        "pid": status.pid,
        "state": status.state,
        "uptime_s": round(now - status.started_at, 1) if alive and status.started_at else None,
        "restarts": status.restarts,
        "last_exit": status.last_exit,
        "origin": spec.origin,
        "manifest": spec.manifest,
        "message": status.message,
        "log": str(log_path(state, status.name)),
    }


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_file_option
def list_servers(as_json: bool, manifest_file: str | None) -> int:
    """List the servers batuta runs."""
    import json

    from batuta.runtime.manager import Runtime

    now = time.time()
    state = state_dir(manifest_file)
    rows = [_row(s, now, state) for s in Runtime(state).status().values()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return 0
    if not rows:
        click.echo("No servers. Start one with `batuta serve start` or `batuta apply`.")
        return 0
    head = ("NAME", "BACKEND", "MODEL", "PORT", "PID", "STATE", "UPTIME", "RESTARTS", "ORIGIN")
    table = [head] + [
        (
            r["name"],
            r["backend"],
            Path(r["model"]).name,
            str(r["port"]),
            str(r["pid"] or "-"),
            r["state"],
            _uptime(r["uptime_s"]),
            str(r["restarts"]),
            r["origin"],
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(head))]
    for line in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    for r in rows:
        if r["state"] in ("crashloop", "exited", "failed") and r["message"]:
            click.echo(f"\n{r['name']}: {r['message']}\n  log: {r['log']}")
    return 0


@click.command()
@click.argument("name", required=False)
@click.option("--port", type=int, help="Stop the server on this port.")
@click.option("--all", "stop_all", is_flag=True, help="Stop every server batuta started here.")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds to KILL.")
@_file_option
def stop(
    name: str | None, port: int | None, stop_all: bool, timeout: float, manifest_file: str | None
) -> int:
    """Stop servers batuta started (by NAME, --port or --all)."""
    from batuta.errors import StateError
    from batuta.runtime.manager import Runtime

    if sum((name is not None, port is not None, stop_all)) != 1:
        raise click.UsageError("give exactly one of NAME, --port P or --all")
    runtime = Runtime(state_dir(manifest_file))
    statuses = runtime.status()
    if stop_all:
        names = list(statuses)
    elif port is not None:
        names = [n for n, s in statuses.items() if s.spec.port == port]
        if not names:
            raise StateError(f"no server started by batuta listens on port {port}")
    else:
        assert name is not None
        if name not in statuses:
            raise StateError(f"no server named {name!r} (see `batuta serve list`)")
        names = [name]
    for server in names:
        if runtime.stop(server, timeout=timeout):
            pid = statuses[server].pid
            click.echo(f"stopped {server}" + (f" (pid {pid})" if pid else ""))
    if not names:
        click.echo("No servers to stop.")
    return 0


@click.command()
@click.argument("name", required=False)
@click.option("--backend", help="Check this backend (local or remote).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--timeout", type=float, default=2.0, show_default=True)
@_file_option
def health(
    name: str | None, backend: str | None, as_json: bool, timeout: float, manifest_file: str | None
) -> int:
    """Check readiness of servers and configured remote backends.

    Exits 1 unless everything checked is ready.
    """
    import json
    from dataclasses import asdict

    from batuta.runtime.checks import check_health

    if name and backend:
        raise click.UsageError("give NAME or --backend, not both")
    rows = check_health(state_dir(manifest_file), name=name, backend=backend, timeout=timeout)
    if as_json:
        click.echo(json.dumps([asdict(r) for r in rows], indent=2))
    elif not rows:
        click.echo("Nothing to check: no servers, and no remote API key is set.")
    for r in [] if as_json else rows:
        ms = f" {r.latency_ms:.0f}ms" if r.latency_ms is not None else ""
        detail = f"  ({r.detail})" if r.detail else ""
        click.echo(f"{r.name:<20} {r.kind:<8} {r.health:<8}{ms:>8}  {r.url}{detail}")
    return 0 if all(r.health == "ready" for r in rows) else 1


@click.command()
@click.option("--backend", help="ollama: pull into the Ollama server at $OLLAMA_HOST.")
@click.option("--model", required=True, help="Ollama name, or hf://, https://, pkg://, path.")
@click.option("--sha256", help="Expected sha256 of an https:// download (required for http://).")
@_file_option
def pull(backend: str | None, model: str, sha256: str | None, manifest_file: str | None) -> int:
    """Fetch a model: into Ollama, or into batuta's cache for file sources."""
    from batuta._util.ollama_host import ollama_base_url
    from batuta.apply.state import apply_lock
    from batuta.runtime import ollama
    from batuta.runtime.sources import default_cache_dir, resolve_source

    if (backend or "").lower() == "ollama" or model.startswith("ollama://"):
        base = ollama_base_url()
        name = ollama.normalize(model)
        with apply_lock(state_dir(manifest_file)), _progress() as progress:
            ollama.pull(base, name, progress)
        click.echo(f"pulled {name} into Ollama at {base}")
        return 0
    if model.lower().startswith("http://") and not sha256:
        raise click.UsageError(
            f"{model}: an http:// download is not authenticated; give --sha256 of the file "
            "(or use https://)"
        )
    with apply_lock(state_dir(manifest_file)), _progress() as progress:
        resolved = resolve_source(
            model, base_dir=Path.cwd(), cache_dir=default_cache_dir(), sha256=sha256,
            progress=progress,
        )  # fmt: skip
    quant = f", {resolved.quantization}" if resolved.quantization else ""
    click.echo(f"{resolved.path} ({resolved.path.stat().st_size:,} bytes{quant})")
    click.echo(f"sha256 {resolved.digest}")
    return 0


class _progress:  # lower case: reads like a function, `with _progress() as progress`
    """A rich progress display on stderr, fed by (label, completed, total) callbacks."""

    def __enter__(self) -> Progress:
        # rich is imported on the first callback: a start that downloads nothing (the
        # usual case) never pays for it.
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}
        self._said: set[str] = set()
        return self.update

    def _start(self) -> Any:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        console = Console(stderr=True)
        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=console,
            transient=not console.is_terminal,
        )
        self._bar.start()
        return self._bar

    def update(self, label: str, completed: int, total: int | None) -> None:
        bar = self._bar or self._start()
        short = label.replace("sha256:", "")[:32]
        if total:
            task = self._tasks.get(label)
            if task is None:
                task = self._tasks[label] = bar.add_task(short, total=total)
            bar.update(task, completed=completed)
        elif label not in self._said:
            self._said.add(label)
            bar.console.print(short)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
