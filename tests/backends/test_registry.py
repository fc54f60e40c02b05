"""Adapter lookup: by catalogue record, by protocol family, and clean failures."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from batuta.backends import registry
from batuta.backends.anthropic import AnthropicAdapter
from batuta.backends.ollama import OllamaAdapter
from batuta.backends.openai import OpenAIAdapter
from batuta.backends.realizar import RealizarAdapter
from batuta.backends.tgi import TGIAdapter
from batuta.backends.types import Target
from batuta.catalogue import CATALOGUE
from batuta.errors import BackendError, FailureKind


def make(backend: str, protocol: str = "openai") -> Target:
    return Target("t", backend, protocol, "http://127.0.0.1:1", "m")


def build(target: Target):
    async def go():
        async with httpx.AsyncClient() as client:
            return registry.adapter_for(target, client)

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("backend", "cls"),
    [
        ("llamacpp", OpenAIAdapter),
        ("vllm", OpenAIAdapter),
        ("groq", OpenAIAdapter),
        ("gpt4all", OpenAIAdapter),
        ("ollama", OllamaAdapter),
        ("tgi", TGIAdapter),
        ("realizar", RealizarAdapter),
        ("anthropic", AnthropicAdapter),
        ("llama.cpp", OpenAIAdapter),
    ],
)
def test_catalogue_backends_get_their_adapter(backend, cls):
    adapter = build(make(backend))
    assert type(adapter) is cls and adapter.target.backend == backend


def test_catalogue_and_protocol_table_agree():
    # A backend missing from the catalogue must land on the same adapter its family uses.
    for record in CATALOGUE.values():
        assert registry.PROTOCOL_ADAPTERS[record.protocol] == record.adapter, record.key
        assert registry.adapter_path(make(record.key, "none")) == record.adapter


def test_unknown_backend_falls_back_to_its_protocol_family():
    assert type(build(make("my-own-server", "openai"))) is OpenAIAdapter
    assert type(build(make("ollama-fork", "ollama"))) is OllamaAdapter


def test_unknown_backend_and_protocol_is_a_client_error():
    with pytest.raises(BackendError) as err:
        registry.adapter_path(make("mystery", "carrier-pigeon"))
    assert err.value.kind is FailureKind.CLIENT and "carrier-pigeon" in str(err.value)


def test_missing_module_or_non_adapter_class_is_a_client_error(monkeypatch):
    monkeypatch.setitem(registry.PROTOCOL_ADAPTERS, "gone", "batuta.backends.no_such_module:X")
    monkeypatch.setitem(registry.PROTOCOL_ADAPTERS, "notone", "batuta.backends._http:StopFilter")
    for protocol in ("gone", "notone"):
        with pytest.raises(BackendError) as err:
            registry.adapter_class(make("mystery", protocol))
        assert err.value.kind is FailureKind.CLIENT
