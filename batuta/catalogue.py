"""The catalogue: every backend batuta knows, as data, in one place.

Adding a backend is one record here (plus an adapter module only when it speaks a wire
protocol no other backend speaks). Nothing in this module imports a third-party package,
so the CLI can render tables and trees from it without paying for httpx or pydantic.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import Enum


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
_NO_K_QUANTS = tuple(q for q in GGUF_QUANTS if "_K" not in q and not q.startswith("IQ"))
_HF_QUANTS = ("F32", "F16", "BF16", "FP8", "AWQ", "GPTQ", "BNB4", "BNB8")


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


# GPT4All answers 400 to any other key, and to `stream`, `stop`, `seed` and penalties.
_GPT4ALL = Dialect(
    streaming=False,
    stream_usage=False,
    sends_stop=False,
    fields=frozenset({"model", "messages", "prompt", "max_tokens", "temperature", "top_p"}),
)
# TGI (and endpoints running it) validate with 422: top_p in (0, 1), at most 4 stops.
_TGI = Dialect(top_p_open=True, max_stop=4)
_OPENAI = Dialect(
    max_tokens_field="max_completion_tokens",
    max_stop=4,
    reasoning_models=("o1", "o3", "o4", "gpt-5"),
)


@dataclass(frozen=True)
class Backend:
    """One catalogue record. ``key`` is the name used in manifests and on the command line."""

    key: str
    kind: ServingBackend
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

    def retired_at(self, base_url: str | None) -> bool:
        """Whether ``base_url`` (None or empty: the default) points at a retired service."""
        if not self.retired:
            return False
        return not base_url or base_url.rstrip("/") == self.base_url.rstrip("/")

    # How a server of this backend is told to require an API key, per launcher (the
    # executable, or the Python module run): "--flag" (followed by the key) or "env:NAME".
    server_key: tuple[tuple[str, str], ...] = ()

    def url(self, port: int | None = None, host: str = "127.0.0.1") -> str:
        """Base URL of this backend; local ones on ``port`` (or their default)."""
        if self.local:
            return f"http://{host}:{port or self.default_port}"
        return self.base_url

    def executable_path(self) -> str | None:
        """Where the backend's executable is (PATH, then beside this Python), or None."""
        from batuta._util.which import which

        return which(self.executable) if self.executable else None

    def key_form(self, launcher: str) -> str | None:
        """How ``launcher`` (an executable or module name) takes the key a server requires:
        ``--flag`` or ``env:NAME``; None when batuta knows no way."""
        return dict(self.server_key).get(launcher)

    def key_is_set(self) -> bool | None:
        """Whether the API key variable is set (None when the backend takes no key)."""
        return bool(os.environ.get(self.api_key_env)) if self.api_key_env else None


_OPENAI_ADAPTER = "batuta.backends.openai:OpenAIAdapter"
_GGUF = (ModelFormat.GGUF,)
_LOCAL = Privacy.LOCAL


def _local(
    key: str,
    kind: ServingBackend,
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
    server_key: tuple[tuple[str, str], ...] = (),
    dialect: Dialect | None = None,
    max_context: int = 32768,
    embeddings: bool = True,
    batch: bool = False,
    tools: bool = True,
) -> Backend:
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
        ),
        tree_group=f"local/{group}",
        tree_label=key,
        privacy=_LOCAL,
        base_url=f"http://127.0.0.1:{port}",
        default_port=port,
        health_path=health,
        api_key_env=api_key_env,
        server_key=server_key,
        executable=executable,
        install_hint=install,
        dialect=dialect or Dialect(),
    )


def _remote(
    key: str,
    kind: ServingBackend,
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
) -> Backend:
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
            embeddings=protocol == "openai",
            batch_inference=True,
            quantization=(),
            max_context=max_context,
            formats=(),
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


S = ServingBackend
F = ModelFormat

CATALOGUE: dict[str, Backend] = {
    b.key: b
    for b in (
        _local("realizar", S.REALIZAR, "realizar", language="Rust", feature="PAIML native, MoE",
               group="paiml_native", formats=(F.GGUF, F.SAFETENSORS), quants=GGUF_QUANTS,
               port=8080, health="/health", executable="realizar", protocol="realizar",
               adapter="batuta.backends.realizar:RealizarAdapter",
               install="cargo install realizar"),
        _local("ollama", S.OLLAMA, "Ollama", language="Go", feature="Docker-like UX",
               group="gguf_based", formats=_GGUF, quants=GGUF_QUANTS, port=11434,
               health="/api/version", executable="ollama", protocol="ollama",
               adapter="batuta.backends.ollama:OllamaAdapter",
               install="curl -fsSL https://ollama.com/install.sh | sh"),
        _local("llamafile", S.LLAMAFILE, "llamafile", language="C",
               feature="Single executable", group="gguf_based", formats=_GGUF,
               quants=GGUF_QUANTS, port=8080, health="/health", executable="llamafile",
               dialect=Dialect(continues_by_prompt=True),
               install="download a llamafile release and mark it executable"),
        _local("llamacpp", S.LLAMACPP, "llama.cpp", language="C++", feature="Reference impl",
               group="gguf_based", formats=_GGUF, quants=GGUF_QUANTS, port=8080,
               health="/health", executable="llama-server", api_key_env="LLAMA_API_KEY",
               dialect=Dialect(continues_by_prompt=True),
               server_key=(("llama-server", "env:LLAMA_API_KEY"),
                           ("llama_cpp.server", "--api_key")),
               install="pip install 'batuta[llamacpp]' (or put llama-server on PATH)"),
        _local("localai", S.LOCALAI, "LocalAI", language="Go", feature="OpenAI-compatible",
               group="gguf_based", formats=(F.GGUF, F.SAFETENSORS), quants=GGUF_QUANTS,
               port=8080, health="/readyz", executable="local-ai",
               api_key_env="LOCALAI_API_KEY", server_key=(("local-ai", "env:LOCALAI_API_KEY"),),
               install="see https://localai.io/basics/getting_started/"),
        _local("gpt4all", S.GPT4ALL, "GPT4All", language="C++", feature="Desktop app",
               group="gguf_based", formats=_GGUF, quants=GGUF_QUANTS, port=4891,
               health="/v1/models", executable=None, embeddings=False, tools=False,
               dialect=_GPT4ALL,
               install="install the GPT4All desktop app and enable its Local API Server"),
        _local("lmstudio", S.LMSTUDIO, "LM Studio", language="Electron",
               feature="Desktop GUI", group="gguf_based", formats=_GGUF, quants=GGUF_QUANTS,
               port=1234, health="/v1/models", executable="lms", api_key_env="LM_API_TOKEN",
               install="install LM Studio, then `lms server start`"),
        _local("candle", S.CANDLE, "candle (mistral.rs)", language="Rust",
               feature="HF Rust framework", group="rust_native",
               formats=(F.SAFETENSORS, F.GGUF), quants=("F32", "F16", "BF16", "Q8_0"),
               port=1234, health="/health", executable="mistralrs",
               install="cargo install mistralrs-server (or a mistral.rs release)"),
        _local("vllm", S.VLLM, "vLLM", language="Python", feature="PagedAttention",
               group="python_based", formats=(F.PYTORCH, F.SAFETENSORS, F.GGUF),
               quants=(*_NO_K_QUANTS, "FP8", "AWQ", "GPTQ"), port=8000, health="/health",
               executable="vllm", api_key_env="VLLM_API_KEY", batch=True,
               server_key=(("vllm", "env:VLLM_API_KEY"),), install="pip install vllm"),
        _local("tgi", S.TGI, "TGI", language="Rust/Py", feature="HF official server",
               group="python_based", formats=(F.SAFETENSORS, F.PYTORCH), quants=_HF_QUANTS,
               port=3000, health="/health", executable="text-generation-launcher",
               protocol="tgi", adapter="batuta.backends.tgi:TGIAdapter", batch=True, dialect=_TGI,
               install="see https://huggingface.co/docs/text-generation-inference"),
        _local("exllamav2", S.EXLLAMAV2, "ExLlamaV2 (TabbyAPI)", language="Python",
               feature="Extreme quantization", group="python_based", formats=(F.EXL2,),
               quants=("EXL2",), port=5000, health="/health", executable="tabbyapi",
               dialect=Dialect(auth_header="x-api-key"), api_key_env="TABBY_API_KEY",
               install="install TabbyAPI (https://github.com/theroyallab/tabbyAPI)"),
        _local("mlc", S.MLC, "MLC LLM", language="C++", feature="Universal deployment",
               group="python_based", formats=(F.MLC,), quants=("q4f16_1", "q4f32_1", "q0f16"),
               port=8000, health="/v1/models", executable="mlc_llm",
               install="pip install mlc-llm (see https://llm.mlc.ai)"),
        _remote("huggingface", S.HUGGINGFACE, "Hugging Face Inference Providers",
                feature="Serverless", group="huggingface", label="inference-api",
                base_url="https://router.huggingface.co/v1", key_env="HF_TOKEN",
                pricing=(0.2, 0.6)),
        _remote("hf-endpoints", S.HF_ENDPOINTS, "Hugging Face Inference Endpoints",
                feature="Dedicated", group="huggingface", label="endpoints", base_url="",
                key_env="HF_TOKEN", privacy=Privacy.DEDICATED, pricing=(0.0, 0.0),
                adapter="batuta.backends.hf_endpoints:HFEndpointAdapter", protocol="hf-endpoints",
                health="/health", dialect=_TGI),
        _remote("together", S.TOGETHER, "Together", feature="Fast, open models",
                group="inference_providers", base_url="https://api.together.xyz/v1",
                key_env="TOGETHER_API_KEY", dialect=Dialect(models_shape="array"),
                pricing=(0.2, 0.2)),
        _remote("replicate", S.REPLICATE, "Replicate", feature="Pay-per-call",
                group="inference_providers", base_url="https://api.replicate.com/v1",
                key_env="REPLICATE_API_TOKEN", protocol="replicate",
                adapter="batuta.backends.replicate:ReplicateAdapter", pricing=(0.5, 2.5),
                health="/account"),
        _remote("fireworks", S.FIREWORKS, "Fireworks", feature="Function calling",
                group="inference_providers", base_url="https://api.fireworks.ai/inference/v1",
                key_env="FIREWORKS_API_KEY", pricing=(0.2, 0.2)),
        _remote("groq", S.GROQ, "Groq", feature="LPU, ultra-fast",
                group="inference_providers", base_url="https://api.groq.com/openai/v1",
                key_env="GROQ_API_KEY", pricing=(0.05, 0.08)),
        _remote("modal", S.MODAL, "Modal", feature="Python-native", group="serverless_gpu",
                base_url="", key_env="MODAL_API_KEY", key_required=False, pricing=(0.0, 0.0)),
        _remote("anyscale", S.ANYSCALE, "Anyscale", feature="Ray-based",
                group="serverless_gpu", base_url="https://api.endpoints.anyscale.com/v1",
                key_env="ANYSCALE_API_KEY", pricing=(0.15, 0.15),
                retired="2024-08-01: the shared Anyscale Endpoints shut down; models are served"
                        " only by your own services on the Anyscale platform"),
        _remote("bedrock", S.AWS_BEDROCK, "AWS Bedrock", feature="Amazon managed",
                group="enterprise", label="aws_bedrock",
                base_url="https://bedrock-runtime.{region}.amazonaws.com",
                key_env="AWS_ACCESS_KEY_ID", privacy=Privacy.DEDICATED, protocol="bedrock",
                adapter="batuta.backends.bedrock:BedrockAdapter", pricing=(3.0, 15.0),
                health=None, key_required=False),  # SigV4 keys or AWS_BEARER_TOKEN_BEDROCK
        _remote("azure-openai", S.AZURE_OPENAI, "Azure OpenAI", feature="Microsoft managed",
                group="enterprise", label="azure_openai",
                base_url="https://{resource}.openai.azure.com", key_env="AZURE_OPENAI_API_KEY",
                privacy=Privacy.DEDICATED, protocol="azure",
                adapter="batuta.backends.azure:AzureOpenAIAdapter",
                dialect=Dialect(auth_header="api-key", max_tokens_field="max_completion_tokens",
                                max_stop=4),
                pricing=(2.5, 10.0), key_required=False),  # or an Entra token (options.token_env)
        _remote("vertex", S.GOOGLE_VERTEX, "Google Vertex AI", feature="Google managed",
                group="enterprise", label="google_vertex",
                base_url="https://{location}-aiplatform.googleapis.com/v1",
                key_env="VERTEX_ACCESS_TOKEN", privacy=Privacy.DEDICATED, protocol="gemini",
                adapter="batuta.backends.gemini:GeminiAdapter", pricing=(0.3, 2.5),
                health=None, key_required=False),  # or Application Default Credentials
        _remote("openai", S.OPENAI, "OpenAI", feature="GPT models", group="frontier_apis",
                base_url="https://api.openai.com/v1", key_env="OPENAI_API_KEY",
                dialect=_OPENAI, pricing=(2.5, 10.0)),
        _remote("anthropic", S.ANTHROPIC, "Anthropic", feature="Claude models",
                group="frontier_apis", base_url="https://api.anthropic.com",
                key_env="ANTHROPIC_API_KEY", protocol="anthropic",
                adapter="batuta.backends.anthropic:AnthropicAdapter", pricing=(3.0, 15.0),
                health="/v1/models", max_context=200000),
        _remote("gemini", S.GEMINI, "Google Gemini API", feature="Gemini models",
                group="frontier_apis", label="google",
                base_url="https://generativelanguage.googleapis.com/v1beta",
                key_env="GEMINI_API_KEY", protocol="gemini",
                adapter="batuta.backends.gemini:GeminiAdapter", pricing=(0.3, 2.5),
                max_context=1000000),
    )
}  # fmt: skip

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
