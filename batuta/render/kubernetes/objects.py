"""What every rendered Kubernetes object shares: names, labels, metadata, and the problems
a manifest can have that only a cluster cares about (each at its manifest line).

Objects are plain dicts, dumped by :mod:`.write` with sorted keys, so the same manifest
gives the same bytes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from batuta.errors import ManifestError, ManifestIssue

Obj = dict[str, Any]

MANAGED_BY = "batuta"
# The pod-template annotation that changes exactly when a server's config hash does.
CONFIG_HASH = "batuta.dev/config-hash"
SECRET_NAME = "batuta-secrets"  # the one Secret every key is read from
ROUTES_CONFIGMAP = "batuta-routes"
GATEWAY_NAME = "batuta-gateway"
MODELS_MOUNT = "/models"

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def dns_name(prefix: str, name: str) -> str:
    """``prefix-name`` as a DNS-1035 label (lower case, ``_`` and ``.`` become ``-``): a
    valid Service name too. May be invalid (too long): :func:`is_dns_label` says."""
    return f"{prefix}-{re.sub(r'[^a-z0-9-]', '-', name.lower())}".rstrip("-")


def is_dns_label(name: str) -> bool:
    """Whether ``name`` is a DNS-1035 label (what Service names must be; 63 at most)."""
    return len(name) <= 63 and _DNS_LABEL.match(name) is not None


def labels(component: str, instance: str, name: str) -> dict[str, str]:
    """Kubernetes' recommended labels for one of batuta's objects."""
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "batuta",
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def selector(component: str, instance: str) -> dict[str, str]:
    """The labels a Deployment's selector and its Service match on (immutable ones)."""
    return {"app.kubernetes.io/instance": instance, "app.kubernetes.io/component": component}


def metadata(name: str, namespace: str, label: dict[str, str], **extra: Any) -> Obj:
    return {"name": name, "namespace": namespace, "labels": dict(label), **extra}


def secret_env(variable: str, *, optional: bool = True) -> Obj:
    """An environment variable read from the Secret's key of the same name."""
    ref = {"name": SECRET_NAME, "key": variable, "optional": optional}
    return {"name": variable, "valueFrom": {"secretKeyRef": ref}}


@dataclass
class Problems:
    """Problems found while rendering, each at the manifest position it is about."""

    display: str
    positions: Callable[[str], tuple[int, int]]  # LoadedManifest.position
    issues: list[ManifestIssue] = field(default_factory=list)

    def add(self, dotted: str, message: str) -> None:
        line, col = self.positions(dotted)
        self.issues.append(ManifestIssue(self.display, line, col, dotted, message))

    def raise_any(self) -> None:
        if self.issues:
            raise ManifestError(self.issues)
