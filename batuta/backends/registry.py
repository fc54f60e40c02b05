"""Which adapter class speaks to a target, imported only when a query needs it.

The catalogue names each backend's adapter by dotted path (``module:Class``); a target whose
backend is not in the catalogue is served by its protocol family's adapter.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from batuta.catalogue import lookup
from batuta.errors import BackendError, FailureKind

if TYPE_CHECKING:
    from batuta.backends._http import HttpClient
    from batuta.backends.base import Adapter
    from batuta.backends.types import Target

PROTOCOL_ADAPTERS: dict[str, str] = {
    "openai": "batuta.backends.openai:OpenAIAdapter",
    "ollama": "batuta.backends.ollama:OllamaAdapter",
    "tgi": "batuta.backends.tgi:TGIAdapter",
    "realizar": "batuta.backends.realizar:RealizarAdapter",
    "anthropic": "batuta.backends.anthropic:AnthropicAdapter",
    "azure": "batuta.backends.azure:AzureOpenAIAdapter",
    "bedrock": "batuta.backends.bedrock:BedrockAdapter",
    "gemini": "batuta.backends.gemini:GeminiAdapter",
    "replicate": "batuta.backends.replicate:ReplicateAdapter",
    "hf-endpoints": "batuta.backends.hf_endpoints:HFEndpointAdapter",
}


def adapter_path(target: Target) -> str:
    """The ``module:Class`` path serving ``target``: its catalogue record's, else its
    protocol family's."""
    record = lookup(target.backend)
    if record is not None:
        return record.adapter
    path = PROTOCOL_ADAPTERS.get(target.protocol)
    if path is None:
        raise BackendError(
            FailureKind.CLIENT,
            f"{target.name}: unknown backend {target.backend!r} and protocol {target.protocol!r}",
        )
    return path


def adapter_class(target: Target) -> type[Adapter]:
    """Import and return the adapter class for ``target``."""
    from batuta.backends.base import Adapter

    path = adapter_path(target)
    module_name, _, class_name = path.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise BackendError(
            FailureKind.CLIENT, f"{target.name}: adapter {path} is not available ({exc})"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise BackendError(FailureKind.CLIENT, f"{target.name}: {path} is not an adapter")
    return cls


def adapter_for(target: Target, client: HttpClient) -> Adapter:
    """A ready adapter for ``target`` sharing ``client``. Raises BackendError(CLIENT) when
    no adapter can serve it, so a router falls over to the next target."""
    return adapter_class(target)(target, client)
