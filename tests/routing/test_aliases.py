"""Route aliases travel from the manifest into the routing table and back."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import jsonschema

from batuta.manifest import load_text
from batuta.routing.build import build_table
from batuta.routing.table import RoutingTable, read_table, write_table
from tests.routing.test_build import _spec
from tests.routing.test_table import SCHEMA, _table

MANIFEST = """
models:
  m: {source: ./m.gguf}
servers:
  local: {backend: llamacpp, model: m, port: 47201}
routes:
  default:
    targets: [local]
    aliases: [gpt-4o-mini, claude-sonnet]
  plain:
    targets: [local]
"""


def test_aliases_are_carried_into_the_table(tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 0))
    loaded = load_text(MANIFEST, tmp_path / "batuta.yaml", env={})
    table = build_table(loaded, {"local": _spec("local", 47201)})
    assert table.routes["default"].aliases == ("gpt-4o-mini", "claude-sonnet")
    assert table.routes["plain"].aliases == ()
    path = tmp_path / "routes.json"
    write_table(path, table)
    data = json.loads(path.read_text())
    assert data["routes"]["default"]["aliases"] == ["gpt-4o-mini", "claude-sonnet"]
    jsonschema.Draft202012Validator(SCHEMA).validate(data)
    assert read_table(path) == table


def test_a_table_written_before_aliases_still_reads(tmp_path: Path) -> None:
    data = json.loads(json.dumps(_table().to_json()))
    for route in data["routes"].values():
        del route["aliases"]
    jsonschema.Draft202012Validator(SCHEMA).validate(data)
    assert RoutingTable.from_json(data) == _table()
