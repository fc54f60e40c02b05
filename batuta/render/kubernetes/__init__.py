"""``batuta render kubernetes``: the same ``batuta.yaml`` as a Kubernetes deployment.

::

    from batuta.render.kubernetes import render
    files = render(load_manifest("batuta.yaml"))   # file name -> YAML text

Each local server is a Deployment and a ClusterIP Service (:mod:`.servers`), each model a
PersistentVolumeClaim filled by an init container (:mod:`.models`), the gateway a
ConfigMap with the routing table and the gateway block (its API keys by variable name), a
Deployment and a Service (:mod:`.gateway`), and, when every route is sovereign, a
NetworkPolicy (:mod:`.policy`). Everything that cannot reach a cluster (a ``pkg://``
model, a backend with no image) is reported at its manifest line, all at once, before
anything is written.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from batuta.catalogue import lookup
from batuta.errors import BatutaError
from batuta.manifest.kubernetes import DNS_LABEL_PATTERN
from batuta.render.kubernetes.objects import GATEWAY_NAME, Obj, Problems, labels
from batuta.render.kubernetes.write import render_files

if TYPE_CHECKING:
    from batuta.manifest import LoadedManifest
    from batuta.render.kubernetes.models import ClusterModel
    from batuta.render.kubernetes.servers import ClusterServer

__all__ = ["RenderError", "render"]


class RenderError(BatutaError):
    """An option of ``render`` itself is wrong (the manifest's problems are ManifestError)."""


def gateway_image(loaded: LoadedManifest) -> str:
    """``kubernetes.images.gateway``, else ``batuta-gateway:VERSION`` (deploy/Dockerfile)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        tag = version("batuta")
    except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
        tag = "latest"
    return loaded.manifest.kubernetes.images.get("gateway", f"{GATEWAY_NAME}:{tag}")


def with_namespace(loaded: LoadedManifest, namespace: str | None) -> LoadedManifest:
    """``loaded`` with its ``kubernetes.namespace`` replaced (``--namespace``)."""
    if namespace is None:
        return loaded
    if not re.match(DNS_LABEL_PATTERN, namespace) or len(namespace) > 63:
        raise RenderError(
            f"--namespace {namespace!r} is not a valid namespace (lower-case letters, digits"
            " and '-', at most 63)"
        )
    manifest = loaded.manifest
    cluster = manifest.kubernetes.model_copy(update={"namespace": namespace})
    return dataclasses.replace(loaded, manifest=manifest.model_copy(update={"kubernetes": cluster}))


def _check_images(loaded: LoadedManifest, problems: Problems) -> None:
    for key in loaded.manifest.kubernetes.images:
        backend = lookup(key)
        if key in ("gateway", "fetch") or (backend is not None and backend.key == key):
            continue
        hint = f" (did you mean {backend.key}?)" if backend is not None and backend.local else ""
        problems.add(
            f"kubernetes.images.{key}",
            f"names no image batuta renders{hint}: use gateway, fetch or a local backend's name",
        )


def _models(loaded: LoadedManifest, problems: Problems) -> dict[str, ClusterModel]:
    from batuta.render.kubernetes.models import FETCH_IMAGE, cluster_model

    manifest = loaded.manifest
    fetch = manifest.kubernetes.images.get("fetch", FETCH_IMAGE)
    used = sorted({s.model for s in manifest.servers.values()})
    out = {}
    for name in used:
        found = cluster_model(name, manifest.models[name], problems, fetch)
        if found is not None:
            out[name] = found
    return out


def _servers(
    loaded: LoadedManifest, models: dict[str, ClusterModel], problems: Problems
) -> dict[str, ClusterServer]:
    from batuta.render.kubernetes.servers import cluster_server

    images = loaded.manifest.kubernetes.images
    out: dict[str, ClusterServer] = {}
    seen: dict[str, str] = {}
    for name, server in sorted(loaded.manifest.servers.items()):
        model = models.get(server.model)
        if model is None:
            continue  # its model's problem is reported already
        found = cluster_server(name, loaded, model, problems, images)
        if found is None:
            continue
        if found.object_name in seen:
            problems.add(
                f"servers.{name}",
                f"is {found.object_name!r} in the cluster, as server {seen[found.object_name]!r}"
                " is: rename one",
            )
            continue
        seen[found.object_name] = name
        out[name] = found
    return out


def _namespace(name: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels("namespace", name, "batuta")},
    }


def render(
    loaded: LoadedManifest,
    *,
    namespace: str | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict[str, str]:
    """Every file of the deployment, by name; ManifestError (each problem at its line) when
    the manifest cannot run in a cluster. ``warn`` is told what would run, but not as the
    manifest may expect (several gateway replicas counting on their own)."""
    from batuta.render.kubernetes.gateway import gateway_objects, key_variables, routing_table
    from batuta.render.kubernetes.gateway_config import client_key_variables
    from batuta.render.kubernetes.models import claim_of
    from batuta.render.kubernetes.policy import all_sovereign, egress_policy
    from batuta.render.kubernetes.redis import redis_objects, replica_warning, state_variables

    loaded = with_namespace(loaded, namespace)
    cluster = loaded.manifest.kubernetes
    problems = Problems(loaded.display or str(loaded.path), loaded.position)
    _check_images(loaded, problems)
    if cluster.redis and loaded.manifest.gateway.state is not None:
        problems.add("kubernetes.redis", "gateway.state names a Redis already: drop one")
    models = _models(loaded, problems)
    servers = _servers(loaded, models, problems)
    problems.raise_any()
    table = routing_table(loaded, servers)
    objects: list[Obj] = [_namespace(cluster.namespace)]
    objects += [claim_of(model, cluster) for _, model in sorted(models.items())]
    for _, server in sorted(servers.items()):
        objects += server.objects
    objects += gateway_objects(loaded, table, gateway_image(loaded))
    objects += redis_objects(loaded)
    if warn is not None and (warning := replica_warning(loaded)) is not None:
        warn(warning)
    if all_sovereign(table):
        objects.append(egress_policy(cluster.namespace))
    keys = set(key_variables(table)) | set(client_key_variables(loaded))
    keys |= set(state_variables(loaded))
    for server in servers.values():
        keys |= {e["name"] for e in _secret_envs(server)}
    if any(m.scheme == "hf" for m in models.values()):
        keys.add("HF_TOKEN")
    return render_files(objects, cluster.namespace, keys)


def _secret_envs(server: ClusterServer) -> list[Obj]:
    containers = server.objects[0]["spec"]["template"]["spec"]["containers"]
    return [e for c in containers for e in c.get("env", []) if "valueFrom" in e]
