"""The built-in records: every backend batuta knows, with how it is launched.

Adding a backend is one record here (plus an adapter module only when it speaks a wire
protocol no other backend speaks).
"""

from __future__ import annotations

from batuta.catalogue.records import (
    GGUF_QUANTS,
    Backend,
    Dialect,
    ModelFormat,
    Privacy,
    Recipe,
    ServingBackend,
    local_backend,
    remote_backend,
)

_NO_K_QUANTS = tuple(q for q in GGUF_QUANTS if "_K" not in q and not q.startswith("IQ"))
_HF_QUANTS = ("F32", "F16", "BF16", "FP8", "AWQ", "GPTQ", "BNB4", "BNB8")

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

_GGUF = (ModelFormat.GGUF,)


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
        # aborts a running generation when a second request arrives. Its /v1/models waits
        # for the model's lock: probed during an answer, it times out (the server reads as
        # unhealthy) and the answer decodes a third slower. It listens only once its model
        # is loaded, so any page it serves means ready: FastAPI's /docs takes no lock.
        Recipe(
            "python",
            (
                "--model", "{model}", "--port", "{port}", "--host", "{host}",
                "--interrupt_requests", "False",
            ),
            options=(("--n_ctx", "{ctx}"), ("--n_threads", "{threads}")),
            module="llama_cpp.server",
            needs=("uvicorn", "fastapi"),  # the server extra of llama-cpp-python
            health_path="/docs",
            always_threads=True,
            engine="python",
            default_ctx=LLAMACPP_DEFAULT_CTX,
            # Its ServerSettings (pydantic-settings) read API_KEY: not on the command line.
            key_arg="env:API_KEY",
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
