"""The gateway in a cluster: the routing table and the manifest's gateway block
(:mod:`.gateway_config`) in a ConfigMap, a Deployment running ``batuta gateway`` on them,
and its Service.

The table is :func:`batuta.routing.build.build_table` of the manifest, with each local
target at its server's in-cluster Service name (``server-NAME.NS.svc.DOMAIN``); the
gateway is told that domain is its own (``BATUTA_SOVEREIGN_DOMAINS``), so sovereign routes
may use it. Every key variable the table names, and every client key's, is read from the
Secret through ``secretKeyRef``; only the names are rendered. The gateway's container is
configured in :func:`gateway_container` alone; the Redis its replicas share
(``gateway.state`` or ``kubernetes.redis``) is in :mod:`.redis`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from batuta._util.net import SOVEREIGN_DOMAINS_ENV
from batuta.render.kubernetes.gateway_config import (
    GATEWAY_FILE,
    client_key_variables,
    gateway_config_text,
)
from batuta.render.kubernetes.objects import (
    CONFIG_HASH,
    GATEWAY_NAME,
    ROUTES_CONFIGMAP,
    Obj,
    labels,
    metadata,
    secret_env,
    selector,
)
from batuta.render.kubernetes.redis import state_variables
from batuta.routing.table import RoutingTable

if TYPE_CHECKING:
    from batuta.manifest import LoadedManifest
    from batuta.render.kubernetes.servers import ClusterServer

ROUTES_FILE = "routes.json"
TABLE_DIR = "/etc/batuta"
STATE_DIR = "/var/lib/batuta"  # breakers and spend of this replica (an emptyDir)
PORT = 8080  # inside the pod; the Service's port is kubernetes.gateway.port


def routing_table(loaded: LoadedManifest, servers: Mapping[str, ClusterServer]) -> RoutingTable:
    """The table ``batuta gateway`` serves in the cluster."""
    from batuta.routing.build import build_table

    table = build_table(loaded, servers)
    # The manifest's path on this machine means nothing in the cluster: its name does.
    return replace(table, manifest=loaded.path.name)


def table_text(table: RoutingTable) -> str:
    """The table as ``batuta apply`` writes it (:func:`batuta.routing.table.write_table`)."""
    return json.dumps(table.to_json(), indent=2, sort_keys=True) + "\n"


def key_variables(table: RoutingTable) -> list[str]:
    """Every key variable the table names (the gateway reads them at request time)."""
    names = {t.api_key_env for r in table.routes.values() for t in r.targets if t.api_key_env}
    return sorted(names)


def gateway_container(loaded: LoadedManifest, table: RoutingTable, image: str) -> Obj:
    """``batuta gateway`` on the mounted table, listening on the pod's address."""
    cluster = loaded.manifest.kubernetes
    domain = f"{cluster.namespace}.svc.{cluster.cluster_domain}"
    env: list[Obj] = [
        {"name": "BATUTA_STATE_DIR", "value": STATE_DIR},
        {"name": SOVEREIGN_DOMAINS_ENV, "value": domain},
    ]
    # Optional: a key left out of the Secret fails its target over, as an unset variable
    # does on one machine; a client key left out is disabled (none left: it does not start).
    clients = client_key_variables(loaded)
    env += [secret_env(name) for name in sorted({*key_variables(table), *clients})]
    env += [secret_env(name, optional=False) for name in state_variables(loaded)]
    # With keys the gateway refuses a client without one; without, it is open to whatever
    # the Service and a NetworkPolicy let in, which it must be told it may be.
    open_to_all = [] if clients else ["--any-address"]
    probe = {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 10}
    return {
        "name": "gateway",
        "image": image,
        "command": ["batuta", "gateway"],
        "args": [
            "--table", f"{TABLE_DIR}/{ROUTES_FILE}",
            "--gateway-config", f"{TABLE_DIR}/{GATEWAY_FILE}",
            "--listen", f"0.0.0.0:{PORT}", *open_to_all,
        ],
        "env": env,
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": probe,
        "livenessProbe": {**probe, "failureThreshold": 3},
        "volumeMounts": [
            {"name": "routes", "mountPath": TABLE_DIR, "readOnly": True},
            {"name": "state", "mountPath": STATE_DIR},
        ],
        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True},
    }  # fmt: skip


def gateway_objects(loaded: LoadedManifest, table: RoutingTable, image: str) -> list[Obj]:
    """The ConfigMap, Deployment and Service of the gateway."""
    cluster = loaded.manifest.kubernetes
    ns = cluster.namespace
    text = table_text(table)
    block = gateway_config_text(loaded)
    label = labels("gateway", GATEWAY_NAME, "batuta")
    match = selector("gateway", GATEWAY_NAME)
    # The gateway re-reads a changed table, but a ConfigMap volume takes up to a minute to
    # follow: the digest in the pod template rolls the gateway at once instead. The gateway
    # block is read at start only, so its change must roll the gateway too.
    digest = hashlib.sha256(f"{text}\0{block}".encode()).hexdigest()[:16]
    hashed = {CONFIG_HASH: digest}
    configmap: Obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(ROUTES_CONFIGMAP, ns, labels("routes", ROUTES_CONFIGMAP, "batuta")),
        "data": {ROUTES_FILE: text, GATEWAY_FILE: block},
    }
    deployment: Obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(GATEWAY_NAME, ns, label, annotations=dict(hashed)),
        "spec": {
            "replicas": cluster.gateway.replicas,
            "selector": {"matchLabels": match},
            "template": {
                "metadata": {"labels": dict(label), "annotations": dict(hashed)},
                "spec": {
                    "containers": [gateway_container(loaded, table, image)],
                    "volumes": [
                        {"name": "routes", "configMap": {"name": ROUTES_CONFIGMAP}},
                        {"name": "state", "emptyDir": {}},
                    ],
                },
            },
        },
    }
    service: Obj = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(GATEWAY_NAME, ns, label),
        "spec": {
            "type": cluster.gateway.service_type,
            "selector": dict(match),
            "ports": [
                {"name": "http", "port": cluster.gateway.port, "targetPort": "http",
                 "protocol": "TCP"},
            ],
        },
    }  # fmt: skip
    return [configmap, deployment, service]
