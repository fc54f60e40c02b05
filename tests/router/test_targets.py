"""Resolving --endpoint/--backend to targets, and the privacy check at query time."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from batuta.backends.types import Target
from batuta.errors import RoutingError
from batuta.router.targets import (
    backend_target,
    check_privacy,
    entry_for,
    is_loopback,
    require_key,
    resolve_endpoint,
    target_of,
)
from batuta.routing.table import RouteEntry, RoutingTable, TargetEntry


def _route(privacy: str, *targets: TargetEntry) -> RouteEntry:
    return RouteEntry("r", "interactive", privacy, "balanced", targets)


LOCAL = TargetEntry("local", "llamacpp", "openai", "http://127.0.0.1:8081", "m", True)
OLLAMA = TargetEntry("ol", "ollama", "ollama", "http://localhost:11434", "m", True)
AZURE = TargetEntry("az", "azure-openai", "azure", "https://x.openai.azure.com", "m", False)
GROQ = TargetEntry(
    "groq",
    "groq",
    "openai",
    "https://api.groq.com/openai/v1",
    "m",
    False,
    api_key_env="GROQ_API_KEY",
)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8080", True),
        ("http://127.3.4.5", True),
        ("http://localhost:11434/v1", True),
        ("http://[::1]:8080", True),
        ("http://192.168.1.5:8080", False),
        ("https://api.openai.com/v1", False),
        ("not a url", False),
        ("http://[::1", False),
        ("", False),
    ],
)
def test_is_loopback(url: str, expected: bool) -> None:
    assert is_loopback(url) is expected


def test_privacy_tiers() -> None:
    check_privacy(_route("sovereign", LOCAL, OLLAMA))
    check_privacy(_route("private", LOCAL, AZURE))
    check_privacy(_route("standard", LOCAL, AZURE, GROQ))
    with pytest.raises(RoutingError, match="'groq' is Groq \\(public\\)"):
        check_privacy(_route("private", LOCAL, GROQ))
    with pytest.raises(RoutingError, match="'az'"):
        check_privacy(_route("sovereign", LOCAL, AZURE))
    lan = TargetEntry("lan", "ollama", "ollama", "http://10.0.0.2:11434", "m", True)
    check_privacy(_route("private", lan))  # a LAN server is the user's own
    with pytest.raises(RoutingError, match=re.escape("'lan' points at 'http://10.0.0.2:11434'")):
        check_privacy(_route("sovereign", lan))
    odd = TargetEntry("odd", "mystery", "openai", "http://127.0.0.1:1", "m", True)
    with pytest.raises(RoutingError, match="unknown backend 'mystery'"):
        check_privacy(_route("sovereign", odd))
    with pytest.raises(RoutingError, match="unknown privacy tier 'Sovereign'"):
        check_privacy(_route("Sovereign", LOCAL))


def test_entry_for_round_trips() -> None:
    target = Target("t", "groq", "openai", "https://x/v1", "m", "K", {"a": "b"}, False)
    assert target_of(entry_for(target, (1.0, 2.0))) == target
    assert entry_for(target).pricing is None


def test_host_port_and_urls() -> None:
    t = resolve_endpoint("localhost:8080")
    assert (t.base_url, t.backend, t.protocol, t.local, t.model) == (
        "http://localhost:8080",
        "llamacpp",
        "openai",
        True,
        "",
    )
    assert t.name == "localhost:8080"
    t = resolve_endpoint("http://10.1.2.3:8000/v1/", model="qwen", backend="vllm")
    assert (t.base_url, t.backend, t.local, t.model) == (
        "http://10.1.2.3:8000/v1",
        "vllm",
        False,
        "qwen",
    )
    t = resolve_endpoint("[::1]:9000", backend="ollama")
    assert t.protocol == "ollama" and t.local and t.base_url == "http://[::1]:9000"
    with pytest.raises(RoutingError, match="port out of range"):
        resolve_endpoint("localhost:70000")
    with pytest.raises(RoutingError, match="not an http"):
        resolve_endpoint("ftp://host/x")
    with pytest.raises(RoutingError, match="unknown backend 'nope'"):
        resolve_endpoint("localhost:8080", backend="nope")


def test_providers(monkeypatch) -> None:
    monkeypatch.setenv("TOGETHER_API_KEY", "k")
    t = resolve_endpoint("together", model="mistral-7b")
    assert (t.base_url, t.model, t.api_key_env, t.local) == (
        "https://api.together.xyz/v1",
        "mistral-7b",
        "TOGETHER_API_KEY",
        False,
    )
    monkeypatch.delenv("TOGETHER_API_KEY")
    with pytest.raises(RoutingError, match="set the environment variable TOGETHER_API_KEY"):
        resolve_endpoint("together", model="mistral-7b")
    with pytest.raises(RoutingError, match="--model is required"):
        resolve_endpoint("groq")
    with pytest.raises(RoutingError, match="deployment-specific URL"):
        resolve_endpoint("azure", model="gpt-4o")
    with pytest.raises(RoutingError, match="deployment-specific URL"):
        resolve_endpoint("hf-endpoints", model="x")


def test_local_backends(monkeypatch) -> None:
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    t = resolve_endpoint("llama.cpp")
    assert t.base_url == "http://127.0.0.1:8080" and t.name == "llamacpp@127.0.0.1:8080"
    assert backend_target("vllm", port=9001, model="x").base_url == "http://127.0.0.1:9001"
    assert backend_target("ollama").base_url == "http://127.0.0.1:11434"
    monkeypatch.setenv("OLLAMA_HOST", "0.0.0.0:11500")  # listens everywhere: reach loopback
    assert backend_target("ollama").base_url == "http://127.0.0.1:11500"
    monkeypatch.setenv("OLLAMA_HOST", "0.0.0.0")  # Ollama's port, not http's 80
    target = backend_target("ollama")
    assert (target.base_url, target.local) == ("http://127.0.0.1:11434", True)
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:11600/")
    assert backend_target("ollama").base_url == "http://127.0.0.1:11600"
    assert backend_target("ollama", port=1234).base_url == "http://127.0.0.1:1234"
    monkeypatch.setenv("GROQ_API_KEY", "k")
    assert backend_target("groq", model="llama").base_url == "https://api.groq.com/openai/v1"
    with pytest.raises(RoutingError, match="did you mean 'ollama'"):
        backend_target("olama")


def test_table_targets_win(monkeypatch) -> None:
    table = RoutingTable("batuta.yaml", {"r": _route("standard", LOCAL, GROQ)})
    t = resolve_endpoint("local", table=table)
    assert t.base_url == LOCAL.base_url and t.model == "m"
    assert resolve_endpoint("local", table=table, model="other").model == "other"
    monkeypatch.delenv("GROQ_API_KEY", raising=False)
    with pytest.raises(RoutingError, match="GROQ_API_KEY"):
        resolve_endpoint("groq", table=table)  # the table's target, whose key is missing
    with pytest.raises(RoutingError, match="did you mean 'local'"):
        resolve_endpoint("locl", table=table)
    with pytest.raises(RoutingError, match="unknown endpoint 'zzzzzz':"):
        resolve_endpoint("zzzzzz")


def test_require_key(monkeypatch) -> None:
    monkeypatch.delenv("LLAMA_API_KEY", raising=False)
    require_key(target_of(LOCAL))  # optional key
    require_key(Target("x", "unknown", "openai", "http://h", "m", "NOPE_KEY"))
    monkeypatch.delenv("GROQ_API_KEY", raising=False)
    with pytest.raises(RoutingError, match="GROQ_API_KEY") as info:
        require_key(target_of(GROQ))
    assert "groq" in str(info.value)


def test_served_model_is_the_targets_own_else_the_first_listed() -> None:
    import asyncio

    from batuta.router.targets import served_model

    class Lister:
        def __init__(self, model: str, names: list[str], delay: float = 0.0) -> None:
            self.target = dataclasses.replace(target_of(LOCAL), model=model)
            self.names, self.delay, self.asked = names, delay, 0

        async def models(self) -> list[str]:
            self.asked += 1
            await asyncio.sleep(self.delay)
            return self.names

    own = Lister("given", ["other"])
    assert asyncio.run(served_model(own)) == "given"  # type: ignore[arg-type]
    assert own.asked == 0
    assert asyncio.run(served_model(Lister("", ["a", "b"]))) == "a"  # type: ignore[arg-type]
    assert asyncio.run(served_model(Lister("", []))) is None  # type: ignore[arg-type]
    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(served_model(Lister("", ["a"], delay=5.0), timeout=0.05))  # type: ignore[arg-type]


def test_a_sovereign_route_may_use_the_clusters_own_services(monkeypatch) -> None:
    """The table `batuta render kubernetes` puts in its ConfigMap, checked as the gateway
    in the cluster checks it (its Deployment names the namespace's domain)."""
    from tests.render.helpers import FLEET, render_path, routes_json

    table = RoutingTable.from_json(json.loads(routes_json(render_path(FLEET))))
    private = table.routes["private-chat"]
    assert all(".llm.svc.cluster.local:" in t.base_url for t in private.targets)
    monkeypatch.delenv("BATUTA_SOVEREIGN_DOMAINS", raising=False)
    with pytest.raises(RoutingError, match="which is not this machine"):
        check_privacy(private)
    monkeypatch.setenv("BATUTA_SOVEREIGN_DOMAINS", "llm.svc.cluster.local")
    check_privacy(private)
    check_privacy(table.routes["private-batch"])
    elsewhere = dataclasses.replace(
        private.targets[0], base_url="http://server-chat.other.svc.cluster.local:8080"
    )
    with pytest.raises(RoutingError, match="not this machine"):
        check_privacy(dataclasses.replace(private, targets=(elsewhere,)))
