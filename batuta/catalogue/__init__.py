"""The catalogue: every backend batuta knows, as data, in one place.

Adding a backend is one record in :mod:`batuta.catalogue.builtin` (plus an adapter module
only when it speaks a wire protocol no other backend speaks); the record types are in
:mod:`batuta.catalogue.records`, re-exported here with the rest of the public API. An installed distribution can add one through the
``batuta.backends`` entry-point group (:mod:`batuta.plugins`), loaded only when
:data:`CATALOGUE` is asked for a name it does not hold or for its full list. Nothing in
this module imports a third-party package, so the CLI can render tables and trees from it
without paying for httpx or pydantic.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping

from batuta.catalogue.builtin import _BUILTIN, LLAMACPP_DEFAULT_CTX
from batuta.catalogue.records import (
    GGUF_QUANTS,
    Backend,
    BackendCapabilities,
    Dialect,
    ModelFormat,
    Privacy,
    Recipe,
    ServingBackend,
    is_k_quant,
    local_backend,
    remote_backend,
)

__all__ = [
    "ALIASES",
    "CATALOGUE",
    "GGUF_QUANTS",
    "LLAMACPP_DEFAULT_CTX",
    "TREE_GROUPS",
    "Backend",
    "BackendCapabilities",
    "Catalogue",
    "Dialect",
    "ModelFormat",
    "Privacy",
    "Recipe",
    "ServingBackend",
    "allowed_in_tier",
    "is_k_quant",
    "local_backend",
    "local_backends",
    "lookup",
    "remote_backend",
    "remote_backends",
    "tier_allows",
]

TREE_GROUPS: tuple[str, ...] = (
    "local/paiml_native",
    "local/gguf_based",
    "local/rust_native",
    "local/python_based",
    "remote/huggingface",
    "remote/inference_providers",
    "remote/serverless_gpu",
    "remote/enterprise",
    "frontier_apis",
)


class Catalogue(MutableMapping[str, Backend]):
    """The built-in records, then the plugins' (loaded on first need: a key no built-in
    holds, or the whole list). Writes go to the built-ins (tests patch records)."""

    def __init__(self, builtin: dict[str, Backend]) -> None:
        self.builtin = builtin
        self._plugins: dict[str, Backend] | None = None

    def plugins(self) -> dict[str, Backend]:
        """The records installed plugins register. Raises PluginError naming the
        distribution of a plugin that fails to load or registers a bad record."""
        if self._plugins is None:
            from batuta import plugins

            self._plugins = plugins.load(self.builtin, ALIASES, TREE_GROUPS)
        return self._plugins

    def forget_plugins(self) -> None:
        """Look for plugins again next time (after installing one in this process)."""
        self._plugins = None

    def __getitem__(self, key: str) -> Backend:
        found = self.builtin.get(key)
        return found if found is not None else self.plugins()[key]

    def __iter__(self) -> Iterator[str]:
        plugins = self.plugins()
        yield from self.builtin
        yield from plugins

    def __len__(self) -> int:
        return len(self.builtin) + len(self.plugins())

    def __setitem__(self, key: str, value: Backend) -> None:
        self.builtin[key] = value

    def __delitem__(self, key: str) -> None:
        del self.builtin[key]


# Aliases users type (llama.cpp vs llamacpp, azure vs azure-openai, ...).
ALIASES: dict[str, str] = {
    "llama.cpp": "llamacpp",
    "llama-cpp": "llamacpp",
    "llama_cpp": "llamacpp",
    "azure": "azure-openai",
    "azure_openai": "azure-openai",
    "aws-bedrock": "bedrock",
    "aws_bedrock": "bedrock",
    "google-vertex": "vertex",
    "google_vertex": "vertex",
    "hf": "huggingface",
    "hf_endpoints": "hf-endpoints",
    "mistralrs": "candle",
    "mistral.rs": "candle",
    "tabbyapi": "exllamav2",
    "lm-studio": "lmstudio",
    "mlc-llm": "mlc",
    "local-ai": "localai",
}


CATALOGUE = Catalogue(_BUILTIN)


def lookup(name: str) -> Backend | None:
    """The record for a backend key or alias (case-insensitive), or None."""
    key = name.strip().lower()
    return CATALOGUE.get(ALIASES.get(key, key))


def local_backends() -> list[Backend]:
    """Every backend batuta can launch."""
    return [b for b in CATALOGUE.values() if b.local]


def remote_backends() -> list[Backend]:
    """Every backend reached over the network."""
    return [b for b in CATALOGUE.values() if not b.local]


def tier_allows(privacy_tier: str, privacy: Privacy) -> bool:
    """Whether a route of ``privacy_tier`` (sovereign|private|standard) may send a prompt
    where ``privacy`` says it goes: the one rule of tier membership."""
    if privacy_tier == "sovereign":
        return privacy is Privacy.LOCAL
    if privacy_tier == "private":
        return privacy in (Privacy.LOCAL, Privacy.DEDICATED)
    return True


def allowed_in_tier(backend: Backend, privacy_tier: str) -> bool:
    """Whether a route of ``privacy_tier`` may use ``backend`` (by the backend's privacy)."""
    return tier_allows(privacy_tier, backend.privacy)
