"""One typed options model per wire family, and which provider takes which.

Each model holds exactly the options its provider's adapter reads (unknown keys
forbidden); :data:`BY_PROVIDER` maps every built-in provider to its model, and every other
provider speaks the OpenAI wire (:func:`options_model`). Separate from the field types in
:mod:`batuta.manifest.option_fields` and from checking options against these models in
:mod:`batuta.manifest.options`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field

from batuta.catalogue import CATALOGUE, lookup
from batuta.manifest.option_fields import (
    OWNER_NAME_PATTERN,
    REGION_PATTERN,
    RESOURCE_PATTERN,
    EnvName,
    Flag,
    KeepAlive,
    Path,
    ProviderOptions,
)
from batuta.manifest.units import Duration


class _AuthHeader(BaseModel):
    auth_header: Literal["authorization", "api-key", "x-api-key"] | None = Field(
        default=None,
        description="how the key is sent: authorization (Bearer), api-key or x-api-key"
        " header; default: the provider's own",
    )


class _Template(BaseModel):
    chat_template: str | None = Field(
        default=None,
        description="Jinja chat template for raw-prompt routes (default: the model's own,"
        " from a GGUF header)",
    )
    bos_token: str | None = Field(default=None, description="the BOS string a template prints")
    eos_token: str | None = Field(default=None, description="the EOS string a template prints")
    add_bos_token: Flag | None = Field(
        default=None,
        description="the server adds BOS itself: a BOS the template prints is removed",
    )


class _HealthPath(BaseModel):
    health_path: Path | None = Field(
        default=None, description="readiness route, e.g. /health (default: the backend's)"
    )


class OpenAIOptions(_Template, _AuthHeader, _HealthPath, ProviderOptions):
    """OpenAI and every server speaking its Chat Completions wire."""

    api: Literal["chat", "completions"] | None = Field(
        default=None,
        description="completions: the legacy /completions route with a raw prompt"
        " (through chat_template when given); default chat",
    )
    organization: str | None = Field(default=None, description="sent as OpenAI-Organization")
    project: str | None = Field(default=None, description="sent as OpenAI-Project")


class ModalOptions(OpenAIOptions):
    """A Modal web endpoint speaking the OpenAI wire, optionally behind proxy auth."""

    proxy_key_env: EnvName | None = Field(
        default=None, description="variable holding the proxy-auth token id (Modal-Key)"
    )
    proxy_secret_env: EnvName | None = Field(
        default=None, description="variable holding the proxy-auth token secret (Modal-Secret)"
    )


class AzureOpenAIOptions(_Template, ProviderOptions):
    """Azure OpenAI: where the deployment is, which API version, how to authenticate."""

    resource: str | None = Field(
        default=None,
        pattern=RESOURCE_PATTERN,
        description="fills https://{resource}.openai.azure.com when base_url is not given",
    )
    deployment: str | None = Field(default=None, description="deployment name; default: model")
    api_version: str | None = Field(
        default=None,
        description="e.g. 2024-10-21: the deployment route with ?api-version=; absent: the"
        " v1 API (/openai/v1, model = deployment)",
    )
    auth: Literal["api-key", "key", "entra", "aad", "azure-ad"] | None = Field(
        default=None,
        description="api-key header or Microsoft Entra bearer token; default: the key when"
        " its variable is set, else the token",
    )
    token_env: EnvName | None = Field(
        default=None,
        description="variable holding an Entra access token (default AZURE_OPENAI_AD_TOKEN)",
    )
    api: Literal["chat", "completions"] | None = Field(
        default=None, description="completions: the legacy /completions route"
    )


class AnthropicOptions(_AuthHeader, ProviderOptions):
    """Anthropic's Messages API."""

    anthropic_version: str | None = Field(
        default=None, description="the anthropic-version header (default 2023-06-01)"
    )
    anthropic_beta: str | None = Field(
        default=None, description="the anthropic-beta header: comma-separated beta flags"
    )


class BedrockOptions(ProviderOptions):
    """AWS Bedrock Runtime (Converse); param.<field> goes to additionalModelRequestFields."""

    region: str | None = Field(
        default=None,
        pattern=REGION_PATTERN,
        description="e.g. us-east-1; default: the one in base_url, then AWS_REGION /"
        " AWS_DEFAULT_REGION",
    )
    auth: Literal["sigv4", "iam", "bedrock-bearer", "bearer", "api-key"] | None = Field(
        default=None,
        description="SigV4 signing or a Bedrock API key; default: bearer when token_env's"
        " variable is set",
    )
    token_env: EnvName | None = Field(
        default=None, description="Bedrock API key variable (default AWS_BEARER_TOKEN_BEDROCK)"
    )
    secret_key_env: EnvName | None = Field(
        default=None, description="SigV4 secret key variable (default AWS_SECRET_ACCESS_KEY)"
    )
    session_token_env: EnvName | None = Field(
        default=None, description="SigV4 session token variable (default AWS_SESSION_TOKEN)"
    )


class VertexOptions(ProviderOptions):
    """Google Vertex AI; param.<field> goes to generationConfig."""

    project: str | None = Field(
        default=None, description="default: GOOGLE_CLOUD_PROJECT, then the ADC project"
    )
    location: str | None = Field(
        default=None,
        description="e.g. europe-west4; global (the default) uses aiplatform.googleapis.com",
    )
    token_env: EnvName | None = Field(
        default=None,
        description="variable holding an OAuth access token (default: api_key_env, then"
        " Application Default Credentials)",
    )


class GeminiOptions(VertexOptions):
    """The Gemini Developer API, or Vertex AI through it (api: vertex, or a project)."""

    api: Literal["gemini", "vertex"] | None = Field(
        default=None, description="vertex: Vertex AI addressing (also when project is set)"
    )


def _wait_range(seconds: float) -> float:
    if not 1 <= seconds <= 60:
        raise ValueError("must be between 1s and 60s (Replicate waits at most a minute)")
    return seconds


def _positive(seconds: float) -> float:
    if seconds <= 0:
        raise ValueError("must be longer than 0s")
    return seconds


class ReplicateOptions(_AuthHeader, ProviderOptions):
    """Replicate predictions; param.<input> adds any input of the model's schema."""

    version: str | None = Field(default=None, description="a version id: POST /v1/predictions")
    deployment: str | None = Field(
        default=None,
        pattern=OWNER_NAME_PATTERN,
        description="owner/name: POST /v1/deployments/{owner}/{name}/predictions",
    )
    max_tokens_field: str | None = Field(
        default=None, description="the input capping output tokens (default max_tokens)"
    )
    wait: Annotated[Duration, AfterValidator(_wait_range)] | None = Field(
        default=None,
        description="upper bound for Prefer: wait, 1s-60s (default 60s); kept below the"
        " route's first-byte timeout",
    )
    poll_interval: Annotated[Duration, AfterValidator(_positive)] | None = Field(
        default=None, description="first polling interval (default 500ms), growing to 5s"
    )
    timeout: Annotated[Duration, AfterValidator(_positive)] | None = Field(
        default=None, description="polling limit when the route sets no deadline (default 10m)"
    )


class TGIOptions(_Template, _AuthHeader, _HealthPath, ProviderOptions):
    """Hugging Face TGI; param.<field> goes to parameters."""

    api: Literal["generate", "messages"] | None = Field(
        default=None,
        description="messages: TGI's OpenAI-compatible Messages API; default generate",
    )


class HFEndpointsOptions(_Template, _AuthHeader, _HealthPath, ProviderOptions):
    """Hugging Face Inference Endpoints."""

    engine: Literal["openai", "tgi"] | None = Field(
        default=None,
        description="openai (default): /v1/chat/completions; tgi: the native /generate",
    )


class OllamaOptions(_AuthHeader, _HealthPath, ProviderOptions):
    """Ollama's native chat API; param.<name> goes to options (param.num_ctx: 8192)."""

    keep_alive: KeepAlive | None = None


class RealizarOptions(_Template, _AuthHeader, ProviderOptions):
    """realizar's native API."""

    openai_api: Flag | None = Field(
        default=None, description="true: its OpenAI-compatible /v1 routes instead"
    )
    strategy: Literal["greedy", "top_k", "top_p"] | None = Field(
        default=None, description="sampling strategy (default: from the request)"
    )
    model_id: str | None = Field(
        default=None, description="the model to use on a multi-model server"
    )


# The options each provider's adapter reads; every other provider speaks the OpenAI wire.
_SPECIAL: dict[str, type[ProviderOptions]] = {
    "azure-openai": AzureOpenAIOptions,
    "anthropic": AnthropicOptions,
    "bedrock": BedrockOptions,
    "vertex": VertexOptions,
    "gemini": GeminiOptions,
    "replicate": ReplicateOptions,
    "tgi": TGIOptions,
    "hf-endpoints": HFEndpointsOptions,
    "ollama": OllamaOptions,
    "realizar": RealizarOptions,
    "modal": ModalOptions,
}
# The built-ins only: listing the whole catalogue here would load plugins at import time
# (and make the committed schema depend on what is installed).
BY_PROVIDER: dict[str, type[ProviderOptions]] = {
    key: _SPECIAL.get(key, OpenAIOptions) for key in CATALOGUE.builtin
}


def options_model(provider: str) -> type[ProviderOptions] | None:
    """The options model of ``provider`` (a key or alias, any case); None when unknown.
    A plugin's backend of the OpenAI protocol takes the OpenAI options."""
    backend = lookup(provider)
    if backend is None:
        return None
    found = BY_PROVIDER.get(backend.key)
    if found is None and backend.protocol == "openai":
        return OpenAIOptions
    return found
