"""The catalogue's record types and the two builders of a record (a plugin's too).

Enums, the frozen records (:class:`Backend`, its :class:`BackendCapabilities`,
:class:`Dialect` and launch :class:`Recipe`), and :func:`local_backend` /
:func:`remote_backend`, which give a record the defaults of its kind. Data only: nothing
here imports a third-party package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import Enum

from batuta._util import passthrough


class ServingBackend(str, Enum):
    """Every backend of the product's data model, plus the desktop/local servers it lists."""

    REALIZAR = "realizar"
    OLLAMA = "ollama"
    LLAMACPP = "llamacpp"
    LLAMAFILE = "llamafile"
    CANDLE = "candle"
    VLLM = "vllm"
    TGI = "tgi"
    LOCALAI = "localai"
    LMSTUDIO = "lmstudio"
    GPT4ALL = "gpt4all"
    MLC = "mlc"
    EXLLAMAV2 = "exllamav2"
    HUGGINGFACE = "huggingface"
    HF_ENDPOINTS = "hf-endpoints"
    TOGETHER = "together"
    REPLICATE = "replicate"
    ANYSCALE = "anyscale"
    MODAL = "modal"
    FIREWORKS = "fireworks"
    GROQ = "groq"
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    AZURE_OPENAI = "azure-openai"
    AWS_BEDROCK = "bedrock"
    GOOGLE_VERTEX = "vertex"
    GEMINI = "gemini"


class ModelFormat(str, Enum):
    """On-disk model formats."""

    GGUF = "gguf"
    SAFETENSORS = "safetensors"
    PYTORCH = "pytorch"
    ONNX = "onnx"
    TENSORRT = "tensorrt"
    OPENVINO = "openvino"
    MLC = "mlc"
    EXL2 = "exl2"


class Privacy(str, Enum):
    """Where a backend sends the prompt: the basis of the route privacy tiers."""

    LOCAL = "local"  # never leaves the machine: allowed in every tier
    DEDICATED = "dedicated"  # a tenant's own cloud deployment: private and standard
    PUBLIC = "public"  # shared public API: standard only


# GGUF file types, as llama.cpp names them. K-quants end in _K / _K_S / _K_M / _K_L.
GGUF_QUANTS: tuple[str, ...] = (
    "F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_0", "Q5_1", "Q5_K_S", "Q5_K_M",
    "Q4_0", "Q4_1", "Q4_K_S", "Q4_K_M", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q2_K",
    "IQ4_NL", "IQ4_XS", "IQ3_XXS", "IQ3_S", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ1_S",
)  # fmt: skip


def is_k_quant(quantization: str) -> bool:
    """K-quants (Q4_K_M, Q5_K_S, ...) are the ones vLLM cannot load."""
    return "_K" in quantization.upper()


@dataclass(frozen=True)
class BackendCapabilities:
    """What a backend can do, as the product's data model defines it."""

    streaming: bool = True
    function_calling: bool = False
    vision: bool = False
    embeddings: bool = False
    batch_inference: bool = False
    quantization: tuple[str, ...] = ()
    max_context: int = 8192
    formats: tuple[ModelFormat, ...] = ()
    # Request fields the neutral request does not model that it takes as sent
    # (batuta._util.passthrough); empty: none, so such a request goes elsewhere.
    passthrough: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Dialect:
    """How one OpenAI-compatible server differs from OpenAI itself.

    What a server would refuse is never sent: ``fields`` (when set) is the only body keys it
    takes, ``max_stop`` how many stop sequences (the rest are applied by the adapter),
    ``top_p_open`` that ``top_p`` must lie strictly between 0 and 1 (TGI: 1.0, "no nucleus
    filter", is left out), and ``reasoning_models`` the model-name prefixes that take no
    ``temperature``, ``top_p`` or ``stop`` (OpenAI's o-series and gpt-5).
    """

    max_tokens_field: str = "max_tokens"
    stream_usage: bool = True  # accepts stream_options.include_usage
    streaming: bool = True  # False: the blocking path only (GPT4All)
    models_shape: str = "list"  # "list": {"data": [...]}; "array": a bare JSON array
    auth_header: str = "authorization"  # "authorization" (Bearer) | "api-key" | "x-api-key"
    sends_stop: bool = True  # GPT4All answers 400 to `stop`
    # The chat route closes a trailing assistant turn (the template appends end-of-turn), so
    # an interrupted answer is continued through completions_path with the chat template.
    continues_by_prompt: bool = False
    chat_path: str = "/chat/completions"
    completions_path: str = "/completions"
    models_path: str = "/models"
    fields: frozenset[str] | None = None  # None: any field (engine extras included)
    max_stop: int | None = None
    top_p_open: bool = False
    reasoning_models: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recipe:
    """One way to launch a local backend (data, read by :mod:`batuta.runtime.launch`).

    Placeholders: {model} {model_dir} {model_file} {host} {port} {ctx} {threads}. A backend
    with several recipes (llama.cpp: the reference ``llama-server`` binary, else
    llama-cpp-python's server) uses the first one installed, unless the server pins one by
    its ``engine`` name.
    """

    executable: str  # looked up on PATH, then beside this Python (ignored with ``module``)
    argv: tuple[str, ...]
    options: tuple[tuple[str, str], ...] = ()  # (flag, placeholder) added when known
    file_argv: tuple[str, ...] | None = None  # replaces ``argv`` when the model is a file
    env: tuple[tuple[str, str], ...] = ()
    module: str | None = None  # run as ``python -m module`` when importable
    needs: tuple[str, ...] = ()  # further modules ``module`` cannot run without
    health_path: str | None = None  # when it differs from the backend's
    executable_env: str | None = None  # variable naming the executable, e.g. BATUTA_LLAMA_SERVER
    always_threads: bool = False  # pass the core count even when not asked
    engine: str = ""  # the name a manifest pins it by (``engine: server | python``)
    default_ctx: int | None = None  # the context passed when the server sets none
    embeddings_argv: tuple[str, ...] = ()  # added for a server with ``embeddings: true``
    # How the server is told to require an API key: "--flag" (followed by the key) or
    # "env:NAME"; None when batuta knows no way.
    key_arg: str | None = None
    install_hint: str = ""  # when it differs from the backend's

    @property
    def launcher(self) -> str:
        """The executable, or the Python module run."""
        return self.module or self.executable


@dataclass(frozen=True)
class Backend:
    """One catalogue record: everything batuta knows about a backend. ``key`` is the name
    used in manifests and on the command line; ``kind`` is None for a plugin's backend."""

    key: str
    kind: ServingBackend | None
    display: str
    local: bool
    language: str
    feature: str
    protocol: str  # wire family: openai | ollama | tgi | realizar | anthropic | bedrock | ...
    adapter: str  # dotted path "module:Class", imported only when a query needs it
    capabilities: BackendCapabilities
    tree_group: str  # e.g. "local/gguf_based" or "remote/enterprise"
    tree_label: str
    privacy: Privacy
    base_url: str = ""  # for local backends: http://127.0.0.1:{port}
    default_port: int | None = None
    health_path: str | None = None
    api_key_env: str | None = None
    key_required: bool = False
    executable: str | None = None
    install_hint: str = ""
    dialect: Dialect = field(default_factory=Dialect)
    # Default price in USD per million (input, output) tokens; None = free / local.
    pricing: tuple[float, float] | None = None
    # "<date>: what happened": the service is gone and ``base_url`` is its former address;
    # only a ``base_url`` of the user's own (self-hosted) service can be used.
    retired: str | None = None
    # Local backends: how batuta runs a server of it (none: the user starts it).
    launch: tuple[Recipe, ...] = ()
    hub_models: bool = False  # takes a Hugging Face repo id (org/name) as its model
    # The engine's official server image, pinned (``batuta render kubernetes``), and its
    # first recipe's executable inside it when that is not on the image's PATH.
    image: str | None = None
    image_executable: str | None = None

    def retired_at(self, base_url: str | None) -> bool:
        """Whether ``base_url`` (None or empty: the default) points at a retired service."""
        if not self.retired:
            return False
        return not base_url or base_url.rstrip("/") == self.base_url.rstrip("/")

    def url(self, port: int | None = None, host: str = "127.0.0.1") -> str:
        """Base URL of this backend; local ones on ``port`` (or their default)."""
        if self.local:
            return f"http://{host}:{port or self.default_port}"
        return self.base_url

    def executable_path(self) -> str | None:
        """Where the backend's executable is (PATH, then beside this Python), or None."""
        from batuta._util.which import which

        return which(self.executable) if self.executable else None

    def takes_key(self) -> bool:
        """Whether batuta knows how to make a server of this backend require an API key."""
        return any(recipe.key_arg for recipe in self.launch)

    def key_is_set(self) -> bool | None:
        """Whether the API key variable is set (None when the backend takes no key)."""
        return bool(os.environ.get(self.api_key_env)) if self.api_key_env else None


_OPENAI_ADAPTER = "batuta.backends.openai:OpenAIAdapter"
_LOCAL = Privacy.LOCAL


def _passthrough(adapter: str, dialect: Dialect | None, tools: bool) -> frozenset[str]:
    # Only the OpenAI adapters (and Azure's, which is one) send such fields unchanged.
    speaks_openai = adapter in (_OPENAI_ADAPTER, "batuta.backends.azure:AzureOpenAIAdapter")
    open_body = speaks_openai and (dialect is None or dialect.fields is None)
    return passthrough.openai_fields(tools=tools, open_body=open_body)


def local_backend(
    key: str,
    kind: ServingBackend | None,
    display: str,
    *,
    language: str,
    feature: str,
    group: str,
    formats: tuple[ModelFormat, ...],
    quants: tuple[str, ...],
    port: int,
    health: str | None,
    executable: str | None,
    install: str,
    protocol: str = "openai",
    adapter: str = _OPENAI_ADAPTER,
    api_key_env: str | None = None,
    launch: tuple[Recipe, ...] = (),
    hub_models: bool = False,
    image: tuple[str, str | None] | None = None,
    dialect: Dialect | None = None,
    max_context: int = 32768,
    embeddings: bool = True,
    batch: bool = False,
    tools: bool = True,
) -> Backend:
    """A local backend's record, with the defaults a local server has (a plugin's too)."""
    return Backend(
        key=key,
        kind=kind,
        display=display,
        local=True,
        language=language,
        feature=feature,
        protocol=protocol,
        adapter=adapter,
        capabilities=BackendCapabilities(
            streaming=dialect.streaming if dialect else True,
            function_calling=tools,
            embeddings=embeddings,
            batch_inference=batch,
            quantization=quants,
            max_context=max_context,
            formats=formats,
            passthrough=_passthrough(adapter, dialect, tools),
        ),
        tree_group=f"local/{group}",
        tree_label=key,
        privacy=_LOCAL,
        base_url=f"http://127.0.0.1:{port}",
        default_port=port,
        health_path=health,
        api_key_env=api_key_env,
        launch=launch,
        hub_models=hub_models,
        image=image[0] if image else None,
        image_executable=image[1] if image else None,
        executable=executable,
        install_hint=install,
        dialect=dialect or Dialect(),
    )


def remote_backend(
    key: str,
    kind: ServingBackend | None,
    display: str,
    *,
    feature: str,
    group: str,
    label: str | None = None,
    base_url: str,
    key_env: str,
    privacy: Privacy = Privacy.PUBLIC,
    protocol: str = "openai",
    adapter: str = _OPENAI_ADAPTER,
    dialect: Dialect | None = None,
    pricing: tuple[float, float] | None = None,
    max_context: int = 128000,
    vision: bool = True,
    key_required: bool = True,
    health: str | None = "/models",
    retired: str | None = None,
    embeddings: bool | None = None,
) -> Backend:
    """A remote API's record, with the defaults a hosted service has (a plugin's too).
    ``embeddings`` defaults to whether it speaks the OpenAI protocol."""
    return Backend(
        key=key,
        kind=kind,
        display=display,
        local=False,
        language="HTTP API",
        feature=feature,
        protocol=protocol,
        adapter=adapter,
        capabilities=BackendCapabilities(
            streaming=True,
            function_calling=True,
            vision=vision,
            embeddings=protocol == "openai" if embeddings is None else embeddings,
            batch_inference=True,
            quantization=(),
            max_context=max_context,
            formats=(),
            passthrough=_passthrough(adapter, dialect, True),
        ),
        tree_group=f"remote/{group}" if group != "frontier_apis" else group,
        tree_label=label or key,
        privacy=privacy,
        base_url=base_url,
        health_path=health,
        api_key_env=key_env,
        key_required=key_required,
        dialect=dialect or Dialect(),
        pricing=pricing,
        retired=retired,
    )
