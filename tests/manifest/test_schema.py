"""The JSON Schema: committed and fresh, strict, and its errors turned into short messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from batuta.manifest import schema as schema_module
from batuta.manifest.schema import SCHEMA_FILE, manifest_schema, render_schema, schema_problems
from tests.manifest.helpers import VALID, issues_of, only_issue

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = [ROOT / "batuta.yaml", *sorted((ROOT / "examples").glob("*.yaml"))]


def test_committed_schema_is_fresh() -> None:
    assert SCHEMA_FILE == ROOT / "schemas" / "batuta.schema.json"
    committed = SCHEMA_FILE.read_text(encoding="utf-8")
    assert committed == render_schema(), (
        "schemas/batuta.schema.json is stale: regenerate it with"
        " `batuta schema > schemas/batuta.schema.json`"
    )


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = manifest_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] and schema["title"]
    jsonschema.Draft202012Validator.check_schema(schema)


def _objects(node: Any) -> list[dict[str, Any]]:
    found = []
    if isinstance(node, dict):
        if node.get("type") == "object":
            found.append(node)
        for value in node.values():
            found += _objects(value)
    elif isinstance(node, list):
        for value in node:
            found += _objects(value)
    return found


def test_every_object_forbids_unknown_keys() -> None:
    objects = _objects(manifest_schema())
    assert len(objects) >= 12
    for obj in objects:
        assert "additionalProperties" in obj, obj.get("title")
        # Provider options take param.<field> beside their own keys, and nothing else.
        assert set(obj.get("patternProperties", {})) <= {r"^param\..+$"}, obj.get("title")
        if obj.get("title") == "Options":  # which ones: each provider's, in Endpoint.allOf
            assert obj["additionalProperties"] is True
        if "properties" in obj:
            assert obj["additionalProperties"] is False, obj.get("title")


@pytest.mark.parametrize("value", ["30s", "500ms", "2m", "1h", 12, 0.5, " 3 s "])
def test_durations_accept_human_strings(value: object) -> None:
    data = {"routes": {"r": {"timeout": value}}}
    assert schema_problems(data) == []


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_shipped_manifests_validate_and_carry_the_modeline(path: Path) -> None:
    text = path.read_text()
    first = text.splitlines()[0]
    relative = Path(first.split("$schema=")[1])
    assert first.startswith("# yaml-language-server: $schema=")
    assert (path.parent / relative).resolve() == SCHEMA_FILE
    # what an editor does: the raw YAML against the committed schema
    jsonschema.validate(yaml.safe_load(text), json.loads(SCHEMA_FILE.read_text()))
    assert issues_of(text, env={}) == []


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        (("ctx: 2048", "ctx: big"), "servers.local.ctx", "expected an integer, got a string"),
        (("ctx: 2048", "ctx: 64"), "servers.local.ctx", "must be at least 128"),
        (("ctx: 2048", "ctx:"), "servers.local.ctx", None),
        (("ctx: 2048", "ctx: [1]"), "servers.local.ctx", "expected an integer, got a list"),
        (("ctx: 2048", "ctx: true"), "servers.local.ctx", "expected an integer, got true/false"),
        (("ctx: 2048", "ctx: 1.5"), "servers.local.ctx", "expected an integer, got a number"),
        (("ctx: 2048", "prot: 1"), "servers.local.prot",
         "unknown key 'prot' (did you mean 'port'?); valid keys: backend, model, host, port,"),
        (("    backend: llamacpp\n", ""), "servers.local.backend", "missing required key 'backend'"),
        (("servers:\n  local:", "servers:\n  'my server':"), "servers.my server",
         "'my server' is not a valid name: use letters, digits"),
        (("latency: interactive", "latency: interactiv"), "routes.default.tier.latency",
         "'interactiv' is not allowed (did you mean 'interactive'?); use realtime | interactive"),
        (("timeout: 30s", "timeout: 30 seconds"), "routes.default.timeout",
         "'30 seconds' is not a duration; use e.g. 30s, 500ms, 2m, 1h"),
        (("timeout: 30s", "timeout: -1"), "routes.default.timeout", "must be at least 0"),
        (("timeout: 30s", "timeout: {a: 1}"), "routes.default.timeout",
         "expected a number or a string, got a mapping"),
        (("version: 1", "version: 2"), "version", "2 is not allowed; use 1"),
        (("", "models: x\n"), "models", "expected a mapping, got a string"),
        (("", "routes:\n"), "routes", "is empty; expected a mapping"),
        (("format: gguf", "format: gguf\n    sha256: abc"), "models.smollm2.sha256",
         "must be 64 hexadecimal digits"),
        (("timeout: 30s", "retries: 11"), "routes.default.retries", "must be at most 10"),
        (("timeout: 30s", "budget: {daily_usd: 0}"), "routes.default.budget.daily_usd",
         "must be greater than 0"),
        (("GROQ_API_KEY", "GROQ_API_KEY\n    pricing: [1]"), "endpoints.groq.pricing",
         "must be a list of exactly 2 items"),
        (("version: 1", "defaults: {log_max_size: 2 gigs}"), "defaults.log_max_size",
         "'2 gigs' is not a size; use e.g. 512MB, 2GiB"),
        (("servers:\n  local:", "servers:\n  " + "x" * 65 + ":"), "servers." + "x" * 65,
         "is not a valid name"),
        (("targets: [local, groq]", "targets: local"), "routes.default.targets",
         "expected a list, got a string"),
        (("timeout: 30s", "timeout:"), "routes.default.timeout",
         "is empty; expected a number or a string"),
        (("timeout: 30s", "budget: 5"), "routes.default.budget",
         "expected a mapping, got an integer"),
    ],
)  # fmt: skip
def test_schema_messages(change: tuple[str, str], path: str, message: str | None) -> None:
    text = VALID.replace(*change) if change[0] else change[1]
    if message is None:  # `ctx:` with no value is null, which ctx accepts
        assert issues_of(text) == []
        return
    found = issues_of(text)
    assert [i.path for i in found if i.path == path] == [path], found
    assert message in found[0].message
    # anything else is about a reference to the entry renamed by the change
    assert all(i.path.startswith("routes.default.targets") for i in found[1:]), found


def test_unknown_top_level_key_suggests() -> None:
    issue = only_issue(VALID.replace("servers:", "server:").replace("[local, groq]", "[groq]"))
    assert (issue.line, issue.col, issue.path) == (7, 1, "server")
    assert "unknown key 'server' (did you mean 'servers'?)" in issue.message


def test_schema_and_model_errors_are_not_repeated() -> None:
    # one message per mistake, though jsonschema and pydantic both reject it
    found = issues_of(VALID.replace("ctx: 2048", "ctx: big\n    threads: 0"))
    assert [i.path for i in found] == ["servers.local.ctx", "servers.local.threads"]


def test_model_only_errors_are_reported() -> None:
    # pydantic's own checks still run for what the schema lets through
    found = schema_module.schema_problems({"models": {"m": {"source": "x"}}})
    assert found == []
    issue = only_issue("models:\n  m:\n    source: x\n    format: 7\n")
    assert issue.path == "models.m.format"


def test_fallback_to_generated_schema(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(schema_module, "SCHEMA_FILE", tmp_path / "missing.json")
    schema_module._validator.cache_clear()
    try:
        assert schema_problems({"servers": {"s": {"backend": "x"}}})[0].message == (
            "missing required key 'model'"
        )
    finally:
        schema_module._validator.cache_clear()
