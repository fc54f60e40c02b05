"""``batuta gateway``: serve the routing table over OpenAI- and Anthropic-compatible HTTP.

A thin layer over :func:`batuta.gateway.serve`; see docs/gateway.md.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("-f", "--file", "manifest", metavar="FILE", help="Manifest whose .batuta/ holds "
              "the routing table (default $BATUTA_FILE, else ./batuta.yaml).")  # fmt: skip
@click.option(
    "--listen",
    metavar="HOST:PORT",
    help="Address to listen on (default: the manifest's gateway.listen, else 127.0.0.1:8080).",
)
@click.option("--table", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Routing table to serve instead of the manifest's (a cluster's ConfigMap;"
              " re-read when it changes).")  # fmt: skip
@click.option("--gateway-config", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE", help="The gateway block (keys, recording) as JSON, read instead "
              "of the manifest's: what `batuta render kubernetes` mounts.")  # fmt: skip
@click.option("--any-address", is_flag=True, help="Allow --listen on any address without API "
              "keys: for a cluster pod, where the Service and NetworkPolicy decide who may "
              "connect.")  # fmt: skip
def gateway(
    manifest: str | None,
    listen: str | None,
    table: Path | None,
    gateway_config: Path | None,
    any_address: bool,
) -> None:
    """Serve routes as OpenAI/Anthropic-compatible endpoints, in the foreground.

    SIGTERM or Ctrl-C stops accepting requests, lets answers in flight finish, then exits.
    """
    from batuta.gateway import serve

    serve(manifest, listen=listen, table=table, any_address=any_address,
          gateway_config=gateway_config,
          announce=lambda line: click.echo(line, err=True))  # fmt: skip
