"""``batuta validate`` and ``batuta schema``: the manifest commands that change nothing."""

from __future__ import annotations

import click


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


@click.command()
@click.option(
    "-f",
    "--file",
    "file",
    metavar="FILE",
    default=None,
    help="Manifest to check (default: $BATUTA_FILE, else ./batuta.yaml).",
)
def validate(file: str | None) -> int:
    """Check batuta.yaml and report every error, one per line as FILE:LINE:COL: path: message.

    Besides the file itself, what it names on this machine is checked: model files (and
    their GGUF quantization) and server executables. Nothing is downloaded or started.
    """
    from batuta.manifest import ManifestError, load_manifest
    from batuta.runtime.preflight import local_checks

    try:
        loaded = load_manifest(file, checks=local_checks())
    except ManifestError as exc:
        for issue in exc.issues:
            click.echo(str(issue))
        click.echo(f"{_count(len(exc.issues), 'error')} found", err=True)
        return 1
    m = loaded.manifest
    counts = ", ".join(
        (
            _count(len(m.models), "model"),
            _count(len(m.servers), "server"),
            _count(len(m.endpoints), "endpoint"),
            _count(len(m.routes), "route"),
        )
    )
    click.echo(f"{loaded.display}: valid ({counts})")
    return 0


@click.command()
def schema() -> None:
    """Print the manifest's JSON Schema (schemas/batuta.schema.json is this output)."""
    from batuta.manifest.schema import render_schema

    click.echo(render_schema(), nl=False)
