"""``check_health`` of endpoints the routing table names, behind a proxy from the environment."""

from __future__ import annotations

from pathlib import Path

from batuta.health import check_health
from batuta.routing.table import RouteEntry, RoutingTable, TargetEntry, write_table
from tests.fakes.openai_server import OpenAIFake
from tests.fakes.proxy import RecordingProxy


def test_an_endpoint_on_loopback_is_checked_directly_not_through_the_proxy(
    tmp_path: Path, monkeypatch
) -> None:
    """An OpenAI-compatible gateway on 127.0.0.2 is this machine: the health check must not
    hand it to HTTP_PROXY (nor anything else the loopback rule calls local)."""
    fake = OpenAIFake(api_key="tok-1")
    fake.host = "127.0.0.2"
    with RecordingProxy() as proxy, fake:
        proxy.install(monkeypatch)
        monkeypatch.setenv("GATEWAY_KEY", "tok-1")
        entry = TargetEntry(
            name="gateway", backend="openai", protocol="openai", base_url=f"{fake.url}/v1",
            model="m", local=False, api_key_env="GATEWAY_KEY",
        )  # fmt: skip
        route = RouteEntry("default", "interactive", "standard", "balanced", (entry,))
        write_table(tmp_path / "routes.json", RoutingTable("m.yaml", {"default": route}))
        rows = check_health(tmp_path, name="gateway")
        assert [(r.name, r.health) for r in rows] == [("gateway", "ready")]
        assert proxy.seen == [] and [r.path for r in fake.requests] == ["/v1/models"]
