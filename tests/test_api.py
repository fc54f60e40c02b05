"""The library's front door: ``batuta.query`` reads the routing table ``apply`` wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

import batuta
from batuta.routing.table import RouteEntry, RoutingTable, TargetEntry, table_path, write_table


def test_query_of_a_route_the_table_lacks_names_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BATUTA_STATE_DIR", raising=False)
    manifest = tmp_path / "batuta.yaml"
    manifest.write_text("models: {}\n")
    local = TargetEntry("local", "llamacpp", "openai", "http://127.0.0.1:9", "m", True)
    route = RouteEntry("default", "interactive", "standard", "balanced", (local,))
    path = table_path(tmp_path / ".batuta")
    write_table(path, RoutingTable(str(manifest), {"default": route}))
    with pytest.raises(batuta.RoutingError) as info:
        batuta.query("Hi", route="defualt", manifest=manifest)
    assert str(info.value) == (
        f"no route 'defualt' (did you mean 'default'?) in {path} (routes: default)"
    )
