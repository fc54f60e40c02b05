"""Shared gateway state in the cluster: where the replicas' Redis is, and, when the
manifest asks for one (``kubernetes.redis: true``), a small Redis of batuta's own.

With ``gateway.state: redis://...`` (an external Redis) the gateway's block carries the URL
as written; with ``kubernetes.redis`` it carries the in-cluster Service's URL. Either way a
password is read by the gateway, and by batuta's Redis, from the Secret
(``gateway.state_password_env``), never rendered. batuta's Redis keeps nothing on disk:
spend restarts from zero when its pod does, which is why an external Redis (with its own
persistence) is the choice for budgets that must survive that. Several gateway replicas
without either keep their counters per replica: render says so.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from batuta.render.kubernetes.objects import (
    CONFIG_HASH,
    Obj,
    labels,
    metadata,
    secret_env,
    selector,
)

if TYPE_CHECKING:
    from batuta.manifest import LoadedManifest

REDIS_NAME = "batuta-redis"
REDIS_IMAGE = "redis:7.4.2-alpine"  # pinned: the official image, Redis 7
REDIS_PORT = 6379


def state_url(loaded: LoadedManifest) -> str | None:
    """The Redis the gateway's replicas share (None: each keeps its own counters)."""
    manifest = loaded.manifest
    if manifest.gateway.state is not None:
        return manifest.gateway.state
    if manifest.kubernetes.redis:
        cluster = manifest.kubernetes
        host = f"{REDIS_NAME}.{cluster.namespace}.svc.{cluster.cluster_domain}"
        return f"redis://{host}:{REDIS_PORT}/0"
    return None


def state_variables(loaded: LoadedManifest) -> list[str]:
    """The Secret's key holding the Redis password, when the manifest names one."""
    env = loaded.manifest.gateway.state_password_env
    return [env] if env is not None else []


def replica_warning(loaded: LoadedManifest) -> str | None:
    """What render says when several replicas would each count on their own."""
    replicas = loaded.manifest.kubernetes.gateway.replicas
    if replicas <= 1 or state_url(loaded) is not None:
        return None
    return (
        f"⚠ kubernetes.gateway.replicas: {replicas} gateway replicas without gateway.state"
        " each keep their own budget, rate and breaker counters (a budget is then spent"
        f" up to {replicas} times over): set gateway.state: redis://... or kubernetes.redis:"
        " true"
    )


def redis_objects(loaded: LoadedManifest) -> list[Obj]:
    """batuta's own Redis (``kubernetes.redis``): a Deployment and its Service."""
    if not loaded.manifest.kubernetes.redis:
        return []
    ns = loaded.manifest.kubernetes.namespace
    label = labels("state", REDIS_NAME, "redis")
    match = selector("state", REDIS_NAME)
    args = ["--save", "", "--appendonly", "no"]  # shared counters, not data to keep
    env: list[Obj] = []
    for name in state_variables(loaded):
        env.append(secret_env(name, optional=False))
        args += ["--requirepass", f"$({name})"]  # expanded by the kubelet, never rendered
    probe = {"tcpSocket": {"port": "redis"}, "periodSeconds": 10}
    container: Obj = {
        "name": "redis",
        "image": REDIS_IMAGE,
        "args": args,
        "ports": [{"name": "redis", "containerPort": REDIS_PORT, "protocol": "TCP"}],
        "readinessProbe": probe,
        "livenessProbe": {**probe, "failureThreshold": 3},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                      "limits": {"memory": "256Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                            "runAsUser": 999},
    }  # fmt: skip
    if env:
        container["env"] = env
    # Like every pod batuta renders: the digest of what it runs, which rolls it on a change.
    digest = hashlib.sha256(json.dumps(container, sort_keys=True).encode()).hexdigest()[:16]
    hashed = {CONFIG_HASH: digest}
    deployment: Obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(REDIS_NAME, ns, label, annotations=dict(hashed)),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": match},
            "template": {
                "metadata": {"labels": dict(label), "annotations": dict(hashed)},
                "spec": {"containers": [container]},
            },
        },
    }
    service: Obj = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(REDIS_NAME, ns, label),
        "spec": {
            "type": "ClusterIP",
            "selector": dict(match),
            "ports": [{"name": "redis", "port": REDIS_PORT, "targetPort": "redis",
                       "protocol": "TCP"}],
        },
    }  # fmt: skip
    return [deployment, service]
