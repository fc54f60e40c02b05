"""Each local server as a Deployment and a ClusterIP Service.

The container runs the command line batuta's own launcher builds
(:func:`batuta.runtime.launch.launch_with`: the same recipe, listening on ``0.0.0.0``
inside the pod), with the engine's executable as the image has it. Its config-hash
annotation is :attr:`batuta.runtime.spec.ServerSpec.config_hash` of that launch, so a
server rolls exactly when batuta would replace it. A ``${env:VAR}`` the manifest wrote (and
a server's ``api_key_env``) becomes the variable ``VAR`` read from the Secret, referred to
as ``$(VAR)``, which Kubernetes expands: no value is ever rendered.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from batuta.catalogue import Backend, Recipe, lookup
from batuta.render.kubernetes.models import FETCH_IMAGE, ClusterModel
from batuta.render.kubernetes.objects import (
    CONFIG_HASH,
    MODELS_MOUNT,
    Obj,
    Problems,
    dns_name,
    is_dns_label,
    labels,
    metadata,
    secret_env,
    selector,
)
from batuta.runtime.spec import ServerSpec

if TYPE_CHECKING:
    from batuta.manifest import LoadedManifest
    from batuta.manifest.model import Server

_ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")
PORT_NAME = "http"


@dataclass(frozen=True)
class ClusterServer:
    """One server as the cluster runs it; ``url`` is its Service inside the cluster."""

    name: str
    object_name: str
    spec: ServerSpec
    url: str
    objects: tuple[Obj, ...]

    # What the routing table reads of a launched server (batuta.routing.build).
    @property
    def argv(self) -> tuple[str, ...]:
        return self.spec.argv

    @property
    def model_path(self) -> str:
        return self.spec.model_path

    @property
    def env(self) -> dict[str, str]:
        return self.spec.env


def _recipe(backend: Backend, server: Server) -> Recipe:
    if server.engine:
        return next((r for r in backend.launch if r.engine == server.engine), backend.launch[0])
    return backend.launch[0]


def _image(
    backend: Backend, recipe: Recipe, server: Server, images: Mapping[str, str]
) -> str | None:
    if server.image:
        return server.image
    if backend.key in images:
        return images[backend.key]
    # The official image runs the backend's first recipe (llama.cpp: llama-server).
    return backend.image if recipe is backend.launch[0] else None


def _prefix(backend: Backend, recipe: Recipe, image: str) -> list[str]:
    if recipe.module:
        return ["python3", "-m", recipe.module]
    repository = image.split("@")[0].rsplit(":", 1)[0]
    official = backend.image.split("@")[0].rsplit(":", 1)[0] if backend.image else None
    if repository == official and backend.image_executable:
        return [backend.image_executable]  # the same image's other tags (a CUDA build, say)
    return [recipe.executable]


def _as_written(
    name: str, server: Server, refs: Mapping[str, str]
) -> tuple[list[str], dict[str, str]]:
    """The server's args and env with ``${env:...}`` as written, never the value."""
    args = [refs.get(f"servers.{name}.args[{i}]", a) for i, a in enumerate(server.args)]
    env = {k: refs.get(f"servers.{name}.env.{k}", v) for k, v in server.env.items()}
    return args, env


def _k8s(text: str) -> str:
    """``${env:VAR}`` as Kubernetes writes a reference to another variable: ``$(VAR)``."""
    return _ENV_REF.sub(lambda m: f"$({m.group(1)})", text)


def _container_env(spec: ServerSpec) -> list[Obj]:
    texts = [*spec.argv, *spec.env.values()]
    secrets = sorted({m.group(1) for text in texts for m in _ENV_REF.finditer(text)})
    # A secret first, so the plain variables after it may refer to it as $(VAR).
    out = [secret_env(var, optional=False) for var in secrets]
    for key, value in sorted(spec.env.items()):
        if key in secrets and _ENV_REF.fullmatch(value) and _ENV_REF.sub(r"\1", value) == key:
            continue  # VAR=${env:VAR}: the secret's own variable is it
        out.append({"name": key, "value": _k8s(value)})
    return out


def _threads(server: Server, recipe: Recipe) -> int | None:
    """``threads``; for an engine that needs a count (batuta gives it this machine's cores),
    the whole CPUs the pod asks for, else none (its own default)."""
    if server.threads is not None or not recipe.always_threads or server.resources is None:
        return server.threads
    cpu = server.resources.cpu
    try:
        count = float(cpu) if cpu is not None else 0.0
    except ValueError:  # 500m and the like: less than one core
        return None
    return int(count) if count >= 1 else None


def _quantity(amount: str | float) -> str:
    if isinstance(amount, float):
        return str(int(amount)) if amount.is_integer() else repr(amount)
    return amount


def _resources(server: Server) -> Obj | None:
    if server.resources is None:
        return None
    wanted: dict[str, str] = {}
    for key, amount in (("cpu", server.resources.cpu), ("memory", server.resources.memory)):
        if amount is not None:
            wanted[key] = _quantity(amount)
    if server.resources.gpu:
        wanted["nvidia.com/gpu"] = str(server.resources.gpu)
    return {"requests": dict(wanted), "limits": dict(wanted)} if wanted else None


def _probes(path: str, ready_timeout: float) -> Obj:
    get = {"path": path, "port": PORT_NAME}
    return {
        # Loading a model takes the manifest's ready_timeout at most, as batuta waits locally.
        "startupProbe": {
            "httpGet": get, "periodSeconds": 5,
            "failureThreshold": max(1, math.ceil(ready_timeout / 5)),
        },
        "readinessProbe": {"httpGet": get, "periodSeconds": 5, "failureThreshold": 2},
        "livenessProbe": {"httpGet": get, "periodSeconds": 10, "failureThreshold": 3},
    }  # fmt: skip


def _pod(server: Server, run: ServerSpec, image: str, model: ClusterModel, fetch_image: str) -> Obj:
    """The pod of one server: its init container fills the model's claim, then it serves."""
    path = urlsplit(run.health_url).path or "/"
    container: Obj = {
        "name": "server",
        "image": image,
        "command": [_k8s(run.argv[0])],
        "args": [_k8s(a) for a in run.argv[1:]],
        "ports": [{"name": PORT_NAME, "containerPort": run.port, "protocol": "TCP"}],
        "volumeMounts": [{"name": "models", "mountPath": MODELS_MOUNT}],
        **_probes(path, run.ready_timeout),
    }
    env = _container_env(run)
    if env:
        container["env"] = env
    resources = _resources(server)
    if resources:
        container["resources"] = resources
    fetch = {**model.fetch, "image": image if model.scheme == "ollama" else fetch_image}
    pod: Obj = {
        "initContainers": [fetch],
        "containers": [container],
        "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": model.claim}}],
    }
    if server.node_selector:
        pod["nodeSelector"] = dict(server.node_selector)
    if server.tolerations:
        pod["tolerations"] = [
            {
                {"toleration_seconds": "tolerationSeconds"}.get(key, key): value
                for key, value in t.model_dump(exclude_none=True).items()
            }
            for t in server.tolerations
        ]
    return pod


def cluster_server(
    name: str,
    loaded: LoadedManifest,
    model: ClusterModel,
    problems: Problems,
    images: Mapping[str, str],
) -> ClusterServer | None:
    """Server ``name``'s Deployment and Service; None (and a problem) when it cannot run in
    a cluster."""
    from batuta.runtime.launch import launch_with, spec_for
    from batuta.runtime.sources import ResolvedModel

    manifest, where = loaded.manifest, f"servers.{name}"
    cluster = manifest.kubernetes
    server = manifest.servers[name]
    backend = lookup(server.backend)
    assert backend is not None and backend.local  # the manifest's rules say so
    object_name = dns_name("server", name)
    if not is_dns_label(object_name):
        problems.add(where, f"{object_name!r} is too long for a Kubernetes Service name (63)")
        return None
    if not backend.launch:
        problems.add(f"{where}.backend", f"batuta does not know how to launch {backend.display}")
        return None
    if backend.key == "ollama" and model.scheme != "ollama":  # the rules say the converse
        problems.add(
            f"{where}.model",
            "an ollama server in a cluster serves ollama:// models only (it pulls them into"
            " its volume itself)",
        )
        return None
    recipe = _recipe(backend, server)
    image = _image(backend, recipe, server, images)
    if image is None:
        engine = f" (engine {recipe.engine})" if server.engine else ""
        problems.add(
            f"{where}.image" if server.image else where,
            f"batuta knows no official image for {backend.display}{engine}: give image:",
        )
        return None
    args, env = _as_written(name, server, loaded.env_refs)
    if backend.key == "ollama":
        env.setdefault("OLLAMA_MODELS", MODELS_MOUNT)
    port = server.port or backend.default_port or 8080
    defaults = manifest.defaults
    explicit = server.model_fields_set
    run = launch_with(
        backend, recipe, _prefix(backend, recipe, image), model.ref, "0.0.0.0", port,
        ctx=server.ctx, threads=_threads(server, recipe), args=args, env=env,
        api_key_env=server.api_key_env, is_file=model.is_file, embeddings=server.embeddings,
    )  # fmt: skip
    resolved = ResolvedModel(
        path=Path(model.ref),  # never opened: a registry name says so
        source=manifest.models[server.model].source,
        registry="ollama" if model.scheme == "ollama" else "cluster",
        known_digest=(manifest.models[server.model].sha256 or "").lower(),
    )
    spec = spec_for(
        name, backend.key, resolved, run, host="0.0.0.0", port=port,
        restart=server.restart if "restart" in explicit else defaults.restart,
        origin="manifest",
        ready_timeout=server.ready_timeout if "ready_timeout" in explicit
        else defaults.ready_timeout,
    )  # fmt: skip
    label = labels("server", object_name, backend.key)
    match = selector("server", object_name)
    hashed = {CONFIG_HASH: spec.config_hash}
    fetch_image = images.get("fetch", FETCH_IMAGE)
    deployment: Obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(object_name, cluster.namespace, label, annotations=dict(hashed)),
        "spec": {
            "replicas": server.replicas,
            "selector": {"matchLabels": match},
            "template": {
                "metadata": {"labels": dict(label), "annotations": dict(hashed)},
                "spec": _pod(server, spec, image, model, fetch_image),
            },
        },
    }
    service: Obj = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(object_name, cluster.namespace, label),
        "spec": {
            "type": "ClusterIP",
            "selector": dict(match),
            "ports": [
                {"name": PORT_NAME, "port": port, "targetPort": PORT_NAME, "protocol": "TCP"}
            ],
        },
    }
    url = f"http://{object_name}.{cluster.namespace}.svc.{cluster.cluster_domain}:{port}"
    return ClusterServer(name, object_name, spec, url, (deployment, service))
