"""Objects to files: one YAML file per object, a ``kustomization.yaml`` listing them (so
``kubectl apply -k DIR`` deploys and ``kubectl diff -k DIR`` plans), and a
``secrets.example.yaml`` naming the Secret's keys without a value.

Keys are sorted and multi-line strings are literal blocks, so the same manifest gives the
same bytes. Writing replaces the files batuta rendered before and leaves others alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from batuta._util.files import atomic_write
from batuta.render.kubernetes.objects import MANAGED_BY, SECRET_NAME, Obj

KUSTOMIZATION = "kustomization.yaml"
SECRETS_EXAMPLE = "secrets.example.yaml"
_MARK = f"app.kubernetes.io/managed-by: {MANAGED_BY}"


class _Dumper(yaml.SafeDumper):
    """Literal blocks for multi-line strings (the routing table stays readable), and no
    anchors: an object used twice is written twice, as kubectl shows it."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=True, default_flow_style=False, width=4096)


def file_name(obj: Obj) -> str:
    """``deployment-server-local.yaml``: the kind and the name, both stable."""
    return f"{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"


def secrets_example(namespace: str, keys: Iterable[str]) -> str:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET_NAME, "namespace": namespace},
        "type": "Opaque",
        "stringData": {key: "" for key in sorted(set(keys))},
    }
    header = (
        "# The Secret batuta's pods read their keys from; not part of kustomization.yaml.\n"
        "# Fill in the values in a copy outside version control and apply it, or create it:\n"
        f"#   kubectl -n {namespace} create secret generic {SECRET_NAME}"
        + "".join(f" \\\n#     --from-literal={k}=..." for k in sorted(set(keys)))
        + "\n"
    )
    return header + dump(secret)


def render_files(objects: Iterable[Obj], namespace: str, keys: Iterable[str]) -> dict[str, str]:
    """File name → text, for every object plus the kustomization and the Secret's keys."""
    files = {file_name(obj): dump(obj) for obj in objects}
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": sorted(files),
    }
    files[KUSTOMIZATION] = dump(kustomization)
    files[SECRETS_EXAMPLE] = secrets_example(namespace, keys)
    return dict(sorted(files.items()))


def write_files(directory: Path, files: Mapping[str, str]) -> list[Path]:
    """Write ``files`` into ``directory``; remove the files a former render wrote there that
    this one does not (a server taken out of the manifest), and nothing else."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in sorted(directory.glob("*.yaml")):
        if old.name in files or old.name in (KUSTOMIZATION, SECRETS_EXAMPLE):
            continue
        try:
            if _MARK in old.read_text(encoding="utf-8"):
                old.unlink()
        except (OSError, UnicodeDecodeError):
            continue
    written = []
    for name, text in files.items():
        path = directory / name
        atomic_write(path, text)
        written.append(path)
    return written
