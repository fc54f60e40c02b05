"""Each provider's ``endpoints.*.options``: exactly the options its adapter reads, typed.

One pydantic model per wire family (unknown keys forbidden, durations in human units,
booleans as booleans), picked by the endpoint's ``provider`` (:func:`options_model`). The
JSON Schema offers them through ``if provider is ... then options is ...`` (see
:func:`provider_options_schema`), so an editor completes ``resource:`` under
``provider: azure-openai`` and flags ``resorce:``. ``param.<field>`` keys pass any JSON
value through to the request body.

The endpoint keeps its options as a flat mapping of JSON values (``param.top_k: 40``
included), which the routing table stores as they are and the adapters read through
:mod:`batuta._util.options`.

Strings where a boolean or a JSON value belongs (``add_bos_token: "true"``,
``param.top_k: "40"``) are what options were before they were typed: they still load, for
one release, and :func:`deprecations` names each so validate and plan can warn.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from batuta._util.fuzzy import did_you_mean
from batuta._util.options import OptionValue
from batuta.catalogue import ALIASES, CATALOGUE, lookup
from batuta.manifest.units import Duration, parse_duration

PARAM = "param."
PARAM_PATTERN = r"^param\..+$"
_ENV = r"^[A-Za-z_][A-Za-z0-9_]*$"
KEEP_ALIVE_PATTERN = r"^\s*-?\d+(\.\d+)?\s*(ms|s|m|h)?\s*$"
_REGION = r"^[a-z]{2}(-[a-z]+)+-\d+$"
_PATH = r"^/"
_OWNER_NAME = r"^[^/\s]+/[^/\s]+$"
_RESOURCE = r"^[A-Za-z0-9][A-Za-z0-9-]*$"
# What the schema says when an option misses its pattern (see schema._pattern_message).
PATTERN_HINTS = {
    KEEP_ALIVE_PATTERN: "is not a keep_alive; use e.g. 10m, 30s, 0 (unload) or -1 (keep)",
    _REGION: "is not an AWS region; use e.g. us-east-1",
    _PATH: "must be a path starting with /, e.g. /health",
    _OWNER_NAME: "must be owner/name",
    _RESOURCE: "must be the resource name only (letters, digits, -), not its URL",
}
_DEPRECATED = "(strings are deprecated)"


def _legacy_bool(value: object) -> object:
    # Before options were typed every value was a string: "true" / "false" still load.
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return value


Flag = Annotated[
    bool,
    BeforeValidator(_legacy_bool),
    WithJsonSchema(
        {"anyOf": [{"type": "boolean"}, {"enum": ["true", "false"], "deprecated": True}]}
    ),
]


def parse_keep_alive(value: object) -> int:
    """Ollama's ``keep_alive``: a duration (``10m``), seconds, ``0`` (unload at once) or any
    negative value (keep loaded) → whole seconds, -1 for "keep"."""
    if isinstance(value, str) and re.match(KEEP_ALIVE_PATTERN, value) and "-" in value:
        return -1
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        return -1
    return math.ceil(parse_duration(value))


KeepAlive = Annotated[
    int,
    BeforeValidator(parse_keep_alive),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer"},
                {"type": "string", "pattern": KEEP_ALIVE_PATTERN},
            ],
            "description": "how long the model stays loaded: 10m, seconds, 0 unloads at"
            " once, -1 keeps it loaded",
        }
    ),
]
EnvName = Annotated[str, Field(pattern=_ENV)]
Path = Annotated[str, Field(pattern=_PATH)]


class ProviderOptions(BaseModel):
    """What every adapter reads: ``param.<field>`` extras for the request body."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "patternProperties": {
                PARAM_PATTERN: {
                    "description": "an extra request field, sent as written"
                    ' (param.top_k: 40 sends "top_k": 40)'
                }
            }
        },
    )

    params: SkipJsonSchema[dict[str, JsonValue]] = Field(default_factory=dict, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _split_params(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        params: dict[str, Any] = {}
        rest: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(key, str) and key.startswith(PARAM) and len(key) > len(PARAM):
                params[key[len(PARAM) :]] = _legacy_json(value)
            elif key == "params":  # the field param.* keys fill, not an option: unknown
                rest["params "] = value
            else:
                rest[key] = value
        return {**rest, "params": params}

    def flat(self) -> dict[str, OptionValue]:
        """The options as the endpoint and the routing table keep them: only those written,
        typed, with ``param.<field>`` keys as written."""
        out: dict[str, OptionValue] = self.model_dump(exclude_unset=True, exclude={"params"})
        out.update({PARAM + k: v for k, v in self.params.items()})
        return out


def _legacy_json(value: object) -> object:
    # param.* values were strings read as JSON when they parse ("40" sent 40): still so.
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


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
        pattern=_RESOURCE,
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
        pattern=_REGION,
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
        pattern=_OWNER_NAME,
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


def typed_options(provider: str | None, options: Any) -> Any:
    """``options`` checked against the provider's model and flattened (see
    :meth:`ProviderOptions.flat`); unchanged for an unknown provider. ValueError names each
    problem (``options.resorce: unknown key ...``)."""
    model = options_model(provider) if isinstance(provider, str) else None
    if model is None or not isinstance(options, Mapping):
        return options
    try:
        return model.model_validate(options).flat()
    except ValidationError as exc:
        problems = _problems(model, exc)
        raise ValueError("; ".join(f"options.{k}: {m}" for k, m in problems)) from None


def option_problems(provider: str | None, options: Any) -> list[tuple[str, str]]:
    """``(key, message)`` for each option ``provider`` does not take as written; empty
    when they are all fine (or the provider is unknown: that is reported on its own)."""
    model = options_model(provider) if isinstance(provider, str) else None
    if model is None or not isinstance(options, Mapping):
        return []
    try:
        model.model_validate(options)
    except ValidationError as exc:
        return _problems(model, exc)
    return []


def _problems(model: type[ProviderOptions], exc: ValidationError) -> list[tuple[str, str]]:
    keys = [k for k in model.model_fields if k != "params"]
    found: list[tuple[str, str]] = []
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        name = str(loc[0]).strip() if loc else ""
        if error["type"] == "extra_forbidden":
            hint = did_you_mean(name, keys)
            listed = ", ".join([*keys, "param.<field>"])
            found.append((name, f"unknown key {name!r}{hint}; valid keys: {listed}"))
        else:
            found.append((name, str(error["msg"]).removeprefix("Value error, ")))
    return found


def deprecations(provider: str | None, options: Any) -> Iterator[tuple[str, str]]:
    """``(key, message)`` for each option written as a string where its type is not one:
    a boolean (``"true"``) or a ``param.*`` value that reads as JSON (``"40"``)."""
    model = options_model(provider) if isinstance(provider, str) else None
    if model is None or not isinstance(options, Mapping):
        return
    flags = {k for k, f in model.model_fields.items() if Flag in _args(f.annotation)}
    for key, value in options.items():
        if not isinstance(key, str) or not isinstance(value, str):
            continue
        typed: object = value
        if key in flags:
            typed = _legacy_bool(value)
        elif key.startswith(PARAM) and len(key) > len(PARAM):
            typed = _legacy_json(value)
        if not isinstance(typed, str):
            written = json.dumps(typed, ensure_ascii=False)
            yield key, f"{json.dumps(value)} is a string; write {written} {_DEPRECATED}"


def _args(annotation: Any) -> tuple[Any, ...]:
    return (annotation, *getattr(annotation, "__args__", ()))


def provider_options_schema(ref: str = "#/$defs/{model}") -> tuple[dict[str, Any], list[Any]]:
    """The options models' JSON Schemas (``$defs`` entries) and, for the endpoint schema's
    ``allOf``, one ``if provider is one of ... then options is ...`` per model."""
    names: dict[type[ProviderOptions], list[str]] = {}
    for key, model in BY_PROVIDER.items():
        names.setdefault(model, []).append(key)
    for alias, key in ALIASES.items():
        names[BY_PROVIDER[key]].append(alias)
    defs: dict[str, Any] = {}
    rules: list[Any] = []
    for model, providers in names.items():
        defs[model.__name__] = model.model_json_schema(ref_template=ref)
        rules.append(
            {
                "if": {
                    "properties": {"provider": {"enum": sorted(providers)}},
                    "required": ["provider"],
                },
                "then": {"properties": {"options": {"$ref": ref.format(model=model.__name__)}}},
            }
        )
    return defs, rules


__all__ = [
    "BY_PROVIDER",
    "PARAM",
    "ProviderOptions",
    "deprecations",
    "option_problems",
    "options_model",
    "provider_options_schema",
    "typed_options",
]
