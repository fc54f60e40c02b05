"""Building the routing table from a manifest: targets resolved, no secrets, health."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from batuta.errors import RoutingError
from batuta.manifest import load_text
from batuta.routing.build import (
    build_table,
    endpoint_target,
    health_label,
    served_model_id,
    with_health,
    without_health,
)
from batuta.runtime.spec import ServerSpec

MANIFEST = """
models:
  m: {source: ./m.gguf}
servers:
  local: {backend: llama.cpp, model: m, port: 47201}
  keyed: {backend: llamacpp, model: m, port: 47202, env: {LLAMA_API_KEY: "${env:LOCAL_KEY}"}}
endpoints:
  groq: {provider: groq, model: llama-3.1-8b-instant, api_key_env: MY_GROQ_KEY}
  azure:
    provider: azure
    model: gpt-4o
    base_url: https://acme.openai.azure.com/
    api_key_env: AZURE_OPENAI_API_KEY
    options: {api_version: "2024-10-21"}
    pricing: [2.0, 8.0]
  lan: {provider: ollama, model: "llama3.2:1b", base_url: "http://127.0.0.1:11434"}
routes:
  default:
    tier: {latency: interactive, privacy: standard, cost: balanced}
    targets: [local, groq, azure]
    first_byte_timeout: 2s
    budget: {daily_usd: 5, per_request_usd: 0.02}
  private:
    tier: {privacy: sovereign}
    targets: [keyed, lan]
    timeout: 12s
    retries: 0
  chosen:
    tier: {privacy: sovereign}
defaults:
  timeout: 45s
  retries: 2
"""


def _spec(name: str, port: int, argv: tuple[str, ...] = (), **kw: object) -> ServerSpec:
    return ServerSpec(
        name=name,
        backend="llamacpp",
        argv=("llama-server", "-m", "/models/m.gguf", "--port", str(port), *argv),
        host="127.0.0.1",
        port=port,
        health_url=f"http://127.0.0.1:{port}/health",
        model_path="/models/m.gguf",
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def loaded(tmp_path: Path):
    (tmp_path / "m.gguf").write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))
    return load_text(MANIFEST, tmp_path / "batuta.yaml", env={"LOCAL_KEY": "hunter2"})


@pytest.fixture
def specs() -> dict[str, ServerSpec]:
    return {
        "local": _spec("local", 47201),
        "keyed": _spec("keyed", 47202, env={"LLAMA_API_KEY": "hunter2"}),
    }


def test_targets_resolve_to_protocol_url_model_and_key_name(loaded, specs) -> None:
    table = build_table(loaded, specs, {"local": "ready", "keyed": "loading"})
    assert table.manifest == str(loaded.path)
    default = table.routes["default"]
    local, groq, azure = default.targets
    assert (local.backend, local.protocol, local.base_url, local.local) == (
        "llamacpp",
        "openai",
        "http://127.0.0.1:47201",
        True,
    )
    assert local.model == "/models/m.gguf"  # what llama.cpp reports without an alias
    assert local.api_key_env is None and local.health == "ready"
    assert (groq.base_url, groq.api_key_env, groq.pricing) == (
        "https://api.groq.com/openai/v1",
        "MY_GROQ_KEY",
        (0.05, 0.08),
    )
    assert groq.health == "unknown"  # apply never calls a remote API
    assert azure.backend == "azure-openai" and azure.protocol == "azure"
    assert azure.base_url == "https://acme.openai.azure.com"
    assert azure.options == {"api_version": "2024-10-21"} and azure.pricing == (2.0, 8.0)
    assert default.first_byte_timeout == 2.0
    assert (default.daily_usd, default.per_request_usd) == (5.0, 0.02)
    # Unset timeout/retries come from defaults:, set ones win.
    assert (default.timeout, default.retries) == (45.0, 2)
    private = table.routes["private"]
    assert (private.timeout, private.retries, private.privacy) == (12.0, 0, "sovereign")
    keyed, lan = private.targets
    assert keyed.api_key_env == "LLAMA_API_KEY" and keyed.health == "unhealthy"
    assert (lan.local, lan.base_url, lan.model, lan.protocol) == (
        True,
        "http://127.0.0.1:11434",
        "llama3.2:1b",
        "ollama",
    )
    assert default.reason == "declared in the manifest"
    assert "chosen for" in table.routes["chosen"].reason
    assert [t.name for t in table.routes["chosen"].targets] == loaded.route_targets["chosen"]


def test_no_secret_value_reaches_the_table(loaded, specs, tmp_path: Path) -> None:
    from batuta.routing.table import table_path, write_table

    path = table_path(tmp_path / ".batuta")
    write_table(path, build_table(loaded, specs))
    text = path.read_text()
    assert "hunter2" not in text
    assert "LLAMA_API_KEY" in text and "MY_GROQ_KEY" in text


def test_health_is_not_part_of_a_comparison(loaded, specs) -> None:
    a = build_table(loaded, specs, {"local": "ready"})
    b = build_table(loaded, specs, {"local": "down"})
    assert a != b
    assert without_health(a) == without_health(b)
    refreshed = with_health(without_health(a), {"local": "ready", "keyed": "down"}, set(specs))
    targets = {t.name: t.health for r in refreshed.routes.values() for t in r.targets}
    assert (targets["local"], targets["keyed"]) == ("ready", "unhealthy")
    assert targets["groq"] == targets["azure"] == targets["lan"] == "unknown"


@pytest.mark.parametrize(
    ("probe", "label"), [("ready", "ready"), ("loading", "unhealthy"), ("down", "unhealthy")]
)
def test_health_label(probe: str, label: str) -> None:
    assert health_label(probe) == label
    assert health_label(None) == "unknown"


@pytest.mark.parametrize(
    ("argv", "model"),
    [
        ((), "/models/m.gguf"),
        (("--model_alias", "smol"), "smol"),
        (("--alias=tiny",), "tiny"),
        (("--served-model-name", "served"), "served"),
    ],
)
def test_served_model_id(argv: tuple[str, ...], model: str) -> None:
    assert served_model_id(_spec("s", 1, argv)) == model


def test_ollama_model_id_drops_the_scheme() -> None:
    spec = ServerSpec(
        name="o",
        backend="ollama",
        argv=("ollama", "serve"),
        host="127.0.0.1",
        port=11500,
        health_url="http://127.0.0.1:11500/api/version",
        model_path="ollama://llama3.2:1b",
    )
    assert served_model_id(spec) == "llama3.2:1b"


def test_a_server_without_a_spec_is_an_error(loaded, specs) -> None:
    with pytest.raises(RoutingError, match="server 'keyed' has no launch spec"):
        build_table(loaded, {"local": specs["local"]})


def test_unknown_targets_and_providers_are_errors(loaded, specs) -> None:
    from dataclasses import replace

    broken = replace(loaded, route_targets={**loaded.route_targets, "default": ["nowhere"]})
    with pytest.raises(RoutingError, match="'nowhere' is neither a server nor an endpoint"):
        build_table(broken, specs)
    endpoint = loaded.manifest.endpoints["groq"].model_copy(update={"provider": "nope"})
    with pytest.raises(RoutingError, match="unknown provider 'nope'"):
        endpoint_target("groq", endpoint)
    from batuta.routing.build import server_target

    server = loaded.manifest.servers["local"].model_copy(update={"backend": "nope"})
    with pytest.raises(RoutingError, match="unknown backend 'nope'"):
        server_target("local", server, specs["local"], "ready")


def test_table_json_round_trips(loaded, specs) -> None:
    from batuta.routing.table import RoutingTable

    table = build_table(loaded, specs, {"local": "ready"})
    assert RoutingTable.from_json(json.loads(json.dumps(table.to_json()))) == table


# ------------------------------------------------------------------------ chat templates

TEMPLATED = """
models:
  m: {source: ./m.gguf}
  st: {source: ./st, format: safetensors}
servers:
  rz: {backend: realizar, model: m, port: 47211}
  tg: {backend: tgi, model: st, port: 47212}
  cpp: {backend: llamacpp, model: m, port: 47213}
  vl: {backend: vllm, model: st, port: 47214}
endpoints:
  ep:
    provider: hf-endpoints
    model: org/model
    base_url: https://x.endpoints.huggingface.cloud
    api_key_env: HF_TOKEN
    options: {engine: tgi, chat_template: "{{ messages[0].content }}"}
routes:
  r: {targets: [rz, tg, cpp, ep, vl]}
"""


@pytest.fixture
def templated(tmp_path: Path):
    (tmp_path / "m.gguf").write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))
    (tmp_path / "st").mkdir()
    loaded = load_text(TEMPLATED, tmp_path / "batuta.yaml", env={})
    specs = {
        name: _spec(name, port)
        for name, port in (("rz", 47211), ("tg", 47212), ("cpp", 47213), ("vl", 47214))
    }
    return loaded, specs


def test_template_options_from_model_metadata(smollm2_path: Path) -> None:
    from batuta.routing.build import template_options
    from batuta.runtime.sources import _gguf_metadata

    real = template_options(_gguf_metadata(smollm2_path, None))
    assert set(real) == {"chat_template", "bos_token", "eos_token", "add_bos_token"}
    assert real["chat_template"].startswith("{% for message in messages %}")
    assert (real["bos_token"], real["eos_token"], real["add_bos_token"]) == (
        "<|im_start|>",
        "<|im_end|>",
        False,  # typed: the routing table stores it as JSON false
    )
    assert template_options({"chat_template": "T", "add_bos_token": True}) == {
        "chat_template": "T",
        "add_bos_token": True,
    }
    assert template_options({"chat_template": "T", "bos_token": "", "add_bos_token": None}) == {
        "chat_template": "T"
    }
    assert template_options({"chat_template": "  ", "bos_token": "<s>"}) == {}
    assert template_options({"family": "llama"}) == {}  # an Ollama model: no header facts


def test_completion_only_servers_carry_their_models_template(templated) -> None:
    loaded, specs = templated
    options = {"chat_template": "{{ messages }}", "eos_token": "</s>"}
    templates = dict.fromkeys(("rz", "tg", "cpp", "vl"), options)
    table = build_table(loaded, specs, templates=templates)
    rz, tg, cpp, ep, vl = table.routes["r"].targets
    assert (rz.protocol, rz.options) == ("realizar", options)
    assert (tg.protocol, tg.options) == ("tgi", options)
    # llama.cpp applies the template itself on its chat route, but that route closes an
    # assistant turn: the adapter needs the template to continue an interrupted answer.
    assert (cpp.protocol, cpp.options) == ("openai", options)
    assert vl.protocol == "openai" and vl.options == {}  # vLLM continues on its chat route
    # A manifest endpoint's own template option passes through untouched.
    assert ep.options == {"engine": "tgi", "chat_template": "{{ messages[0].content }}"}
    # Without templates (a model not pulled yet) the servers get no options.
    bare = build_table(loaded, specs).routes["r"].targets
    assert [t.options for t in bare[:3]] == [{}, {}, {}] and bare[4].options == {}
    # The table file keeps the template, so `serve query` needs nothing but routes.json.
    from batuta.routing.table import RoutingTable

    assert RoutingTable.from_json(json.loads(json.dumps(table.to_json()))) == table


def test_a_server_with_embeddings_is_marked_so_on_its_target(loaded, specs) -> None:
    from batuta.router.capable import embeds
    from batuta.router.targets import target_of
    from batuta.routing.build import server_target

    server = loaded.manifest.servers["local"]
    plain = server_target("local", server, specs["local"], "ready")
    assert "embeddings" not in plain.options and not embeds(target_of(plain))
    marked = server.model_copy(update={"embeddings": True})
    entry = server_target("local", marked, specs["local"], "ready")
    assert entry.options["embeddings"] is True and embeds(target_of(entry))
