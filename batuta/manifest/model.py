"""The manifest as pydantic models: the shape of ``batuta.yaml``.

Unknown keys are forbidden everywhere. Durations and sizes accept human units
(``30s``, ``500ms``, ``2m``, ``2GiB``) and are normalised to seconds and bytes.
Cross-field rules (references, ports, privacy, quantization) live in ``rules.py``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from batuta._util.options import OptionValue
from batuta.manifest.gateway import Gateway
from batuta.manifest.kubernetes import Image, Kubernetes, Resources, Toleration
from batuta.manifest.units import Duration, Size

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Model(_Strict):
    """A model file (or registry name) that servers load."""

    source: str = Field(
        description="pkg://package/file.gguf, ./path.gguf, hf://org/repo/file.gguf, "
        "ollama://name:tag or https://..."
    )
    format: Literal[
        "gguf", "safetensors", "pytorch", "onnx", "tensorrt", "openvino", "mlc", "exl2"
    ] = "gguf"
    quantization: str | None = Field(
        default=None, description="Q4_K_M, Q4_1, F16, EXL2, ... checked against the file"
    )
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    revision: str | None = None


class Queue(_Strict):
    """Where requests beyond a server's ``max_concurrency`` wait, in arrival order."""

    max: int = Field(default=64, ge=0, description="requests that may wait at once")
    timeout: Duration = Field(default=30.0, description="how long one may wait")


class Server(_Strict):
    """A local inference server batuta launches and supervises."""

    backend: str = Field(description="realizar | ollama | llamacpp | llamafile | candle | ...")
    model: str = Field(description="name of an entry under models:")
    host: str = "127.0.0.1"
    port: int | None = Field(
        default=None, ge=1, le=65535, description="allocated from a range when absent"
    )
    ctx: int | None = Field(default=None, ge=128, description="context size in tokens")
    threads: int | None = Field(default=None, ge=1)
    args: list[str] = Field(default_factory=list, description="extra command-line arguments")
    env: dict[str, str] = Field(default_factory=dict)
    restart: Literal["always", "on-failure", "never"] = "on-failure"
    executable: str | None = Field(default=None, description="path of the server executable")
    engine: Literal["server", "python"] | None = Field(
        default=None,
        description="llamacpp only: server = llama.cpp's own llama-server, python ="
        " llama-cpp-python's server; default: llama-server when installed",
    )
    ready_timeout: Duration = 120.0
    embeddings: bool = Field(
        default=False,
        description="serve POST /v1/embeddings too (llama.cpp: --embeddings, mean pooling"
        " unless args set --pooling); the gateway sends embeddings only to such servers",
    )
    api_key_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="name of the variable holding the key the server is to require; batuta"
        " passes it to the engine and sends it with every request",
    )
    start: Literal["always", "on-demand"] = Field(
        default="always",
        description="always: apply starts it; on-demand: apply only records it, the first"
        " request starts it and it stops after idle_timeout without requests",
    )
    idle_timeout: Duration | None = Field(
        default=None, description="on-demand only: stop after this long without a request"
    )
    memory: Size | None = Field(
        default=None, description="what it uses; estimated from the GGUF when absent"
    )
    max_concurrency: int | None = Field(
        default=None, ge=1, description="requests in flight at once; more wait in the queue"
    )
    queue: Queue | None = None
    # How a cluster runs it (batuta render kubernetes; batuta apply ignores these).
    replicas: int = Field(default=1, ge=0, le=1000, description="Kubernetes replicas")
    image: Image | None = Field(default=None, description="default: the backend's own image")
    resources: Resources | None = None
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)


# Which options an endpoint takes depends on its provider: the schema adds one
# "if provider ... then options ..." per provider (batuta.manifest.options); an unknown
# provider is reported by itself, whatever its options.
_ANY_OPTIONS = {"type": "object", "additionalProperties": True}


class Endpoint(_Strict):
    """A remote API (or an already-running server batuta does not manage)."""

    provider: str = Field(description="openai | anthropic | groq | together | ... ")
    model: str
    base_url: str | None = None
    api_key_env: str | None = Field(
        default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="name of the key variable"
    )
    options: Annotated[dict[str, OptionValue], WithJsonSchema(_ANY_OPTIONS)] = Field(
        default_factory=dict,
        description="the provider's own settings, typed per provider (Azure resource,"
        " api_version; Bedrock region; Vertex project, location; param.<field>: ...)",
    )
    pricing: tuple[float, float] | None = Field(
        default=None, description="USD per million (input, output) tokens"
    )

    @field_validator("options", mode="before")
    @classmethod
    def _provider_options(cls, value: Any, info: ValidationInfo) -> Any:
        # The provider (validated before options) says which options exist and their types.
        from batuta.manifest.options import typed_options

        return typed_options(info.data.get("provider"), value)


class Tier(_Strict):
    """What a route promises: how fast, how private, how cheap."""

    latency: Literal["realtime", "interactive", "batch"] = "interactive"
    privacy: Literal["sovereign", "private", "standard"] = "standard"
    cost: Literal["minimal", "balanced", "performance"] = "balanced"


class Budget(_Strict):
    """Spend limits for a route's paid targets."""

    daily_usd: float | None = Field(default=None, gt=0)
    per_request_usd: float | None = Field(default=None, gt=0)


class Route(_Strict):
    """A named, ordered fallback chain of servers and endpoints."""

    tier: Tier = Field(default_factory=Tier)
    targets: list[str] | None = Field(
        default=None, description="ordered fallback chain; filled from the tier when absent"
    )
    timeout: Duration = 30.0
    first_byte_timeout: Duration | None = None
    retries: int = Field(default=1, ge=0, le=10)
    budget: Budget | None = None
    aliases: list[Name] = Field(
        default_factory=list,
        description="other names clients of `batuta gateway` may send as `model` for this route",
    )
    strategy: Literal["fallback", "round-robin", "least-busy"] = Field(
        default="fallback",
        description="fallback: targets in order; round-robin / least-busy: spread requests"
        " over the healthy targets (failover still applies)",
    )


class Defaults(_Strict):
    """Values servers and routes take when they do not say."""

    host: str = "127.0.0.1"
    port_range: tuple[int, int] = (8100, 8999)
    restart: Literal["always", "on-failure", "never"] = "on-failure"
    timeout: Duration = 30.0
    retries: int = Field(default=1, ge=0, le=10)
    ready_timeout: Duration = 120.0
    log_max_size: Size = 10 * 2**20
    memory_budget: Size | None = Field(
        default=None, description="what batuta's local servers may use together"
    )
    idle_timeout: Duration = Field(
        default=600.0, description="how long an on-demand server may go without a request"
    )


class Manifest(_Strict):
    """The whole of ``batuta.yaml``."""

    version: Literal[1] = 1
    models: dict[Name, Model] = Field(default_factory=dict)
    servers: dict[Name, Server] = Field(default_factory=dict)
    endpoints: dict[Name, Endpoint] = Field(default_factory=dict)
    routes: dict[Name, Route] = Field(default_factory=dict)
    defaults: Defaults = Field(default_factory=Defaults)
    gateway: Gateway = Field(default_factory=Gateway)
    kubernetes: Kubernetes = Field(default_factory=Kubernetes)
