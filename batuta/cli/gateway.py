"""``batuta gateway``: serve the routing table over OpenAI- and Anthropic-compatible HTTP.

A thin layer over :func:`batuta.gateway.serve`; see docs/gateway.md.
"""

from __future__ import annotations

import click


@click.command()
@click.option("-f", "--file", "manifest", metavar="FILE", help="Manifest whose .batuta/ holds "
              "the routing table (default $BATUTA_FILE, else ./batuta.yaml).")  # fmt: skip
@click.option(
    "--listen",
    metavar="HOST:PORT",
    help="Address to listen on (default: the manifest's gateway.listen, else 127.0.0.1:8080).",
)
def gateway(manifest: str | None, listen: str | None) -> None:
    """Serve routes as OpenAI/Anthropic-compatible endpoints, in the foreground.

    SIGTERM or Ctrl-C stops accepting requests, lets answers in flight finish, then exits.
    """
    from batuta.gateway import serve

    serve(manifest, listen=listen, announce=lambda line: click.echo(line, err=True))
