"""OLLAMA_HOST read one way everywhere (the model puller, `serve backends`, `--backend`)."""

from __future__ import annotations

import pytest

from batuta._util.ollama_host import ollama_base_url


@pytest.mark.parametrize(
    ("value", "url"),
    [
        (None, "http://127.0.0.1:11434"),
        ("", "http://127.0.0.1:11434"),
        ("  ", "http://127.0.0.1:11434"),
        ("0.0.0.0", "http://127.0.0.1:11434"),  # listen-everywhere is reached on loopback
        ("0.0.0.0:9000", "http://127.0.0.1:9000"),
        ("::", "http://127.0.0.1:11434"),
        ("[::]:9000", "http://127.0.0.1:9000"),
        ("http://0.0.0.0", "http://127.0.0.1:11434"),  # not :80
        ("gpu-box", "http://gpu-box:11434"),  # a bare host gets Ollama's port
        ("http://gpu-box", "http://gpu-box:11434"),  # so does a URL without one
        ("http://gpu-box/", "http://gpu-box:11434"),
        ("localhost:11500", "http://localhost:11500"),
        (":11500", "http://127.0.0.1:11500"),
        ("http://gpu-box:8000/", "http://gpu-box:8000"),
        ("HTTP://gpu-box:8000", "http://gpu-box:8000"),
        ("http://10.0.0.5:1234", "http://10.0.0.5:1234"),
        ("https://ollama.example.com", "https://ollama.example.com:443"),
        ("https://ollama.example.com/", "https://ollama.example.com:443"),
        ("https://proxy.example.com:8443/ollama/", "https://proxy.example.com:8443/ollama"),
        ("[::1]:11434", "http://[::1]:11434"),
        ("[::1]", "http://[::1]:11434"),
        ("::1", "http://[::1]:11434"),
        ("gpu-box:notaport", "http://gpu-box:11434"),  # as Ollama: an unreadable port
        ("gpu-box:99999", "http://gpu-box:11434"),
    ],
)
def test_ollama_host(value: str | None, url: str) -> None:
    env = {} if value is None else {"OLLAMA_HOST": value}
    assert ollama_base_url(env=env) == url


def test_an_explicit_host_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:12345")
    assert ollama_base_url() == "http://127.0.0.1:12345"
    assert ollama_base_url("other:1") == "http://other:1"
    assert ollama_base_url(env={}) == "http://127.0.0.1:11434"
