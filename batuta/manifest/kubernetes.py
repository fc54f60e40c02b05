"""The manifest's cluster choices: the ``kubernetes:`` section and each server's placement.

``batuta apply`` ignores all of it; ``batuta render kubernetes`` reads it. Cluster-wide
choices (namespace, model volumes, images, the gateway's replicas and Service) sit under
``kubernetes:``; what differs per server (replicas, image, resources, node selector,
tolerations) sits on the server, with the types defined here.
Quantities are Kubernetes' own (``500m``, ``4Gi``), so they pass through unchanged.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# Kubernetes' quantity grammar (resource.Quantity): a number with an optional suffix.
QUANTITY_PATTERN = r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|[KMGTPE]i|[mkMGTPE])?$"
# A DNS-1123 label: what a namespace (and every rendered object's name) must be.
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# An image reference: [registry/]repository[:tag][@digest], no spaces.
IMAGE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$"

Quantity = Annotated[str, Field(pattern=QUANTITY_PATTERN, description="e.g. 500m, 4Gi")]
# A bare number is a quantity too (``cpu: 2``).
Amount = Annotated[Quantity | Annotated[float, Field(gt=0)], Field(description="e.g. 2, 500m, 4Gi")]
Image = Annotated[str, Field(pattern=IMAGE_PATTERN, description="registry/repository:tag")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resources(_Strict):
    """What one replica of a server asks the cluster for (requests = limits)."""

    cpu: Amount | None = None
    memory: Amount | None = None
    gpu: int | None = Field(default=None, ge=0, description="NVIDIA GPUs (nvidia.com/gpu)")


class Toleration(_Strict):
    """A Kubernetes toleration, as in a pod spec (snake_case keys)."""

    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(default=None, ge=0)


class ModelStorage(_Strict):
    """The PersistentVolumeClaim each model is downloaded into."""

    size: Quantity = "20Gi"
    storage_class: str | None = Field(default=None, description="default: the cluster's")
    access_mode: Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"] = Field(
        default="ReadWriteOnce",
        description="ReadWriteMany lets replicas on several nodes share one volume",
    )


class ClusterGateway(_Strict):
    """The gateway's Deployment and Service."""

    replicas: int = Field(default=1, ge=1, le=100)
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    port: int = Field(default=8080, ge=1, le=65535)


class Kubernetes(_Strict):
    """Cluster-wide choices of ``batuta render kubernetes``."""

    namespace: str = Field(default="batuta", pattern=DNS_LABEL_PATTERN, max_length=63)
    cluster_domain: str = Field(default="cluster.local", pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])$")
    model_storage: ModelStorage = Field(default_factory=ModelStorage)
    images: dict[str, Image] = Field(
        default_factory=dict,
        description="image overrides: gateway, fetch (model downloads) or a backend name",
    )
    gateway: ClusterGateway = Field(default_factory=ClusterGateway)
    redis: bool = Field(
        default=False,
        description="render a small Redis (no persistence) that the gateway's replicas share"
        " spend, rate buckets and breakers through (see gateway.state)",
    )
