"""``batuta validate`` and ``batuta schema``: the manifest commands that change nothing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from batuta.errors import ManifestIssue


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
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the issues as a JSON list of {file, line, column, field, message}.",
)
def validate(file: str | None, as_json: bool) -> int:
    """Check batuta.yaml and report every error, one per line as FILE:LINE:COL: path: message.

    Besides the file itself, what it names on this machine is checked: model files (and
    their GGUF quantization) and server executables. Nothing is downloaded or started.
    Exits 1 when there is any error (with --json too).
    """
    from batuta.manifest import ManifestError, load_manifest
    from batuta.runtime.preflight import local_checks

    try:
        loaded = load_manifest(file, checks=local_checks())
    except ManifestError as exc:
        if as_json:
            click.echo(_issues_json(exc.issues))
            return 1
        for issue in exc.issues:
            click.echo(str(issue))
        click.echo(f"{_count(len(exc.issues), 'error')} found", err=True)
        return 1
    for warning in loaded.warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        click.echo(_issues_json([]))
        return 0
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


def _issues_json(issues: Sequence[ManifestIssue]) -> str:
    import json

    rows = [
        {"file": i.file, "line": i.line, "column": i.col, "field": i.path, "message": i.message}
        for i in issues
    ]
    return json.dumps(rows, indent=2, ensure_ascii=False)


@click.command()
def schema() -> None:
    """Print the manifest's JSON Schema: schemas/batuta.schema.json, with the backends of
    installed plugins added to the completion lists."""
    from batuta.manifest.schema import render_schema

    click.echo(render_schema(plugins=True), nl=False)
