"""The loopback rule and the proxy choice every HTTP client of batuta makes with it."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from batuta._util.http import LoopbackDirectTransport
from batuta._util.net import (
    host_of,
    is_loopback,
    is_sovereign,
    proxy_for,
    resolves_to_loopback,
    sovereign_domains,
)
from tests.fakes.openai_server import OpenAIFake
from tests.fakes.proxy import RecordingProxy


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://127.0.0.1:8080", True),
        ("http://127.0.0.2:8080/v1", True),
        ("http://127.255.255.254", True),
        ("http://localhost:11434/v1", True),
        ("http://LOCALHOST.:1", True),
        ("http://foo.localhost:8080", True),
        ("https://a.b.localhost/v1", True),
        ("http://[::1]:8080", True),
        ("http://[::ffff:127.0.0.2]:8080", True),
        ("127.0.0.3:9000", True),
        ("localhost", True),
        ("http://localhost.example.com", False),
        ("http://notlocalhost:1", False),
        ("http://128.0.0.1", False),
        ("http://[::ffff:10.0.0.1]", False),
        ("http://192.168.1.5:8080", False),
        ("https://api.openai.com/v1", False),
        ("not a url", False),
        ("http://[::1", False),
        ("", False),
    ],
)
def test_is_loopback(value: str, expected: bool) -> None:
    assert is_loopback(value) is expected


def test_host_of() -> None:
    assert host_of("http://User@Example.COM.:80/x") == "example.com"
    assert host_of("[::1]:8080") == "::1"
    assert host_of("http://[::1") == ""


def _resolver_knows(host: str) -> bool:
    try:
        return bool(socket.getaddrinfo(host, None))
    except OSError:
        return False


def test_resolves_to_loopback() -> None:
    assert resolves_to_loopback("localhost")
    assert resolves_to_loopback("127.0.0.2")
    assert resolves_to_loopback("http://[::1]:80")
    assert not resolves_to_loopback("192.0.2.1")  # an address, but not this machine
    assert not resolves_to_loopback("no-such-host.invalid")
    # *.localhost resolves only where the system resolver says so (systemd-resolved does)
    assert resolves_to_loopback("batuta-test.localhost") is _resolver_knows("batuta-test.localhost")


PROXIES = {"http": "http://proxy:3128", "https": "https://secure:3129", "all": "socks5://s:1"}


@pytest.mark.parametrize(
    ("url", "proxies", "expected"),
    [
        ("http://127.0.0.2:8080/v1", PROXIES, None),
        ("http://foo.localhost/v1", PROXIES, None),
        ("http://[::1]:1/v1", PROXIES, None),
        ("http://example.com/v1", PROXIES, "http://proxy:3128"),
        ("https://example.com/v1", PROXIES, "https://secure:3129"),
        ("ftp://example.com/", PROXIES, "socks5://s:1"),
        ("http://example.com/", {"http": "proxy:3128"}, "http://proxy:3128"),
        ("http://example.com/", {}, None),
        ("http://example.com/", {"http": "http://p:1", "no": "*"}, None),
        ("http://api.example.com/", {"http": "http://p:1", "no": "example.com"}, None),
        ("http://api.example.com/", {"http": "http://p:1", "no": ".example.com"}, None),
        ("http://api.example.com/", {"http": "http://p:1", "no": "*.example.com"}, None),
        ("http://badexample.com/", {"http": "http://p:1", "no": "example.com"}, "http://p:1"),
        ("http://example.com:81/", {"http": "http://p:1", "no": "example.com:80"}, "http://p:1"),
        ("http://example.com:80/", {"http": "http://p:1", "no": "x, example.com:80"}, None),
        ("http://10.1.2.3/", {"http": "http://p:1", "no": "10.0.0.0/8"}, None),
        ("http://[fd00::1]:8/", {"http": "http://p:1", "no": "[fd00::1]:8"}, None),
        ("http://[fd00::1]:9/", {"http": "http://p:1", "no": "[fd00::1]:8"}, "http://p:1"),
        ("http://[fd00::1]/", {"http": "http://p:1", "no": "fd00::1"}, None),
        ("http:///nohost", PROXIES, None),
    ],
)
def test_proxy_for(url: str, proxies: dict[str, str], expected: str | None) -> None:
    assert proxy_for(url, proxies) == expected


def test_proxy_for_reads_the_environment(monkeypatch) -> None:
    for var in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("no_proxy", "internal.example")
    assert proxy_for("http://example.com/") == "http://127.0.0.1:9"
    assert proxy_for("http://svc.internal.example/") is None
    assert proxy_for("http://127.0.0.5/") is None


def test_transport_sends_loopback_direct_and_the_rest_through_the_proxy(monkeypatch) -> None:
    """A real proxy that records what reaches it: 127.0.0.2 never does, a remote host does."""
    fake = OpenAIFake()
    fake.host = "127.0.0.2"
    with RecordingProxy() as proxy, fake:
        transport = LoopbackDirectTransport(httpx.Limits(), {"http": proxy.url, "https": proxy.url})
        assert transport.route(httpx.URL(fake.url)) is None
        assert transport.route(httpx.URL("http://192.0.2.1/")) == proxy.url

        async def main() -> tuple[int, int]:
            async with httpx.AsyncClient(transport=transport, trust_env=False) as client:
                near = await client.get(fake.url + "/v1/models")
                far = await client.get("http://192.0.2.1:9/v1/models")
                return near.status_code, far.status_code

        assert asyncio.run(main()) == (200, 502)
        assert proxy.seen == ["GET http://192.0.2.1:9/v1/models"]
        assert [r.path for r in fake.requests] == ["/v1/models"]


def test_sovereign_domains_are_names_under_the_declared_domains() -> None:
    env = {"BATUTA_SOVEREIGN_DOMAINS": " team-a.svc.cluster.local, .Other.Example. ,"}
    assert sovereign_domains(env) == ("team-a.svc.cluster.local", "other.example")
    assert is_sovereign("http://server-a.team-a.svc.cluster.local:8081", env)
    assert is_sovereign("http://127.0.0.1:8081", env) and is_sovereign("http://localhost:1", {})
    assert not is_sovereign("http://server-a.team-b.svc.cluster.local:8081", env)
    assert not is_sovereign("http://team-a.svc.cluster.local.evil.example/", env)
    assert not is_sovereign("http://xteam-a.svc.cluster.local/", env)  # a name under it only
    assert not is_sovereign("http://server-a.team-a.svc.cluster.local:8081", {})


def test_a_sovereign_domain_is_never_proxied(monkeypatch) -> None:
    monkeypatch.setenv("BATUTA_SOVEREIGN_DOMAINS", "ns.svc.cluster.local")
    proxies = {"http": "http://proxy.example:3128"}
    assert proxy_for("http://server-a.ns.svc.cluster.local:8081/v1", proxies) is None
    assert proxy_for("http://server-a.other.svc.cluster.local:8081/v1", proxies) == proxies["http"]
