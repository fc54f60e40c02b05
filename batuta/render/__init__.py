"""Rendering ``batuta.yaml`` for other tools to run: ``batuta render kubernetes``.

A layer beside ``apply`` and the gateway: it reads the manifest, the catalogue, the
routing table's builder and the runtime's launch recipes and config hash, and nothing but
the CLI and the api imports it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

__all__ = ["render_kubernetes"]


def render_kubernetes(
    manifest: str | os.PathLike[str] | None = None,
    *,
    output: str | os.PathLike[str] | None = None,
    namespace: str | None = None,
    env: Mapping[str, str] | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict[str, str]:
    """The Kubernetes deployment of ``manifest`` (see :func:`batuta.manifest.load_manifest`)
    as file name → YAML text, written into ``output`` when given. Nothing is written when
    the manifest cannot run in a cluster: ManifestError says where, line by line. ``warn``
    is told, a line each, what runs but not as the manifest may expect."""
    from batuta.manifest import load_manifest
    from batuta.render.kubernetes import render
    from batuta.render.kubernetes.write import write_files

    files = render(load_manifest(manifest, env=env), namespace=namespace, warn=warn)
    if output is not None:
        write_files(Path(output), files)
    return files
