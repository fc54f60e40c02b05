"""Privacy as policy: when every route the gateway serves is ``sovereign``, a NetworkPolicy
lets the gateway's pods reach batuta's servers (and its Redis) and the cluster's DNS, and
nothing else.

The tier is then enforced twice: by the router's check before each request, and by the
cluster, which drops a packet to anywhere outside even if the table were edited.
"""

from __future__ import annotations

from batuta.render.kubernetes.objects import (
    GATEWAY_NAME,
    MANAGED_BY,
    Obj,
    labels,
    metadata,
    selector,
)
from batuta.routing.table import RoutingTable

POLICY_NAME = "batuta-gateway-egress"


def all_sovereign(table: RoutingTable) -> bool:
    """Whether the table has routes and every one of them is sovereign."""
    return bool(table.routes) and all(r.privacy == "sovereign" for r in table.routes.values())


def egress_policy(namespace: str) -> Obj:
    """The gateway may reach batuta's servers in its namespace, and DNS."""
    servers = {
        "app.kubernetes.io/component": "server",
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }
    state = {"app.kubernetes.io/component": "state", "app.kubernetes.io/managed-by": MANAGED_BY}
    dns = {
        "namespaceSelector": {},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(POLICY_NAME, namespace, labels("policy", POLICY_NAME, "batuta")),
        "spec": {
            "podSelector": {"matchLabels": selector("gateway", GATEWAY_NAME)},
            "policyTypes": ["Egress"],
            "egress": [
                # batuta's servers, and its Redis when it renders one (kubernetes.redis)
                {
                    "to": [
                        {"podSelector": {"matchLabels": servers}},
                        {"podSelector": {"matchLabels": state}},
                    ]
                },
                {
                    "to": [dns],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                },
            ],
        },
    }
