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
from batuta.cli.progress import DownloadBar
from batuta.errors import BatutaError

if TYPE_CHECKING:
    from batuta.catalogue import Backend
    from batuta.runtime.spec import ServerStatus

_RESTART = click.Choice(["always", "on-failure", "never"])


_FILE_HELP = "Manifest whose state directory to use (default: $BATUTA_FILE, else ./batuta.yaml)."


def _file_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "-f", "--file", "manifest_file", type=click.Path(dir_okay=False), help=_FILE_HELP
    )(command)


def state_dir(manifest_file: str | None = None) -> Path:
    """The state directory ad-hoc commands use (see :func:`batuta._util.paths.state_dir_for`)."""
    return state_dir_for(manifest_file, adhoc=True)


def _port_default(option: int | None, backend: Backend) -> int:
    from batuta.selection import default_port

    if option is not None:
        return option
    try:
        return default_port(backend=backend)
    except BatutaError as exc:
        raise click.BadParameter(str(exc), param_hint="--port") from None


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
    from batuta.runtime.adhoc import start_adhoc
    from batuta.selection import default_backend

    began = time.monotonic()
    if backend is None:
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
    port = _port_default(port, record)
    with DownloadBar() as progress:
        status = start_adhoc(
            record, model, state_dir=state_dir(manifest_file), port=port, host=host, name=name,
            ctx=ctx, threads=threads, restart=restart,  # type: ignore[arg-type]
            executable=executable, engine=engine, ready_timeout=timeout, extra=extra,
            progress=progress,
        )  # fmt: skip
    health_url = status.spec.health_url
    name = status.name
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

    from batuta.runtime.gateway import is_gateway
    from batuta.runtime.manager import Runtime

    now = time.time()
    state = state_dir(manifest_file)
    statuses = Runtime(state).status().values()  # the gateway is `status`'s, not a server
    rows = [_row(s, now, state) for s in statuses if not is_gateway(s.spec)]
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

    from batuta.health import check_health

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
    from batuta.runtime.adhoc import pull_model

    ollama = (backend or "").lower() == "ollama" or model.startswith("ollama://")
    if not ollama and model.lower().startswith("http://") and not sha256:
        raise click.UsageError(
            f"{model}: an http:// download is not authenticated; give --sha256 of the file "
            "(or use https://)"
        )
    with DownloadBar() as progress:
        resolved = pull_model(
            model, state_dir=state_dir(manifest_file), backend=backend, sha256=sha256,
            progress=progress,
        )  # fmt: skip
    if ollama:
        click.echo(f"pulled {resolved.ref} into Ollama at {ollama_base_url()}")
        return 0
    quant = f", {resolved.quantization}" if resolved.quantization else ""
    click.echo(f"{resolved.path} ({resolved.path.stat().st_size:,} bytes{quant})")
    click.echo(f"sha256 {resolved.digest}")
    return 0
