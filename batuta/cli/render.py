"""``batuta render kubernetes``: the manifest as Kubernetes objects, one YAML file each.

A thin layer over :func:`batuta.render.render_kubernetes`; see docs/kubernetes.md.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def render() -> None:
    """Render batuta.yaml for another tool to run."""


@render.command()
@click.option("-f", "--file", "manifest", metavar="FILE",
              help="Manifest (default $BATUTA_FILE, else ./batuta.yaml).")  # fmt: skip
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path),
              default=Path("k8s"), show_default=True, help="Directory to write into.")  # fmt: skip
@click.option("--namespace", metavar="NS", help="Namespace (default: kubernetes.namespace).")
def kubernetes(manifest: str | None, output: Path, namespace: str | None) -> None:
    """Write Deployments, Services, volumes, the gateway and its routing table, and a
    kustomization.yaml: `kubectl apply -k DIR` deploys, `kubectl diff -k DIR` plans."""
    from batuta.render import render_kubernetes

    warn = lambda line: click.echo(line, err=True)  # noqa: E731
    files = render_kubernetes(manifest, output=output, namespace=namespace, warn=warn)
    click.echo(f"wrote {len(files)} files to {output}/ (kubectl apply -k {output})")
