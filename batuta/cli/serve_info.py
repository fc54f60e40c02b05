"""``batuta serve backends | tree | select``: what the catalogue holds and what is usable here.

These commands read only the catalogue and the environment (executables on PATH, whether a
key variable is set: never its value), so they start fast and import no HTTP client,
pydantic or jsonschema.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import click

from batuta._util.ollama_host import ollama_base_url
from batuta.catalogue import CATALOGUE, Backend
from batuta.cli.ecosystem import LEGEND, mark, tree_text
from batuta.errors import BatutaError
from batuta.selection import (
    COST_TIERS,
    LATENCY_TIERS,
    PRIVACY_TIERS,
    THROUGHPUT_TIERS,
    BackendSelector,
    availability,
    default_backend,
    default_port,
)

if TYPE_CHECKING:
    from batuta.selection import CostTier, LatencyTier, PrivacyTier, ThroughputTier


def _address(backend: Backend) -> str:
    if backend.key == "ollama":
        return ollama_base_url()
    if backend.local:
        return backend.url()
    if backend.retired:
        return "(retired: your own service's URL)"
    return backend.base_url or "(your endpoint URL)"


def _row(backend: Backend) -> dict[str, object]:
    status = availability(backend)
    row: dict[str, object] = {
        "key": backend.key,
        "name": backend.display,
        "local": backend.local,
        "protocol": backend.protocol,
        "address": _address(backend),
        "default_port": backend.default_port,
        "formats": [f.value for f in backend.capabilities.formats],
        "quantization": list(backend.capabilities.quantization),
        "privacy": backend.privacy.value,
        "api_key_env": backend.api_key_env,
        "retired": backend.retired,
    }
    if backend.local:
        row["installed"] = status.ready
    else:
        row["key_set"] = bool(status.ready)
    row["status"] = status.detail
    return row


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def backends(as_json: bool) -> None:
    """List every backend and whether it is usable here."""
    rows = [_row(b) for b in CATALOGUE.values()]
    if as_json:
        import json

        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    header = ("BACKEND", "WHERE", "PROTOCOL", "ADDRESS", "FORMATS", "STATUS")
    table = [header]
    for b, row in zip(CATALOGUE.values(), rows, strict=True):
        formats = ", ".join(f.value for f in b.capabilities.formats) or "-"
        status = f"{mark(b, availability(b))} {row['status']}"
        where = "local" if b.local else "remote"
        table.append((b.key, where, b.protocol, str(row["address"]), formats, status))
    widths = [max(len(r[i]) for r in table) for i in range(len(header) - 1)]
    for r in table:
        cells = [c.ljust(w) for c, w in zip(r, widths, strict=False)]
        click.echo("  ".join([*cells, r[-1]]).rstrip())
    click.echo(f"\n{LEGEND}")
    try:
        chosen = default_backend()
        port = default_port(backend=chosen)
        env = "BATUTA_SERVE_BACKEND, BATUTA_SERVE_PORT"
        click.echo(f"serve start defaults: --backend {chosen.key} --port {port} ({env})")
    except BatutaError as exc:
        click.echo(f"warning: {exc}", err=True)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the tree as nested JSON.")
def tree(as_json: bool) -> None:
    """Show the model-serving ecosystem as a tree, marking what is usable here."""
    click.echo(tree_text(as_json))


@click.command()
@click.option(
    "--latency",
    type=click.Choice(LATENCY_TIERS),
    default="interactive",
    show_default=True,
    help="realtime <100ms, interactive <1s, batch >1s.",
)
@click.option(
    "--throughput", type=click.Choice(THROUGHPUT_TIERS), default="medium", show_default=True
)
@click.option("--cost", type=click.Choice(COST_TIERS), default="balanced", show_default=True)
@click.option(
    "--privacy",
    type=click.Choice(PRIVACY_TIERS),
    default="standard",
    show_default=True,
    help="sovereign: local only; private: + dedicated clouds; standard: anything.",
)
@click.option("--prefer", multiple=True, metavar="BACKEND", help="Put BACKEND first (repeatable).")
@click.option("--disable", multiple=True, metavar="BACKEND", help="Never pick BACKEND.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def select(
    latency: str,
    throughput: str,
    cost: str,
    privacy: str,
    prefer: tuple[str, ...],
    disable: tuple[str, ...],
    as_json: bool,
) -> int:
    """Recommend backends for given requirements, best first, with the reason for each."""
    try:
        selector = BackendSelector(
            # click.Choice has already limited each value to its tier's names
            latency=cast("LatencyTier", latency),
            throughput=cast("ThroughputTier", throughput),
            cost=cast("CostTier", cost),
            privacy=cast("PrivacyTier", privacy),
            preferred=prefer,
            disabled=disable,
        )
    except BatutaError as exc:
        raise click.UsageError(str(exc)) from None
    picks = selector.recommend()
    if as_json:
        import json

        out = []
        for r in picks:
            status = availability(r.backend)
            out.append(
                {
                    "backend": r.backend.key,
                    "local": r.backend.local,
                    "privacy": r.backend.privacy.value,
                    "reason": r.reason,
                    "usable": status.ready,
                    "status": status.detail,
                }
            )
        click.echo(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        click.echo(f"latency={latency} throughput={throughput} cost={cost} privacy={privacy}")
        for i, r in enumerate(picks, 1):
            status = availability(r.backend)
            click.echo(f"{i:>2}. {r.backend.key:<13}{mark(r.backend, status)} {r.reason}")
    for key, why in selector.rejected_preferences():
        click.echo(f"note: --prefer {key} ignored: {why}", err=True)
    if not picks:
        click.echo("no backend fits these requirements", err=True)
        return 1
    return 0
