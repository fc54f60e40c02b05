"""The catalogue: one well-formed record per backend, matching the product's tables."""

from __future__ import annotations

import re

import pytest

from batuta.catalogue import (
    ALIASES,
    CATALOGUE,
    TREE_GROUPS,
    ModelFormat,
    Privacy,
    ServingBackend,
    allowed_in_tier,
    is_k_quant,
    local_backends,
    lookup,
    remote_backends,
    tier_allows,
)

F = ModelFormat


def test_every_serving_backend_has_exactly_one_record() -> None:
    kinds = [b.kind for b in CATALOGUE.values()]
    assert sorted(kinds) == sorted(ServingBackend)
    assert all(key == b.key for key, b in CATALOGUE.items())
    assert {b.key for b in local_backends()} | {b.key for b in remote_backends()} == set(CATALOGUE)


def test_adapters_are_dotted_paths() -> None:
    for b in CATALOGUE.values():
        assert re.fullmatch(r"batuta\.backends\.[a-z_]+:[A-Z][A-Za-z0-9]+Adapter", b.adapter), b.key


def test_tree_groups_cover_every_backend() -> None:
    groups = {b.tree_group for b in CATALOGUE.values()}
    assert groups == set(TREE_GROUPS)
    labels = [b.tree_label for b in CATALOGUE.values()]
    assert len(labels) == len(set(labels))
    for b in CATALOGUE.values():
        assert b.tree_group.startswith("local/") == b.local or b.tree_group == "frontier_apis"


def test_local_records() -> None:
    for b in local_backends():
        assert b.default_port and 1 <= b.default_port <= 65535
        assert b.health_path and b.health_path.startswith("/")
        assert b.url() == f"http://127.0.0.1:{b.default_port}"
        assert b.url(9000, "0.0.0.0") == "http://0.0.0.0:9000"
        assert b.privacy is Privacy.LOCAL and b.capabilities.formats and b.install_hint
        assert b.pricing is None and not b.key_required
    assert CATALOGUE["gpt4all"].executable is None
    assert CATALOGUE["gpt4all"].executable_path() is None


def test_remote_records() -> None:
    for b in remote_backends():
        assert b.default_port is None and b.api_key_env
        assert b.url() == b.base_url
        assert not b.capabilities.formats
    dedicated = {b.key for b in remote_backends() if b.privacy is Privacy.DEDICATED}
    assert dedicated == {"azure-openai", "bedrock", "vertex", "hf-endpoints"}
    # the environment variables the product names
    assert CATALOGUE["openai"].api_key_env == "OPENAI_API_KEY"
    assert CATALOGUE["anthropic"].api_key_env == "ANTHROPIC_API_KEY"
    assert CATALOGUE["together"].api_key_env == "TOGETHER_API_KEY"
    assert CATALOGUE["huggingface"].api_key_env == "HF_TOKEN"


@pytest.mark.parametrize(
    ("key", "formats"),
    [
        ("realizar", {F.GGUF, F.SAFETENSORS}),
        ("ollama", {F.GGUF}),
        ("llamafile", {F.GGUF}),
        ("llamacpp", {F.GGUF}),
        ("candle", {F.SAFETENSORS}),
        ("vllm", {F.PYTORCH, F.SAFETENSORS}),
        ("tgi", {F.SAFETENSORS}),
        ("localai", {F.GGUF}),
        ("lmstudio", {F.GGUF}),
        ("gpt4all", {F.GGUF}),
        ("mlc", {F.MLC}),
        ("exllamav2", {F.EXL2}),
    ],
)
def test_formats_include_the_product_table(key: str, formats: set[ModelFormat]) -> None:
    assert formats <= set(CATALOGUE[key].capabilities.formats)


def test_quantization_table() -> None:
    def has(key: str, quant: str) -> bool:
        return quant in CATALOGUE[key].capabilities.quantization

    for key in ("realizar", "llamacpp", "ollama"):
        assert all(has(key, q) for q in ("F32", "F16", "Q8_0", "Q4_0", "Q4_K_M", "Q5_K_M"))
        assert not has(key, "EXL2")
    assert all(has("vllm", q) for q in ("F32", "F16", "Q8_0", "Q4_0"))
    assert not any(is_k_quant(q) for q in CATALOGUE["vllm"].capabilities.quantization)
    assert CATALOGUE["exllamav2"].capabilities.quantization == ("EXL2",)
    assert set(CATALOGUE["candle"].capabilities.quantization) <= {"F32", "F16", "BF16", "Q8_0"}


def test_lookup_resolves_aliases_case_insensitively() -> None:
    assert lookup("llama.cpp") is CATALOGUE["llamacpp"]
    assert lookup(" Azure ") is CATALOGUE["azure-openai"]
    assert lookup("nope") is None
    assert all(target in CATALOGUE for target in ALIASES.values())


@pytest.mark.parametrize(
    ("key", "sovereign", "private", "standard"),
    [("llamacpp", True, True, True), ("bedrock", False, True, True), ("groq", False, False, True)],
)
def test_allowed_in_tier(key: str, sovereign: bool, private: bool, standard: bool) -> None:
    b = CATALOGUE[key]
    assert (allowed_in_tier(b, "sovereign"), allowed_in_tier(b, "private")) == (sovereign, private)
    assert allowed_in_tier(b, "standard") is standard


def test_tier_allows_by_where_the_prompt_goes() -> None:
    # The manifest's rules ask it of a server's own privacy (a llama.cpp server on another
    # machine is dedicated, though llama.cpp is a local backend).
    table = {tier: [tier_allows(tier, p) for p in Privacy] for tier in ("sovereign", "private")}
    assert table == {"sovereign": [True, False, False], "private": [True, True, False]}
    assert all(tier_allows("standard", p) for p in Privacy)


def test_key_is_set_reports_presence_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROQ_API_KEY", "gsk_secret")
    assert CATALOGUE["groq"].key_is_set() is True
    monkeypatch.delenv("GROQ_API_KEY")
    assert CATALOGUE["groq"].key_is_set() is False
    assert CATALOGUE["realizar"].key_is_set() is None


def test_only_backends_with_an_embeddings_route_say_they_embed() -> None:
    assert CATALOGUE["openai"].capabilities.embeddings
    assert CATALOGUE["together"].capabilities.embeddings
    assert not CATALOGUE["groq"].capabilities.embeddings  # no /embeddings route
    assert not CATALOGUE["anthropic"].capabilities.embeddings
