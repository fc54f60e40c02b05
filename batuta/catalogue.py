"""The catalogue: every backend batuta knows, as data, in one place.

Adding a backend is one record here (plus an adapter module only when it speaks a wire
protocol no other backend speaks); an installed distribution can add one through the
``batuta.backends`` entry-point group (:mod:`batuta.plugins`), loaded only when
:data:`CATALOGUE` is asked for a name it does not hold or for its full list. Nothing in
this module imports a third-party package, so the CLI can render tables and trees from it
without paying for httpx or pydantic.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, MutableMapping
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
_GGUF = (ModelFormat.GGUF,)
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


# llama.cpp allocates the whole KV cache of its context up front, and without a context
# llama-server takes the model's training context (8192 for SmolLM2, 128k for Llama 3.1):
# seconds of start-up and hundreds of MiB for tokens a chat rarely reaches. Both engines
# get this one unless the server sets ``ctx`` (llama-server's own default once, as Ollama's).
LLAMACPP_DEFAULT_CTX = 4096

# How each launchable backend is run (see Recipe).
_RUN: dict[str, tuple[Recipe, ...]] = {
    # --metrics on llama-server: Prometheus /metrics, for scraping per-server figures.
    "llamacpp": (
        Recipe(
            "llama-server",
            ("-m", "{model}", "--port", "{port}", "--host", "{host}", "--metrics"),
            options=(("-c", "{ctx}"), ("-t", "{threads}")),
            executable_env="BATUTA_LLAMA_SERVER",
            engine="server",
            default_ctx=LLAMACPP_DEFAULT_CTX,
            key_arg="env:LLAMA_API_KEY",
            # A chat model has no pooling of its own, and llama-server refuses OpenAI-style
            # embeddings without one; chat completions keep working beside them.
            embeddings_argv=("--embeddings", "--pooling", "mean"),
        ),
        # llama-cpp-python has no /health, defaults to a single thread, and by default
        # aborts a running generation when a second request arrives.
        Recipe(
            "python",
            (
                "--model", "{model}", "--port", "{port}", "--host", "{host}",
                "--interrupt_requests", "False",
            ),
            options=(("--n_ctx", "{ctx}"), ("--n_threads", "{threads}")),
            module="llama_cpp.server",
            needs=("uvicorn", "fastapi"),  # the server extra of llama-cpp-python
            health_path="/v1/models",
            always_threads=True,
            engine="python",
            default_ctx=LLAMACPP_DEFAULT_CTX,
            key_arg="--api_key",
            install_hint="pip install 'batuta[llamacpp]'",
            embeddings_argv=("--embedding", "True"),
        ),
    ),
    "candle": (
        Recipe(
            "mistralrs",
            ("serve", "--port", "{port}", "--host", "{host}", "-m", "{model}"),
            file_argv=(
                "serve", "--port", "{port}", "--host", "{host}",
                "-m", "{model_dir}", "--format", "gguf", "-f", "{model_file}",
            ),
            options=(("--max-seq-len", "{ctx}"),),
            health_path="/health",
        ),
        # Releases before the ``mistralrs`` CLI: a model-type subcommand after the options.
        Recipe(
            "mistralrs-server",
            ("--port", "{port}", "--serve-ip", "{host}", "plain", "-m", "{model}"),
            file_argv=(
                "--port", "{port}", "--serve-ip", "{host}",
                "gguf", "-m", "{model_dir}", "-f", "{model_file}",
            ),
        ),
    ),
    "realizar": (
        Recipe("realizar", ("serve", "--model", "{model}", "--port", "{port}", "--host", "{host}")),
    ),
    "llamafile": (
        Recipe(
            "llamafile",
            ("--server", "-m", "{model}", "--port", "{port}", "--host", "{host}", "--nobrowser"),
            options=(("-c", "{ctx}"), ("-t", "{threads}")),
        ),
    ),
    "ollama": (
        Recipe(
            "ollama",
            ("serve",),
            env=(("OLLAMA_HOST", "{host}:{port}"), ("OLLAMA_CONTEXT_LENGTH", "{ctx}")),
        ),
    ),
    "vllm": (
        Recipe(
            "vllm",
            ("serve", "{model}", "--port", "{port}", "--host", "{host}"),
            options=(("--max-model-len", "{ctx}"),),
            key_arg="env:VLLM_API_KEY",
        ),
    ),
    "tgi": (
        Recipe(
            "text-generation-launcher",
            ("--model-id", "{model}", "--port", "{port}", "--hostname", "{host}"),
            options=(("--max-total-tokens", "{ctx}"),),
        ),
    ),
    "localai": (
        Recipe(
            "local-ai",
            ("run", "--address", "{host}:{port}", "--models-path", "{model_dir}"),
            options=(("--context-size", "{ctx}"), ("--threads", "{threads}")),
            key_arg="env:LOCALAI_API_KEY",
        ),
    ),
    "lmstudio": (Recipe("lms", ("server", "start", "--port", "{port}")),),
    "mlc": (
        Recipe(
            "mlc_llm",
            ("serve", "{model}", "--host", "{host}", "--port", "{port}"),
            options=(("--overrides", "context_window_size={ctx}"),),
        ),
    ),
    "exllamav2": (
        Recipe(
            "tabbyapi",
            (
                "--host", "{host}", "--port", "{port}",
                "--model-dir", "{model_dir}", "--model-name", "{model_file}",
            ),
            options=(("--max-seq-len", "{ctx}"),),
        ),
    ),
}  # fmt: skip

# The engines' official server images, pinned; a backend without one needs ``image:``.
_IMAGE: dict[str, tuple[str, str | None]] = {
    "llamacpp": ("ghcr.io/ggml-org/llama.cpp:server-b6715", "/app/llama-server"),
    "vllm": ("vllm/vllm-openai:v0.10.1.1", None),
    "tgi": ("ghcr.io/huggingface/text-generation-inference:3.3.4", None),
    "ollama": ("ollama/ollama:0.11.4", None),
    "localai": ("localai/localai:v3.4.0", "/local-ai"),
}

S = ServingBackend
F = ModelFormat

_BUILTIN: dict[str, Backend] = {
    b.key: b
    for b in (
        local_backend("realizar", S.REALIZAR, "realizar", language="Rust",
               feature="PAIML native, MoE",
               group="paiml_native", formats=(F.GGUF, F.SAFETENSORS), quants=GGUF_QUANTS,
               port=8080, health="/health", executable="realizar", protocol="realizar",
               adapter="batuta.backends.realizar:RealizarAdapter", launch=_RUN["realizar"],
               install="cargo install realizar"),
        local_backend("ollama", S.OLLAMA, "Ollama", language="Go", feature="Docker-like UX",
               group="gguf_based", formats=_GGUF, quants=GGUF_QUANTS, port=11434,
               health="/api/version", executable="ollama", protocol="ollama",
               adapter="batuta.backends.ollama:OllamaAdapter", launch=_RUN["ollama"],
               image=_IMAGE["ollama"],
               install="curl -fsSL https://ollama.com/install.sh | sh"),
        local_backend("llamafile", S.LLAMAFILE, "llamafile", language="C",
               feature="Single executable", group="gguf_based", formats=_GGUF,
               quants=GGUF_QUANTS, port=8080, health="/health", executable="llamafile",
               launch=_RUN["llamafile"],
               dialect=Dialect(continues_by_prompt=True),
               install="download a llamafile release and mark it executable"),
        local_backend("llamacpp", S.LLAMACPP, "llama.cpp", language="C++", feature="Reference impl",
               group="gguf_based", formats=_GGUF, quants=GGUF_QUANTS, port=8080,
               health="/health", executable="llama-server", api_key_env="LLAMA_API_KEY",
               dialect=Dialect(continues_by_prompt=True),
               launch=_RUN["llamacpp"],
               image=_IMAGE["llamacpp"],
               install="pip install 'batuta[llamacpp]' (or put llama-server on PATH)"),
        local_backend("localai", S.LOCALAI, "LocalAI", language="Go", feature="OpenAI-compatible",
               group="gguf_based", formats=(F.GGUF, F.SAFETENSORS), quants=GGUF_QUANTS,
               port=8080, health="/readyz", executable="local-ai",
               api_key_env="LOCALAI_API_KEY", launch=_RUN["localai"],
               image=_IMAGE["localai"],
               install="see https://localai.io/basics/getting_started/"),
        local_backend("gpt4all", S.GPT4ALL, "GPT4All", language="C++", feature="Desktop app",
               group="gguf_based", formats=_GGUF, quants=GGUF_QUANTS, port=4891,
               health="/v1/models", executable=None, embeddings=False, tools=False,
               dialect=_GPT4ALL,
               install="install the GPT4All desktop app and enable its Local API Server"),
        local_backend("lmstudio", S.LMSTUDIO, "LM Studio", language="Electron",
               feature="Desktop GUI", group="gguf_based", formats=_GGUF, quants=GGUF_QUANTS,
               port=1234, health="/v1/models", executable="lms", api_key_env="LM_API_TOKEN",
               launch=_RUN["lmstudio"],
               install="install LM Studio, then `lms server start`"),
        local_backend("candle", S.CANDLE, "candle (mistral.rs)", language="Rust",
               feature="HF Rust framework", group="rust_native",
               formats=(F.SAFETENSORS, F.GGUF), quants=("F32", "F16", "BF16", "Q8_0"),
               port=1234, health="/health", executable="mistralrs",
               launch=_RUN["candle"], hub_models=True,
               install="cargo install mistralrs-server (or a mistral.rs release)"),
        local_backend("vllm", S.VLLM, "vLLM", language="Python", feature="PagedAttention",
               group="python_based", formats=(F.PYTORCH, F.SAFETENSORS, F.GGUF),
               quants=(*_NO_K_QUANTS, "FP8", "AWQ", "GPTQ"), port=8000, health="/health",
               executable="vllm", api_key_env="VLLM_API_KEY", batch=True,
               launch=_RUN["vllm"], hub_models=True,
               image=_IMAGE["vllm"],
               install="pip install vllm"),
        local_backend("tgi", S.TGI, "TGI", language="Rust/Py", feature="HF official server",
               group="python_based", formats=(F.SAFETENSORS, F.PYTORCH), quants=_HF_QUANTS,
               port=3000, health="/health", executable="text-generation-launcher",
               protocol="tgi", adapter="batuta.backends.tgi:TGIAdapter", batch=True, dialect=_TGI,
               launch=_RUN["tgi"], hub_models=True,
               image=_IMAGE["tgi"],
               install="see https://huggingface.co/docs/text-generation-inference"),
        local_backend("exllamav2", S.EXLLAMAV2, "ExLlamaV2 (TabbyAPI)", language="Python",
               feature="Extreme quantization", group="python_based", formats=(F.EXL2,),
               quants=("EXL2",), port=5000, health="/health", executable="tabbyapi",
               dialect=Dialect(auth_header="x-api-key"), api_key_env="TABBY_API_KEY",
               launch=_RUN["exllamav2"], hub_models=True,
               install="install TabbyAPI (https://github.com/theroyallab/tabbyAPI)"),
        local_backend("mlc", S.MLC, "MLC LLM", language="C++", feature="Universal deployment",
               group="python_based", formats=(F.MLC,), quants=("q4f16_1", "q4f32_1", "q0f16"),
               port=8000, health="/v1/models", executable="mlc_llm",
               launch=_RUN["mlc"], hub_models=True,
               install="pip install mlc-llm (see https://llm.mlc.ai)"),
        remote_backend("huggingface", S.HUGGINGFACE, "Hugging Face Inference Providers",
                feature="Serverless", group="huggingface", label="inference-api",
                base_url="https://router.huggingface.co/v1", key_env="HF_TOKEN",
                pricing=(0.2, 0.6)),
        remote_backend("hf-endpoints", S.HF_ENDPOINTS, "Hugging Face Inference Endpoints",
                feature="Dedicated", group="huggingface", label="endpoints", base_url="",
                key_env="HF_TOKEN", privacy=Privacy.DEDICATED, pricing=(0.0, 0.0),
                adapter="batuta.backends.hf_endpoints:HFEndpointAdapter", protocol="hf-endpoints",
                health="/health", dialect=_TGI),
        remote_backend("together", S.TOGETHER, "Together", feature="Fast, open models",
                group="inference_providers", base_url="https://api.together.xyz/v1",
                key_env="TOGETHER_API_KEY", dialect=Dialect(models_shape="array"),
                pricing=(0.2, 0.2)),
        remote_backend("replicate", S.REPLICATE, "Replicate", feature="Pay-per-call",
                group="inference_providers", base_url="https://api.replicate.com/v1",
                key_env="REPLICATE_API_TOKEN", protocol="replicate",
                adapter="batuta.backends.replicate:ReplicateAdapter", pricing=(0.5, 2.5),
                health="/account"),
        remote_backend("fireworks", S.FIREWORKS, "Fireworks", feature="Function calling",
                group="inference_providers", base_url="https://api.fireworks.ai/inference/v1",
                key_env="FIREWORKS_API_KEY", pricing=(0.2, 0.2)),
        remote_backend("groq", S.GROQ, "Groq", feature="LPU, ultra-fast",
                group="inference_providers", base_url="https://api.groq.com/openai/v1",
                key_env="GROQ_API_KEY", pricing=(0.05, 0.08),
                embeddings=False),  # no /embeddings route
        remote_backend("modal", S.MODAL, "Modal", feature="Python-native", group="serverless_gpu",
                base_url="", key_env="MODAL_API_KEY", key_required=False, pricing=(0.0, 0.0)),
        remote_backend("anyscale", S.ANYSCALE, "Anyscale", feature="Ray-based",
                group="serverless_gpu", base_url="https://api.endpoints.anyscale.com/v1",
                key_env="ANYSCALE_API_KEY", pricing=(0.15, 0.15),
                retired="2024-08-01: the shared Anyscale Endpoints shut down; models are served"
                        " only by your own services on the Anyscale platform"),
        remote_backend("bedrock", S.AWS_BEDROCK, "AWS Bedrock", feature="Amazon managed",
                group="enterprise", label="aws_bedrock",
                base_url="https://bedrock-runtime.{region}.amazonaws.com",
                key_env="AWS_ACCESS_KEY_ID", privacy=Privacy.DEDICATED, protocol="bedrock",
                adapter="batuta.backends.bedrock:BedrockAdapter", pricing=(3.0, 15.0),
                health=None, key_required=False),  # SigV4 keys or AWS_BEARER_TOKEN_BEDROCK
        remote_backend("azure-openai", S.AZURE_OPENAI, "Azure OpenAI", feature="Microsoft managed",
                group="enterprise", label="azure_openai",
                base_url="https://{resource}.openai.azure.com", key_env="AZURE_OPENAI_API_KEY",
                privacy=Privacy.DEDICATED, protocol="azure",
                adapter="batuta.backends.azure:AzureOpenAIAdapter",
                dialect=Dialect(auth_header="api-key", max_tokens_field="max_completion_tokens",
                                max_stop=4),
                pricing=(2.5, 10.0), key_required=False),  # or an Entra token (options.token_env)
        remote_backend("vertex", S.GOOGLE_VERTEX, "Google Vertex AI", feature="Google managed",
                group="enterprise", label="google_vertex",
                base_url="https://{location}-aiplatform.googleapis.com/v1",
                key_env="VERTEX_ACCESS_TOKEN", privacy=Privacy.DEDICATED, protocol="gemini",
                adapter="batuta.backends.gemini:GeminiAdapter", pricing=(0.3, 2.5),
                health=None, key_required=False),  # or Application Default Credentials
        remote_backend("openai", S.OPENAI, "OpenAI", feature="GPT models", group="frontier_apis",
                base_url="https://api.openai.com/v1", key_env="OPENAI_API_KEY",
                dialect=_OPENAI, pricing=(2.5, 10.0)),
        remote_backend("anthropic", S.ANTHROPIC, "Anthropic", feature="Claude models",
                group="frontier_apis", base_url="https://api.anthropic.com",
                key_env="ANTHROPIC_API_KEY", protocol="anthropic",
                adapter="batuta.backends.anthropic:AnthropicAdapter", pricing=(3.0, 15.0),
                health="/v1/models", max_context=200000),
        remote_backend("gemini", S.GEMINI, "Google Gemini API", feature="Gemini models",
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
