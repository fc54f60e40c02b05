"""``batuta plan | apply | status | down | logs``: the declarative loop on the command line.

Each command parses its options, calls one library function and renders the result.
Heavy modules (pydantic, psutil, httpx, rich, watchfiles) are imported inside the
commands so that ``batuta --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from batuta.cli.progress import DownloadBar
from batuta.errors import StateError

if TYPE_CHECKING:
    from batuta.plan.diff import Plan

_FILE_HELP = "Manifest to use (default: $BATUTA_FILE, else ./batuta.yaml)."


def _file_option(*decls: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        *decls, "manifest_file", type=click.Path(dir_okay=False), default=None, help=_FILE_HELP
    )


def _echo(text: str) -> None:
    click.echo(text)


def _state_dir(manifest_file: str | None) -> tuple[Path, Path]:
    """(manifest path, state dir) without requiring the manifest to be valid."""
    from batuta._util.paths import manifest_path, state_dir_for

    return manifest_path(manifest_file)[0], state_dir_for(manifest_file)


# --- plan ---------------------------------------------------------------------------------


@click.command()
@_file_option("-f", "--file")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@click.option(
    "--detailed-exitcode",
    is_flag=True,
    help="Exit 0 when there are no changes, 1 on error, 2 when there are changes.",
)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Save the plan to this file; `batuta apply FILE` then performs exactly it.",
)
def plan(manifest_file: str | None, as_json: bool, detailed_exitcode: bool, out: str | None) -> int:
    """Show what apply would change, Terraform style (+ create, - destroy, ~ update,
    -/+ replace)."""
    from batuta.plan import make_plan
    from batuta.plan.render import plan_json, render_plan

    result = make_plan(manifest_file)
    if as_json:
        click.echo(json.dumps(plan_json(result), indent=2))
    else:
        click.echo(render_plan(result))
    if out:
        from batuta._util.files import atomic_write

        atomic_write(Path(out), json.dumps(plan_json(result), indent=2) + "\n")
        if not as_json:
            click.echo(
                f"\nSaved the plan to: {out}\n"
                f"To perform exactly these actions, run: batuta apply {out}"
            )
    return 2 if detailed_exitcode and result.has_changes else 0


# --- apply --------------------------------------------------------------------------------


def _read_plan(path: str) -> Plan:
    from batuta.plan.render import plan_from_json

    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise StateError(f"cannot read plan file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise StateError(f"{path} is not a batuta plan file")
    return plan_from_json(data)


@click.command()
@click.argument("plan_file", required=False, type=click.Path(dir_okay=False))
@_file_option("-f", "--file")
@click.option("--watch", is_flag=True, help="Re-plan and re-apply on every saved edit.")
def apply(plan_file: str | None, manifest_file: str | None, watch: bool) -> int:
    """Make what runs match batuta.yaml: pull models, start, stop and replace servers,
    wait until they are ready, and write the routing table.

    With PLAN_FILE (from `batuta plan --out`), perform exactly that plan, or refuse if the
    manifest or the running servers changed since it was made.
    """
    if watch:
        if plan_file:
            raise click.UsageError("--watch re-plans on every edit: it takes no PLAN_FILE")
        from batuta.apply.watch import watch as watch_loop

        return watch_loop(manifest_file, echo=_echo)
    from batuta.apply.execute import apply_loaded
    from batuta.manifest import load_manifest

    saved = _read_plan(plan_file) if plan_file else None
    target = manifest_file if manifest_file or saved is None else saved.manifest
    loaded = load_manifest(target)
    bar = DownloadBar(transient=False)
    try:
        apply_loaded(loaded, saved=saved, echo=_echo, progress=bar)
    finally:
        bar.close()
    return 0


# --- status -------------------------------------------------------------------------------


@click.command()
@_file_option("-f", "--file")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(manifest_file: str | None, as_json: bool) -> int:
    """Desired vs actual: each server's state, health, pid, port, restarts and drift, and
    each route's targets with their health."""
    from batuta.manifest import load_manifest
    from batuta.plan import plan_from
    from batuta.plan.observe import observe
    from batuta.plan.render import gateway_row, render_status, route_rows, server_rows
    from batuta.runtime.gateway import GATEWAY

    loaded = load_manifest(manifest_file)
    observation = observe(loaded.state_dir)
    result = plan_from(loaded, observation)
    restarts = {name: s.restarts for name, s in observation.statuses.items()}
    rows = server_rows(result, restarts)
    servers = set(loaded.manifest.servers) | set(observation.statuses)
    routes = route_rows(observation.table, observation.health, servers)
    gateway = gateway_row(result, restarts.get(GATEWAY, 0))
    if as_json:
        payload = {
            "manifest": str(loaded.path),
            "in_sync": not result.has_changes,
            "servers": [r.to_json() for r in rows],
            "gateway": gateway.to_json() if gateway else None,
            "routes": {
                name: [{"target": t, "health": h} for t, h in targets] for name, targets in routes
            },
        }
        click.echo(json.dumps(payload, indent=2))
    else:
        click.echo(render_status(rows, routes, loaded.display or str(loaded.path), gateway))
    return 0


# --- down ---------------------------------------------------------------------------------


@click.command()
@_file_option("-f", "--file")
def down(manifest_file: str | None) -> int:
    """Stop every server batuta started for this manifest and remove its routing table."""
    from batuta.apply.teardown import destroy

    result = destroy(manifest_file, echo=click.echo)
    if not result.started:
        click.echo("Nothing to stop: batuta has not started anything for this manifest.")
        return 0
    if result.removed_table:
        click.echo("routes: Removed the routing table")
    click.echo(f"Destroy complete! Resources: {len(result.destroyed)} destroyed.")
    return 0


# --- logs ---------------------------------------------------------------------------------


@click.command()
@click.argument("name", required=False)
@click.option("-f", "--follow", "following", is_flag=True, help="Keep printing new lines.")
@click.option("-n", "--lines", default=50, show_default=True, help="Lines to show first.")
@click.option("--requests", is_flag=True, help="The gateway's request log instead of a server's.")
@click.option("--json", "as_json", is_flag=True, help="With --requests: the JSON lines as logged.")
@click.option("--file", "manifest_file", type=click.Path(dir_okay=False), help=_FILE_HELP)
def logs(
    name: str | None,
    following: bool,
    lines: int,
    requests: bool,
    as_json: bool,
    manifest_file: str | None,
) -> int:
    """Show the log of server NAME, or of the gateway apply runs (`gateway`), like tail
    (-f follows it); with --requests, the gateway's requests, one line each."""
    from batuta.runtime.gateway import GATEWAY, SHOWN
    from batuta.runtime.logs import follow, log_path, tail
    from batuta.runtime.state import read_state

    _, state_dir = _state_dir(manifest_file)
    if requests or name is None:
        if not requests:
            raise click.UsageError("give a server NAME, or --requests for the gateway's log")
        from batuta.cli.requests_cmds import show_requests

        return show_requests(state_dir, following=following, lines=lines, as_json=as_json)
    servers = read_state(state_dir).servers
    if name == SHOWN and name not in servers and GATEWAY in servers:
        name = GATEWAY  # the gateway apply runs (no server of that name)
    path = log_path(state_dir, name)
    if not path.exists():
        known = sorted(SHOWN if n == GATEWAY else n for n in servers)
        if name not in known:
            hint = f" (servers on record: {', '.join(known)})" if known else ""
            raise StateError(f"no server named {name!r} in {state_dir}{hint}")
        click.echo(f"server {name!r} has not written a log yet", err=True)
        if not following:
            return 0
    elif lines > 0:
        text = tail(path, lines=lines, max_bytes=max(64 * 1024, lines * 512))
        if text:
            click.echo(text)
    if following:
        with contextlib.suppress(KeyboardInterrupt):
            follow(path, sys.stdout)
    return 0
