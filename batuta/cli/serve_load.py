"""``batuta serve load NAME`` / ``serve unload NAME``: warm or stop an on-demand server now.

Thin over :func:`batuta.runtime.ondemand.wake` and :func:`~batuta.runtime.ondemand.unload`;
the server stays on record either way, and its next request (or idle timeout) does the rest.
"""

from __future__ import annotations

import time

import click

from batuta.cli.serve_run import _file_option, state_dir


@click.command()
@click.argument("name")
@click.option("--timeout", type=float, help="Seconds to wait for readiness [its ready_timeout].")
@_file_option
def load(name: str, timeout: float | None, manifest_file: str | None) -> int:
    """Start on-demand server NAME now and wait until it is ready."""
    from batuta.runtime.ondemand import wake

    started = time.monotonic()
    status, cold = wake(state_dir(manifest_file), name, timeout)
    took = time.monotonic() - started
    verb = f"started in {took:.1f}s" if cold else "already running"
    click.echo(f"{name}: {verb} (pid {status.pid}) at {status.spec.url}")
    return 0


@click.command()
@click.argument("name")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds to KILL.")
@_file_option
def unload(name: str, timeout: float, manifest_file: str | None) -> int:
    """Stop on-demand server NAME now; it stays on record, idle, and its next request starts
    it again."""
    from batuta.runtime.ondemand import unload as unload_server

    stopped = unload_server(state_dir(manifest_file), name, timeout)
    click.echo(f"{name}: " + ("unloaded (idle)" if stopped else "already idle"))
    return 0
