"""Rendering manifests for the tests: text in, parsed Kubernetes objects out."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from batuta.manifest import load_manifest
from batuta.render.kubernetes import render
from batuta.render.kubernetes.write import KUSTOMIZATION, SECRETS_EXAMPLE

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
FLEET = EXAMPLES / "fleet.yaml"
K8S_VERSION = "1.33.0"  # a current Kubernetes release whose schemas kubernetes-validate ships

SOVEREIGN = """\
version: 1
models:
  smollm2:
    source: hf://HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/smollm2-135m-instruct-q8_0.gguf
    format: gguf
    quantization: Q8_0
servers:
  a:
    backend: llamacpp
    model: smollm2
    port: 8081
    ctx: 2048
  b:
    backend: llamacpp
    model: smollm2
    port: 8082
    ctx: 2048
routes:
  local:
    tier: {privacy: sovereign}
    targets: [a, b]
    timeout: 60s
    retries: 0
kubernetes:
  namespace: team-a
"""


def write(tmp_path: Path, text: str, name: str = "batuta.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def render_path(path: Path, env: Mapping[str, str] | None = None, **kw: Any) -> dict[str, str]:
    return render(load_manifest(path, env=env if env is not None else {}), **kw)


def render_text(tmp_path: Path, text: str, **kw: Any) -> dict[str, str]:
    return render_path(write(tmp_path, text), **kw)


def objects(files: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """File name → object, for every object kustomization.yaml lists."""
    listed = yaml.safe_load(files[KUSTOMIZATION])["resources"]
    return {name: yaml.safe_load(files[name]) for name in listed}


def of_kind(files: Mapping[str, str], kind: str) -> dict[str, dict[str, Any]]:
    """Objects of one kind, by name."""
    found = [o for o in objects(files).values() if o["kind"] == kind]
    return {o["metadata"]["name"]: o for o in found}


def secret_keys(files: Mapping[str, str]) -> set[str]:
    return set(yaml.safe_load(files[SECRETS_EXAMPLE])["stringData"])


def routes_json(files: Mapping[str, str]) -> str:
    return str(of_kind(files, "ConfigMap")["batuta-routes"]["data"]["routes.json"])


def pods_of(files: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Each Deployment's pod template, by the Deployment's name."""
    return {n: d["spec"]["template"] for n, d in of_kind(files, "Deployment").items()}
