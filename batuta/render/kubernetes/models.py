"""Models in a cluster: a PersistentVolumeClaim per model, filled by an init container.

``hf://`` is fetched with the Hugging Face CLI, ``https://`` with its ``sha256`` checked
before the file takes its name, ``ollama://`` through Ollama's own pull (the server's
image, serving on loopback for the pull only). Each init container skips a model already
on the volume, so a restart or a second replica downloads nothing. A ``pkg://`` or local
path names a file on this machine, which a cluster cannot reach: that is a problem at the
model's ``source`` line.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from urllib.parse import urlsplit

from batuta.manifest.kubernetes import Kubernetes
from batuta.manifest.model import Model
from batuta.render.kubernetes.objects import (
    MODELS_MOUNT,
    Obj,
    Problems,
    dns_name,
    labels,
    metadata,
    secret_env,
)

# Downloads run in a plain Python image (sha256sum included); the CLI is pinned.
FETCH_IMAGE = "python:3.12.11-slim-bookworm"
HF_CLI = "huggingface_hub==0.34.4"

# Arguments: repository, file ("" for the whole repository), the file's path on the volume
# ("" likewise), revision, folder.
_HF_SCRIPT = f"""set -e
if [ -n "$3" ] && [ -e "$3" ]; then exit 0; fi
pip install --quiet --no-cache-dir --root-user-action=ignore '{HF_CLI}'
if [ -n "$2" ]; then hf download "$1" "$2" --revision "$4" --local-dir "$5"
else hf download "$1" --revision "$4" --local-dir "$5"; fi
"""
# Arguments: URL, path on the volume, sha256. The file takes its name once checked.
_HTTPS_SCRIPT = """set -e
if [ -f "$2" ] && echo "$3  $2" | sha256sum -c --status; then exit 0; fi
mkdir -p "$(dirname "$2")"
python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(*sys.argv[1:])' "$1" "$2.part"
echo "$3  $2.part" | sha256sum -c
mv "$2.part" "$2"
"""
# Arguments: the model's tag. Ollama pulls through its own server, on loopback.
_OLLAMA_SCRIPT = """ollama serve & server=$!
until ollama list >/dev/null 2>&1; do sleep 1; done
ollama pull "$1"; status=$?
kill "$server"; exit "$status"
"""


@dataclass(frozen=True)
class ClusterModel:
    """Where a model lives in the cluster: its claim, the path servers are given (in the
    container), and how its init container fills the claim."""

    name: str
    claim: str
    ref: str  # what the launcher is given: a file or folder under /models, or a registry name
    is_file: bool
    scheme: str  # hf | https | ollama
    fetch: Obj  # the init container, without its image when it runs the server's


def _hf_parts(source: str) -> tuple[str, str, str]:
    rest, _, revision = source.removeprefix("hf://").partition("@")
    parts = [p for p in rest.split("/") if p]
    return "/".join(parts[:2]), "/".join(parts[2:]), revision or "main"


def cluster_model(name: str, model: Model, problems: Problems, image: str) -> ClusterModel | None:
    """The model ``name`` as the cluster gets it; None (and a problem) when it cannot."""
    source = model.source
    head, sep, _ = source.partition("://")
    kind = head.lower() if sep else "file"
    claim = dns_name("model", name)
    folder = posixpath.join(MODELS_MOUNT, name)
    mount = [{"name": "models", "mountPath": MODELS_MOUNT}]
    where = f"models.{name}.source"
    if kind == "hf":
        repo, file, revision = _hf_parts(source)
        ref = posixpath.join(folder, file) if file else folder
        argv = [repo, file, ref if file else "", revision, folder]
        fetch: Obj = {
            "name": "fetch-model",
            "image": image,
            "command": ["sh", "-c", _HF_SCRIPT, "fetch", *argv],
            "env": [secret_env("HF_TOKEN")],
            "volumeMounts": mount,
        }
        return ClusterModel(name, claim, ref, bool(file), "hf", fetch)
    if kind in ("https", "http"):
        if not model.sha256:
            problems.add(
                f"models.{name}.sha256",
                "a cluster downloads this model unattended: pin it with sha256: (the file's"
                " digest) so the download is checked",
            )
            return None
        file_name = posixpath.basename(urlsplit(source).path) or "model"
        ref = posixpath.join(folder, file_name)
        fetch = {
            "name": "fetch-model",
            "image": image,
            "command": ["sh", "-c", _HTTPS_SCRIPT, "fetch", source, ref, model.sha256.lower()],
            "volumeMounts": mount,
        }
        return ClusterModel(name, claim, ref, True, "https", fetch)
    if kind == "ollama":
        from batuta.runtime.ollama import normalize

        tag = normalize(source)
        fetch = {
            "name": "fetch-model",
            "command": ["/bin/sh", "-c", _OLLAMA_SCRIPT, "pull", tag],
            "env": [
                {"name": "OLLAMA_HOST", "value": "127.0.0.1:11434"},
                {"name": "OLLAMA_MODELS", "value": MODELS_MOUNT},
            ],
            "volumeMounts": mount,
        }
        return ClusterModel(name, claim, tag, False, "ollama", fetch)
    what = "a pkg:// model is a file in a Python package" if kind == "pkg" else "a local path"
    problems.add(
        where,
        f"{what} on this machine, which a cluster cannot reach: use hf://ORG/REPO/FILE or"
        " https://... (with sha256:) for `batuta render kubernetes`",
    )
    return None


def claim_of(model: ClusterModel, cluster: Kubernetes) -> Obj:
    """The PersistentVolumeClaim a model is downloaded into."""
    storage = cluster.model_storage
    spec: Obj = {
        "accessModes": [storage.access_mode],
        "resources": {"requests": {"storage": storage.size}},
    }
    if storage.storage_class:
        spec["storageClassName"] = storage.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(
            model.claim, cluster.namespace, labels("model", model.claim, model.name)
        ),
        "spec": spec,
    }
