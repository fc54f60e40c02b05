"""The routing-table file: round trip, atomic write, clear errors, and its JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from batuta.errors import RoutingError
from batuta.routing.table import (
    RouteEntry,
    RoutingTable,
    TargetEntry,
    read_table,
    table_path,
    write_table,
)

SCHEMA = json.loads((Path(__file__).parents[2] / "schemas" / "routes.schema.json").read_text())


def _table() -> RoutingTable:
    local = TargetEntry(
        "local", "llamacpp", "openai", "http://127.0.0.1:8081", "smollm2", True, health="ready"
    )
    groq = TargetEntry(
        "groq",
        "groq",
        "openai",
        "https://api.groq.com/openai/v1",
        "llama-3.1-8b-instant",
        False,
        api_key_env="GROQ_API_KEY",
        options={"organization": "org"},
        pricing=(0.05, 0.08),
    )
    return RoutingTable("/p/batuta.yaml", {
        "default": RouteEntry("default", "interactive", "standard", "balanced", (local, groq),
                              timeout=30.0, first_byte_timeout=5.0, retries=2, daily_usd=1.5,
                              per_request_usd=0.01, reason="declared"),
        "private": RouteEntry("private", "realtime", "sovereign", "minimal", (local,)),
    })  # fmt: skip


def test_a_route_by_name_or_one_error_naming_the_closest(tmp_path: Path) -> None:
    table = _table()
    assert table.route("private") is table.routes["private"]
    with pytest.raises(RoutingError) as info:
        table.route("privte", table_path(tmp_path))
    assert str(info.value) == (
        f"no route 'privte' (did you mean 'private'?) in {tmp_path / 'routes.json'}"
        " (routes: default, private)"
    )
    empty = RoutingTable("/p/batuta.yaml", {})
    with pytest.raises(RoutingError, match=r"^no route 'x' in the routing table \(routes: none\)$"):
        empty.route("x")


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "state" / "routes.json"
    write_table(path, _table())
    assert read_table(path) == _table()
    assert [p.name for p in path.parent.iterdir()] == ["routes.json"]  # no temp file left


def test_written_table_matches_the_schema(tmp_path: Path) -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    path = tmp_path / "routes.json"
    write_table(path, _table())
    jsonschema.Draft202012Validator(SCHEMA).validate(json.loads(path.read_text()))


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda d: d["routes"]["default"].update(privacy="secret"), "privacy"),
        (lambda d: d["routes"]["default"]["targets"][0].update(api_key="sk-x"), "api_key"),
        (lambda d: d["routes"]["default"]["targets"][1].update(pricing=[1.0]), "pricing"),
        (lambda d: d["routes"]["default"]["targets"][1].update(api_key_env="$KEY"), "api_key_env"),
        (lambda d: d.update(version=2), "version"),
        (lambda d: d["routes"]["default"].update(retries=-1), "retries"),
    ],
)
def test_schema_rejects_bad_tables(change, where: str) -> None:
    data = _table().to_json()
    change(data)
    errors = list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(data))
    assert errors, where
    assert any(where in (e.json_path + e.message) for e in errors)


def test_read_errors(tmp_path: Path) -> None:
    with pytest.raises(RoutingError, match=r"no routing table .* run `batuta apply` first"):
        read_table(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(RoutingError, match="unreadable"):
        read_table(bad)
    bad.write_text(json.dumps({"routes": {}}))
    with pytest.raises(RoutingError, match="unexpected shape"):
        read_table(bad)
    bad.write_text(json.dumps({"version": 1, "manifest": "m", "routes": {"r": {"bogus": 1}}}))
    with pytest.raises(RoutingError, match="unexpected shape"):
        read_table(bad)


def test_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "routes.json"
    write_table(path, _table())
    before = path.read_text()
    broken = RoutingTable("m", {"r": RouteEntry("r", "interactive", "standard", "balanced", (
        TargetEntry("t", "x", "openai", "u", "m", True, options={"k": object()}),  # type: ignore[dict-item]
    ))})  # fmt: skip
    with pytest.raises(TypeError):
        write_table(path, broken)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["routes.json"]
